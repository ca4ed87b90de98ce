"""Hybrid Logical Clocks (Kulkarni et al., "Logical Physical Clocks", 2014).

A stamp is ``(wall, counter, node)``: ``wall`` is milliseconds since the Unix epoch,
``counter`` orders events within one millisecond, ``node`` breaks ties (the greater
client id wins). Stamps compare as tuples in that order.

On the wire a client sends ``"<wall>:<counter>"``; its node is its client id. Rows store
the full form ``"<wall>:<counter>:<node>"`` with zero-padded numbers.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from syncapp.conf import conf
from syncapp.exceptions import MutationRejected

WIRE_CLOCK = re.compile(r"^(\d{1,15}):(\d{1,9})$")
MAX_COUNTER = 999_999_999
# Far enough past any real time to be a bug, near enough to keep stamps in 15 digits.
MAX_WALL = 10**15 - 1


@dataclass(frozen=True, order=True, slots=True)
class Stamp:
    """One HLC timestamp."""

    wall: int
    counter: int
    node: str

    def encode(self) -> str:
        """The stored form, sortable as text within one node width."""
        return f"{self.wall:015d}:{self.counter:09d}:{self.node}"

    @classmethod
    def decode(cls, text: str) -> Stamp:
        """Parse the stored form written by :meth:`encode`."""
        wall, counter, node = text.split(":", 2)
        return cls(int(wall), int(counter), node)


def parse_wire(text: str, node: str) -> Stamp:
    """Parse a client's ``"<wall>:<counter>"`` clock; its node is the client's id."""
    match = WIRE_CLOCK.match(text)
    if match is None:
        raise MutationRejected(
            'A clock is "<wall milliseconds>:<counter>", both non-negative integers.',
            code="invalid_clock",
        )
    return Stamp(int(match[1]), int(match[2]), node)


def wall_ms() -> int:
    """Milliseconds since the Unix epoch, from the system clock."""
    return time.time_ns() // 1_000_000


class HybridClock:
    """A process's hybrid logical clock; thread-safe. Inject ``time_source`` in tests."""

    def __init__(self, node: str, time_source: Callable[[], int] = wall_ms) -> None:
        self.node = node
        self.time_source = time_source
        self._wall = 0
        self._counter = 0
        self._lock = threading.Lock()

    def now(self, after: Stamp | None = None) -> Stamp:
        """A new stamp, greater than every stamp issued or observed so far and than ``after``."""
        with self._lock:
            self._advance(after)
            return Stamp(self._wall, self._counter, self.node)

    def observe(self, remote: Stamp) -> None:
        """Take in a stamp from elsewhere, so that later stamps from here order after it."""
        with self._lock:
            self._advance(remote)

    def clamp(self, remote: Stamp, max_skew_ms: int) -> Stamp:
        """``remote`` with its wall time pulled back to at most now + ``max_skew_ms``."""
        limit = self.time_source() + max_skew_ms
        if remote.wall <= limit:
            return remote
        return Stamp(limit, remote.counter, remote.node)

    def _advance(self, other: Stamp | None) -> None:
        physical = self.time_source()
        wall, counter = self._wall, self._counter
        other_wall = other.wall if other is not None else -1
        other_counter = other.counter if other is not None else -1
        new_wall = max(wall, physical, other_wall)
        if new_wall == wall == other_wall:
            counter = max(counter, other_counter) + 1
        elif new_wall == wall:
            counter += 1
        elif new_wall == other_wall:
            counter = other_counter + 1
        else:
            counter = 0
        if counter > MAX_COUNTER:
            new_wall, counter = new_wall + 1, 0
        self._wall, self._counter = new_wall, counter


_clock_lock = threading.Lock()
_override: HybridClock | None = None


@lru_cache(maxsize=1)
def _server_clock(node: str) -> HybridClock:
    return HybridClock(node)


def server_clock() -> HybridClock:
    """This process's clock, stamped with ``SYNCAPP["SERVER_NODE_ID"]``."""
    if _override is not None:
        return _override
    with _clock_lock:
        return _server_clock(conf.SERVER_NODE_ID)


@contextmanager
def using_clock(clock: HybridClock) -> Iterator[HybridClock]:
    """Make ``clock`` the server clock inside the block (tests inject time this way)."""
    global _override
    previous, _override = _override, clock
    try:
        yield clock
    finally:
        _override = previous


def max_skew_ms() -> int:
    """The configured clamp for client clocks, in milliseconds."""
    return int(conf.MAX_CLOCK_SKEW.total_seconds() * 1000)
