"""``path("sync/", include("syncapp.urls"))`` mounts syncapp's HTTP API under ``sync/``."""

from __future__ import annotations

import re

from django.urls import URLPattern, URLResolver, path, re_path
from rest_framework.routers import SimpleRouter

from syncapp import registry, sse
from syncapp.api import views
from syncapp.api.viewsets import viewset_for
from syncapp.conf import conf

app_name = "syncapp"


def _model_routes() -> list[URLPattern | URLResolver]:
    if not conf.MODEL_VIEWSETS:
        return []
    router = SimpleRouter()
    for model in registry.synced_models():
        label = model._meta.label_lower
        router.register(f"api/models/{re.escape(label)}", viewset_for(model), basename=label)
    return list(router.urls)


urlpatterns: list[URLPattern | URLResolver] = [
    path("api/mutations/", views.MutationsView.as_view(), name="mutations"),
    path("api/streams/<str:stream>/snapshot/", views.SnapshotView.as_view(), name="snapshot"),
    path("api/streams/<str:stream>/ops/", views.OpsView.as_view(), name="ops"),
    path("api/streams/<str:stream>/events/", sse.EventsView.as_view(), name="events"),
    path("api/conflicts/", views.ConflictListView.as_view(), name="conflicts"),
    path("api/ws-token/", views.WsTokenView.as_view(), name="ws-token"),
    path(
        "api/conflicts/<int:conflict_id>/resolve/",
        views.ConflictResolveView.as_view(),
        name="conflict-resolve",
    ),
    *_model_routes(),
    path("api/models/<str:label>/", views.UnknownModelView.as_view()),
    path("api/models/<str:label>/<str:pk>/", views.UnknownModelView.as_view()),
    # Anything else under api/ (a path parameter of the wrong type, a typo) is a 404
    # problem, like every other answer of the API, not Django's HTML page.
    # (Any character: a path segment may hold a newline, %0A.)
    re_path(r"^api/(?P<rest>[\s\S]*)$", views.UnknownModelView.as_view()),
]
