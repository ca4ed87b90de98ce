"""Deciding that a connection is dead: missed pongs, or silence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

MISSED_PONGS = 2
"""Pings in a row without a pong that make a connection dead (docs/protocol.md)."""
SILENT_INTERVALS = 2
"""Intervals without any frame that make a connection dead."""


@dataclass(slots=True)
class Heartbeat:
    """The liveness of one connection, fed by the session and asked once per interval.

    TCP alone can take minutes to notice a peer that vanished (a killed VM, a dropped NAT
    mapping): nothing is written, so nothing fails. A ping every interval and the
    silence that follows make it seconds. Two misses rather than one, so one slow pong
    under load does not cost a reconnect and a resubscribe of every stream.
    """

    interval: float
    """Seconds between pings: the server's ``heartbeat_ms``."""
    clock: Callable[[], float]
    """Monotonic seconds (the event loop's ``time``)."""
    unanswered: int = 0
    last_received: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.last_received = self.clock()

    def received(self) -> None:
        """Any frame arrived."""
        self.last_received = self.clock()

    def ponged(self) -> None:
        """A ``pong`` arrived: every ping before it is answered."""
        self.unanswered = 0

    def pinged(self) -> None:
        """A ``ping`` went out."""
        self.unanswered += 1

    def dead(self) -> str | None:
        """Why the connection is dead, or ``None`` while it is alive."""
        if self.unanswered >= MISSED_PONGS:
            return f"{self.unanswered} pings without a pong"
        # A little slack so a frame due exactly at the deadline is not counted as missed.
        silent = self.clock() - self.last_received
        if silent >= SILENT_INTERVALS * self.interval * 1.01:
            return f"nothing received for {silent:.1f} s"
        return None
