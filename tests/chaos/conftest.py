"""The chaos run uses the live tests' servers and fixtures (a private redis-server and
daphne processes on the PostgreSQL test database)."""

from tests.live.conftest import _cluster, auth, live, stream

__all__ = ["_cluster", "auth", "live", "stream"]
