from django.contrib import admin

from demo_project.todos.models import Todo, TodoList
from syncapp.admin import SyncModelAdmin


class TodoInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Todo
    extra = 0
    fields = ["title", "completed", "order"]


@admin.register(TodoList)
class TodoListAdmin(SyncModelAdmin):
    list_display = ["name", "created_at", "sync_info"]
    inlines = [TodoInline]


@admin.register(Todo)
class TodoAdmin(SyncModelAdmin):
    list_display = ["title", "list", "completed", "order", "sync_info"]
    list_filter = ["completed", "list"]
    search_fields = ["title"]
