from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from syncapp import oplog
from syncapp.models import Stream


class Command(BaseCommand):
    help = (
        "Start a new epoch for a stream: its op log is dropped and every client resumes "
        "from a snapshot. The objects themselves are not touched."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("stream")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["stream"]
        if not Stream.objects.filter(name=name).exists():
            raise CommandError(f"No stream {name!r}.")
        stream = oplog.reset(name)
        self.stdout.write(self.style.SUCCESS(f"{stream.name} is now at epoch {stream.epoch}."))
