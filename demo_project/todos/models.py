"""The demo's synced models: todo lists, and the todos of each list."""

import uuid

from django.db import models

from syncapp.mixins import SyncModel


class TodoList(SyncModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.name

    def get_sync_stream(self) -> str:
        return "todos.lists"


class Todo(SyncModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    list = models.ForeignKey(TodoList, on_delete=models.CASCADE, related_name="todos")
    title = models.CharField(max_length=500)
    completed = models.BooleanField(default=False)
    # A fractional-indexing key: concurrent reorders never renumber other todos.
    order = models.CharField(max_length=100, default="a0")

    class Meta:
        ordering = ["order", "id"]

    class Sync:
        conflict = "lww"
        conflict_fields = {"title": "manual"}

    def __str__(self) -> str:
        return self.title

    def get_sync_stream(self) -> str:
        return f"todos.list:{self.list_id}"
