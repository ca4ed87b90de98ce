"""syncapp's own tables: streams, the op log, conflicts and idempotency records.

The mixin that makes a model live is :class:`syncapp.mixins.SyncModel`.
"""

from __future__ import annotations

import secrets
from typing import Literal

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

OpKind = Literal["create", "update", "delete"]


def new_epoch() -> str:
    """A fresh opaque epoch: positions from another epoch are never mistaken for this one's."""
    return secrets.token_hex(8)


class Stream(models.Model):
    """The head of one stream's log: its epoch, last seq and oldest retained seq.

    Writers lock this row to take the next seq, which makes seqs gap-free and commit-ordered.
    """

    name = models.CharField(max_length=200, unique=True)
    epoch = models.CharField(max_length=32, default=new_epoch)
    head = models.PositiveBigIntegerField(default=0, help_text="The last seq taken.")
    oldest_seq = models.PositiveBigIntegerField(
        default=1, help_text="The oldest seq still in the log; older ones were trimmed."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Op(models.Model):
    """One committed change to one synced object."""

    class Kind(models.TextChoices):
        CREATE = "create"
        UPDATE = "update"
        DELETE = "delete"

    # No index of its own: the (stream, seq) unique constraint's index leads with it.
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="ops", db_index=False)
    seq = models.PositiveBigIntegerField()
    model = models.CharField(max_length=100, help_text="The model's label_lower.")
    object_pk = models.CharField(max_length=255)
    kind = models.CharField(max_length=6, choices=Kind.choices)
    fields = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    version = models.PositiveBigIntegerField()
    mutation_id = models.UUIDField(null=True, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
    )
    client_id = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField(db_index=True)
    encoded = models.TextField(
        editable=False,
        help_text="The op as the protocol's JSON, made once when it was written: what every "
        "transport sends for it, live or replayed.",
    )

    class Meta:
        ordering = ["stream", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["stream", "seq"], name="syncapp_op_stream_seq"),
        ]
        indexes = [
            models.Index(fields=["model", "object_pk"], name="syncapp_op_object"),
            models.Index(fields=["mutation_id"], name="syncapp_op_mutation"),
        ]

    def __str__(self) -> str:
        return f"{self.stream_id}#{self.seq} {self.kind} {self.model}:{self.object_pk}"


class Conflict(models.Model):
    """A write kept aside by the ``manual`` policy, for a person to resolve."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RESOLVED = "resolved"

    class Resolution(models.TextChoices):
        SERVER = "server", "kept the server's value"
        CLIENT = "client", "took the client's value"
        VALUE = "value", "entered another value"

    stream = models.CharField(max_length=200, db_index=True)
    model = models.CharField(max_length=100)
    object_pk = models.CharField(max_length=255)
    field = models.CharField(max_length=100)
    base_version = models.PositiveBigIntegerField(null=True, blank=True)
    base_value = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    server_version = models.PositiveBigIntegerField()
    server_value = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    client_value = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    mutation_id = models.UUIDField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    client_id = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(
        max_length=8, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    resolution = models.CharField(max_length=6, choices=Resolution.choices, blank=True)
    resolved_value = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution_seq = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["status", "-created_at"]
        indexes = [models.Index(fields=["model", "object_pk"], name="syncapp_conflict_object")]

    def __str__(self) -> str:
        return f"{self.model}:{self.object_pk}.{self.field} ({self.status})"


class IdempotencyRecord(models.Model):
    """The outcome of one mutation id for one owner, kept so that retries replay it."""

    class Status(models.TextChoices):
        IN_PROGRESS = "in_progress"
        DONE = "done"

    owner = models.CharField(max_length=255, help_text='"user:<pk>" or "client:<client id>".')
    key = models.UUIDField(help_text="The mutation id.")
    fingerprint = models.CharField(max_length=64)
    status = models.CharField(max_length=11, choices=Status.choices)
    lease = models.UUIDField(help_text="Identifies the attempt that holds the record.")
    result = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(db_index=True)
    started_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "key"], name="syncapp_idempotency_owner_key"),
        ]

    def __str__(self) -> str:
        return f"{self.owner} {self.key} ({self.status})"
