"""Domain and chassis errors, and the one table that maps them to HTTP status codes.

Services raise these (or subclasses); the HTTP edge turns any of them into
`{"error": code, "message": ..., "fields": {...}}` with the status below. No service has its own
try/except copy of this mapping.
"""

from __future__ import annotations

from typing import Any

# The HTTP header that carries a command's id: the errors about it name it as their field.
IDEMPOTENCY_HEADER = "Idempotency-Key"


class LavoroError(Exception):
    """Base of every error the edge knows how to show. `code` is stable and machine-readable."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, fields: dict[str, Any] | None = None, **details: Any):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        self.details = details

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message, "fields": self.fields}
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(LavoroError):
    status = 422
    code = "invalid_input"


class NotFound(LavoroError):
    status = 404
    code = "not_found"


class Conflict(LavoroError):
    """A rule of the domain refuses the command in the current state (409)."""

    status = 409
    code = "conflict"


class RuleViolation(Conflict):
    """A named invariant would break; `details` carries the figures."""

    code = "rule_violated"


class ConcurrencyError(Conflict):
    """The stream moved on since it was read: the caller reloads and decides again."""

    code = "concurrency_conflict"

    def __init__(self, stream: str, expected: int, actual: int):
        super().__init__(
            f"stream {stream!r} is at version {actual}, not {expected}",
            stream=stream,
            expected_version=expected,
            actual_version=actual,
        )
        self.stream = stream
        self.expected = expected
        self.actual = actual


class PayloadTooLarge(LavoroError):
    """A request body over the configured size (413); nothing of it was looked at."""

    status = 413
    code = "request_entity_too_large"


class UnsupportedMediaType(LavoroError):
    """A command's body that is not `application/json` (415)."""

    status = 415
    code = "unsupported_media_type"


class IdempotencyKeyReused(InvalidInput):
    """A command id seen before, with another request body: a different command under a key that
    is already taken (422). Nothing runs and nothing is stored."""

    code = "idempotency_key_reused"

    def __init__(self) -> None:
        reason = "already used for a request with another body: a new command needs a new key"
        super().__init__(
            f"{IDEMPOTENCY_HEADER} header: {reason}", fields={IDEMPOTENCY_HEADER: [reason]}
        )


class CommandInFlight(Conflict):
    """A command whose id is still running in another request (409): ask again once it answers."""

    code = "idempotency_key_in_flight"

    def __init__(self) -> None:
        reason = "a request with this key is still being answered: ask again once it has been"
        super().__init__(
            f"{IDEMPOTENCY_HEADER} header: {reason}", fields={IDEMPOTENCY_HEADER: [reason]}
        )


class Unauthorized(LavoroError):
    status = 401
    code = "unauthorized"


class Forbidden(LavoroError):
    status = 403
    code = "forbidden"


def status_of(error: BaseException) -> int:
    return error.status if isinstance(error, LavoroError) else 500
