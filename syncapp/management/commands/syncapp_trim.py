from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from syncapp import retention
from syncapp.conf import conf
from syncapp.models import Stream


class Command(BaseCommand):
    help = (
        "Trim the op log by age and/or count (defaults: SYNCAPP RETENTION_MAX_AGE and "
        "RETENTION_MAX_OPS). Clients behind the new floor get a reset and load a snapshot."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--stream", action="append", help="Only this stream (repeatable).")
        parser.add_argument("--max-age", type=float, help="Keep ops younger than this (seconds).")
        parser.add_argument("--max-ops", type=int, help="Keep at most this many ops per stream.")
        parser.add_argument("--batch", type=int, default=5000, help="Ops deleted per transaction.")

    def handle(self, *args: Any, **options: Any) -> None:
        max_age = (
            timedelta(seconds=options["max_age"])
            if options["max_age"] is not None
            else conf.RETENTION_MAX_AGE
        )
        max_ops = options["max_ops"] if options["max_ops"] is not None else conf.RETENTION_MAX_OPS
        if max_ops is not None and max_ops < 0:
            raise CommandError("--max-ops must be >= 0.")
        if max_age is not None and max_age < timedelta(0):
            raise CommandError("--max-age must be >= 0.")
        if options["batch"] < 1:
            raise CommandError("--batch must be >= 1.")
        if max_age is None and max_ops is None:
            self.stdout.write("No retention limit is set; nothing to trim.")
            return
        names = options["stream"] or list(Stream.objects.values_list("name", flat=True))
        known = set(Stream.objects.filter(name__in=names).values_list("name", flat=True))
        missing = [name for name in names if name not in known]
        if missing:
            raise CommandError(f"No stream {', '.join(map(repr, missing))}.")
        total = 0
        for index, name in enumerate(names, 1):

            def progress(deleted: int, name: str = name) -> None:
                self.stdout.write(f"  {name}: {deleted} ops deleted so far")

            result = retention.trim(
                name, max_age=max_age, max_ops=max_ops, batch=options["batch"], progress=progress
            )
            total += result.deleted
            self.stdout.write(
                f"[{index}/{len(names)}] {name}: deleted {result.deleted}, "
                f"oldest retained seq now {result.oldest_seq}"
            )
        self.stdout.write(self.style.SUCCESS(f"Trimmed {total} ops from {len(names)} stream(s)."))
