from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from syncapp import idempotency
from syncapp.conf import conf


class Command(BaseCommand):
    help = "Delete idempotency records older than SYNCAPP['IDEMPOTENCY_TTL'] (default 24 hours)."

    def handle(self, *args: Any, **options: Any) -> None:
        deleted = idempotency.expire()
        self.stdout.write(
            self.style.SUCCESS(
                f"Deleted {deleted} idempotency record(s) older than {conf.IDEMPOTENCY_TTL}."
            )
        )
