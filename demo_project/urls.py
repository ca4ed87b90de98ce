from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

import syncapp.views
from demo_project.todos import views

urlpatterns = [
    path("", views.index, name="index"),
    path("lists/<uuid:pk>/", views.todo_list, name="todo-list"),
    path("lists/<uuid:pk>/log/", views.oplog, name="todo-list-log"),
    path("lists/<uuid:pk>/log/rows/", views.oplog_rows, name="todo-list-log-rows"),
    # Served from the root so that the service worker's scope covers every page.
    path("sw.js", syncapp.views.service_worker, name="service-worker"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("sync/", include("syncapp.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]
