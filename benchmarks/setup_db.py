"""Migrate the benchmark database and create the benchmark board: ``python -m
benchmarks.setup_db`` with ``DJANGO_SETTINGS_MODULE=benchmarks.settings``."""

import os

import django
from django.core.management import call_command


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    django.setup()
    call_command("migrate", verbosity=0)
    from benchmarks.harness import BOARD_ID
    from tests.testapp.models import Board

    Board.objects.get_or_create(id=BOARD_ID, defaults={"name": "bench"})


if __name__ == "__main__":
    main()
