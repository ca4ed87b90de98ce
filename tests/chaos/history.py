"""Histories as JSON lines: one file per client, one record per line (the record types
are described in :mod:`tests.chaos.checker`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any

from tests.chaos.checker import ClientHistory


class Recorder:
    """Appends records to a client's history file, each flushed as it is written (a
    client paused or killed leaves everything it recorded so far)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def record(self, kind: str, **data: Any) -> None:
        data = {"type": kind, "t": round(time.time(), 3), **data}
        self._file.write(json.dumps(data, default=str, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def load(client: str, path: Path) -> ClientHistory:
    """The history in ``path``; a last line cut off mid-write is skipped."""
    records = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return ClientHistory(client, records)


def summary(history: ClientHistory) -> dict[str, int]:
    """How many records of each kind, and how many invocations ended how."""
    counts: dict[str, int] = {}
    for record in history.records:
        kind = str(record.get("type"))
        if kind == "ack":
            kind = f"ack:{record['status']}"
        counts[kind] = counts.get(kind, 0) + 1
    answered = {str(r["id"]) for r in history.records if r.get("type") in ("ack", "fail")}
    counts["unknown"] = sum(
        1 for r in history.records if r.get("type") == "invoke" and str(r["id"]) not in answered
    )
    return counts
