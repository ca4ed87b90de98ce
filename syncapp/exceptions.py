"""Errors. Every error a client can see has a stable ``code`` (docs/protocol.md lists them)."""

from __future__ import annotations

from typing import Any, ClassVar


def flatten_errors(errors: Any) -> dict[str, list[str]]:
    """DRF validation errors as ``{field: [message, ...]}``."""
    if isinstance(errors, dict):
        return {
            str(k): [str(m) for m in (v if isinstance(v, list) else [v])] for k, v in errors.items()
        }
    return {
        "non_field_errors": [str(e) for e in (errors if isinstance(errors, list) else [errors])]
    }


class SyncError(Exception):
    """Base class of syncapp's errors: a stable code, a message, optional per-field messages."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 400
    default_message: ClassVar[str] = "The request could not be processed."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        fields: dict[str, list[str]] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.error_code = code or self.code
        self.fields = fields
        super().__init__(self.message)


class InvalidInput(SyncError):
    """A body or frame that is not well-formed or does not match the schema."""

    code = "invalid"
    default_message = "The input is not valid."


class PayloadTooLarge(SyncError):
    """A body, frame or batch over the configured size limit."""

    code = "too_large"
    http_status = 413
    default_message = "The request is too large."


class NotAuthenticated(SyncError):
    """The action needs an authenticated user."""

    code = "not_authenticated"
    http_status = 401
    default_message = "Authentication is required."


class PermissionDenied(SyncError):
    """The permission hook refused the read or write."""

    code = "permission_denied"
    http_status = 403
    default_message = "You do not have permission to do this."


class NotFound(SyncError):
    """The object or resource does not exist."""

    code = "not_found"
    http_status = 404
    default_message = "Not found."


class Gone(SyncError):
    """The object existed and was deleted."""

    code = "gone"
    http_status = 410
    default_message = "The object was deleted."


class MutationRejected(SyncError):
    """A mutation that cannot be applied as sent; its result is ``rejected``."""

    code = "rejected"
    http_status = 400
    default_message = "The mutation was rejected."


class IdempotencyMismatch(SyncError):
    """The mutation id was used before with a different payload."""

    code = "idempotency_mismatch"
    http_status = 422
    default_message = "This idempotency key was already used with a different payload."


class InProgress(SyncError):
    """A mutation with this id is still being applied; retry later with the same id."""

    code = "in_progress"
    http_status = 409
    default_message = "A request with this idempotency key is still being processed."


class ResetRequired(SyncError):
    """A position that cannot be resumed: the client must load a snapshot."""

    code = "reset"
    http_status = 409
    default_message = "This position cannot be resumed; load a snapshot."

    def __init__(self, stream: str, epoch: str, reason: str) -> None:
        self.stream = stream
        self.epoch = epoch
        self.reason = reason
        super().__init__(f"Position cannot be resumed: {reason}.")

    def as_frame(self) -> dict[str, Any]:
        """The ``reset`` message the protocol defines."""
        return {"type": "reset", "stream": self.stream, "epoch": self.epoch, "reason": self.reason}


class UnsupportedWrite(SyncError):
    """A write path on a synced model whose changes could not be recorded in the op log."""

    code = "unsupported_write"
    http_status = 500
    default_message = "This write cannot be recorded in the op log."


# Codes that only appear inside mutation results, and the HTTP status they map to when a
# transport answers one mutation with an HTTP status of its own.
_RESULT_STATUS = {"internal_error": 503, "batch_too_large": 413, "csrf_failed": 403}


def http_status(code: str) -> int:
    """The HTTP status of an error ``code``; 400 for codes of invalid input."""
    if code in _RESULT_STATUS:
        return _RESULT_STATUS[code]
    for cls in _all_errors(SyncError):
        if cls.code == code:
            return cls.http_status
    return 400


def _all_errors(cls: type[SyncError]) -> list[type[SyncError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_errors(sub))
    return found
