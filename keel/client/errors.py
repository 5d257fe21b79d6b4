"""The client's exceptions: the service's error body (status, code, message, field errors) kept
whole, and the connection that never answered."""

from __future__ import annotations

from typing import Any

from keel.errors import FieldError

__all__ = ["KeelAPIError", "KeelClientError", "KeelConnectionError"]


class KeelClientError(Exception):
    """Base of what keel.client raises."""


class KeelAPIError(KeelClientError):
    """The service answered with an error (after any retries it allowed).

    `code` is Keel's error name (InvalidInput, NotFound, Conflict, RateLimited, LogUnavailable...),
    `errors` its field-level problems, `body` the whole JSON body as sent."""

    def __init__(self, status: int, body: dict[str, Any], retry_after: float | None = None) -> None:
        self.status = status
        self.body = body
        self.code = str(body.get("error") or f"HTTP{status}")
        self.message = str(body.get("message") or "")
        self.errors = [
            FieldError(int(e.get("row", -1)), str(e.get("field", "")), str(e.get("problem", "")))
            for e in body.get("errors") or []
            if isinstance(e, dict)
        ]
        self.error_count = int(body.get("error_count") or len(self.errors))
        self.outcome: str | None = body.get("outcome")
        """On a 503 from the decision log: `not_recorded` or `unknown`."""
        self.retry_after = retry_after
        super().__init__(f"{status} {self.code}: {self.message}")


class KeelConnectionError(KeelClientError):
    """No answer from the service within the attempts and time allowed (connection refused,
    reset or timed out on every try); with the same Idempotency-Key a later retry is safe."""

    def __init__(self, message: str, idempotency_key: str | None = None) -> None:
        super().__init__(message)
        self.idempotency_key = idempotency_key
