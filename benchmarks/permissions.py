"""Everyone may read and write every stream: the benchmarks measure delivery, not auth."""

from typing import Any

from syncapp.permissions import BasePermission


class Open(BasePermission):
    def can_read(self, user: Any, stream: str) -> bool:
        return True

    def can_write(self, user: Any, stream: str, instance: Any, mutation: Any) -> bool:
        return True
