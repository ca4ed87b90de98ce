"""The seeded fault schedule: which fault hits what, when, for how long.

The same seed, duration, clients and servers give the same schedule. Every kind of
fault happens at least once (each in its own slice of the run, in a seeded order), then
more at random, about one per ``spacing`` seconds. Server kills never overlap, so one
daphne is always meant to be up (a slow restart may still leave a short window with
none, which the clients must survive too).

Kinds, each with its ``target`` and ``duration``:

- ``kill_server``: SIGKILL a daphne, start it again ``duration`` seconds later;
- ``restart_redis``: SIGKILL the redis-server (it keeps nothing), start it again;
- ``pause_client``: SIGSTOP a client process, SIGCONT it ``duration`` seconds later;
- ``disconnect``: the client's connections are cut; it reconnects at once;
- ``offline``: the client's connections are cut and it cannot connect for ``duration``
  seconds, while it keeps making mutations (they wait in its queue);
- ``trim_log``: the stream's log is trimmed to its last few ops (``TRIM_KEEP``), so a
  client that is behind (paused, offline) must get a ``reset`` and a snapshot.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

KINDS = ("kill_server", "restart_redis", "pause_client", "disconnect", "offline", "trim_log")
CLIENT_KINDS = frozenset({"pause_client", "disconnect", "offline"})
TRIM_KEEP = 10
DURATIONS = {
    "kill_server": (1.0, 4.0),
    "restart_redis": (0.5, 2.0),
    "pause_client": (2.0, 8.0),
    "disconnect": (0.0, 0.0),
    "offline": (3.0, 8.0),
    "trim_log": (0.0, 0.0),
}


@dataclass(frozen=True, order=True)
class Fault:
    at: float
    kind: str
    target: str
    duration: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.at:6.1f}s {self.kind} {self.target} for {self.duration:.1f}s"


def schedule(
    seed: int,
    duration: float,
    clients: list[str],
    servers: list[str],
    *,
    spacing: float = 8.0,
) -> list[Fault]:
    """The faults of a run of ``duration`` seconds, in time order."""
    rng = random.Random(seed)
    start, end = 2.0, max(2.0 + len(KINDS), duration - 3.0)
    faults: list[Fault] = []

    def make(kind: str, at: float) -> Fault:
        low, high = DURATIONS[kind]
        length = round(rng.uniform(low, high), 2)
        if kind in CLIENT_KINDS:
            target = rng.choice(clients)
        elif kind == "kill_server":
            target = rng.choice(servers)
        else:
            target = "log" if kind == "trim_log" else "redis"
        return Fault(round(at, 2), kind, target, min(length, max(0.0, end - at)))

    def overlaps(fault: Fault) -> bool:
        # Two faults of one kind on one target, or two server kills, never overlap.
        return any(
            (
                other.kind == fault.kind
                and (other.target == fault.target or fault.kind == "kill_server")
            )
            and other.at <= fault.at + fault.duration + 1.0
            and fault.at <= other.at + other.duration + 1.0
            for other in faults
        )

    slice_ = (end - start) / len(KINDS)
    for index, kind in enumerate(rng.sample(KINDS, len(KINDS))):
        faults.append(make(kind, start + slice_ * (index + rng.uniform(0.1, 0.6))))
    for _ in range(int((end - start) / spacing)):
        for _attempt in range(10):
            fault = make(rng.choice(KINDS), rng.uniform(start, end))
            if not overlaps(fault):
                faults.append(fault)
                break
    return sorted(faults)
