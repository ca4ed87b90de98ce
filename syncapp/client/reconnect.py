"""When to reconnect, and when to stop: the policy behind the connection loop."""

from __future__ import annotations

from dataclasses import dataclass

from syncapp.client import codes
from syncapp.client.backoff import Backoff
from syncapp.client.errors import ConnectionFailed, ProtocolRejected, TokenRejected
from syncapp.client.session import Outcome


@dataclass(slots=True)
class Reconnect:
    """Counts what went wrong in a row and turns each ended connection into a delay."""

    backoff: Backoff
    can_refresh_token: bool
    """Whether the token comes from a callable, so that a new one may be fetched."""
    failures: int = 0
    """Attempts in a row that did not reach ``welcome``."""
    token_rejections: int = 0

    def after(self, url: str, outcome: Outcome) -> float | None:
        """Seconds to wait before the next attempt, ``None`` for at once.

        Raises the :class:`ClientError` that says not to try again: 4400 (the same
        ``hello`` will be refused again), 4401 without a way to get another token or
        with a token fetched just for this attempt, or ``backoff.max_attempts`` failures
        in a row.
        """
        action = codes.disposition(outcome.code)
        self.failures = 0 if outcome.welcomed else self.failures + 1
        if action == "stop":
            raise ProtocolRejected(f"{url} closed with 4400: {outcome.reason}")
        if action == "refresh_token":
            self._token_rejected(url)
            return None  # a fresh token is all it takes
        if outcome.welcomed:
            self.token_rejections = 0
        if self.backoff.exhausted(self.failures):
            raise ConnectionFailed(
                f"{self.failures} attempts in a row failed; the last: {outcome.reason}"
            )
        if outcome.retry_after is not None:
            return outcome.retry_after
        return self.backoff.delay(self.failures)

    def _token_rejected(self, url: str) -> None:
        if not self.can_refresh_token:
            raise TokenRejected(f"{url} rejected the token, and there is no other.")
        self.token_rejections += 1
        # Tokens are fetched for every attempt, so a second rejection in a row is of a
        # token fetched moments ago: the problem is not its age, and another won't help.
        if self.token_rejections > 1:
            raise TokenRejected(f"{url} rejected a freshly fetched token too.")
