"""Models of syncapp's test app: each exercises a part of the declaration."""

import uuid

from django.db import models

from syncapp.mixins import SyncModel


class Board(SyncModel):
    """Plain lww model in a fixed stream."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=100)
    public = models.BooleanField(default=False)

    def get_sync_stream(self) -> str:
        return "public:boards" if self.public else "boards"


class Card(SyncModel):
    """Per-field policies, a counter, and a stream per board."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    board = models.ForeignKey(Board, on_delete=models.CASCADE, related_name="cards")
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True, default="")
    done = models.BooleanField(default=False)
    likes = models.IntegerField(default=0)
    rank = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # Checked by the database only: the serializer does not know it.
            models.CheckConstraint(condition=models.Q(likes__gte=-1000), name="card_likes_floor")
        ]

    class Sync:
        conflict = "lww"
        conflict_fields = {"title": "manual", "likes": "counter", "rank": "version"}

    def get_sync_stream(self) -> str:
        return f"board:{self.board_id}"


class CardProxy(Card):
    """Writes through a proxy are the concrete model's."""

    class Meta:
        proxy = True


class Tag(SyncModel):
    """A nullable link to a card (SET_NULL goes through the base manager)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    card = models.ForeignKey(Card, null=True, blank=True, on_delete=models.SET_NULL)
    # SET(<constant>) is applied like SET_NULL, through the base manager.
    pinned = models.ForeignKey(
        Card, null=True, blank=True, on_delete=models.SET(None), related_name="pinned_tags"
    )
    label = models.CharField(max_length=50)

    def get_sync_stream(self) -> str:
        return "tags"


class Doc(SyncModel):
    """Integer primary key, model-level version policy, deletes check the version."""

    text = models.TextField()
    secret = models.CharField(max_length=50, default="")

    class Sync:
        conflict = "version"
        exclude = ["secret"]
        delete_wins = False

    def get_sync_stream(self) -> str:
        return "docs"


class Note(SyncModel):
    """A custom resolver: the longer text wins."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    text = models.TextField()

    class Sync:
        conflict_fields = {"text": "tests.testapp.resolvers.longer_wins"}

    def get_sync_stream(self) -> str:
        return "notes"


# Test-only faults, off unless a setting turns them on.
from tests.testapp import faults as _faults  # noqa: E402, F401
