"""How long to wait before the next attempt: exponential backoff with full jitter."""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field

# 2**62 is far past any cap; stopping there keeps ``base * 2**attempt`` a finite float.
_MAX_EXPONENT = 62


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays for reconnecting and retrying: ``uniform(0, min(cap, base * 2**attempt))``.

    Full jitter, as measured in Marc Brooker's "Exponential Backoff And Jitter" (AWS
    Architecture Blog, 2015, https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/):
    of the schemes compared there it finishes the work with the fewest calls, because
    clients that failed together (a server restart drops all of them at once) spread their
    retries over the whole window instead of coming back in synchronized waves.
    """

    base: float = 0.5
    """Seconds: the window of the first retry."""
    cap: float = 30.0
    """Seconds: the window never grows past this."""
    max_attempts: int | None = None
    """Consecutive failed attempts before giving up; ``None`` retries forever."""
    random: Callable[[], float] = field(default=_random.random, compare=False)
    """A source of floats in ``[0, 1)``; tests inject a fixed one."""

    def __post_init__(self) -> None:
        if self.base <= 0:
            raise ValueError("Backoff.base must be positive.")
        if self.cap < self.base:
            raise ValueError("Backoff.cap must be at least Backoff.base.")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("Backoff.max_attempts must be at least 1, or None.")

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the window for retry number ``attempt`` (0 for the first)."""
        return min(self.cap, self.base * (1 << min(max(attempt, 0), _MAX_EXPONENT)))

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first)."""
        return self.random() * self.ceiling(attempt)

    def exhausted(self, failures: int) -> bool:
        """Whether ``failures`` consecutive failures mean giving up."""
        return self.max_attempts is not None and failures >= self.max_attempts
