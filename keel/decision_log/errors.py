"""Why a write was not acknowledged, and what the caller may safely do about it."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
import sqlalchemy.exc

from keel.errors import Unavailable

__all__ = ["DATABASE_ERRORS", "LogUnavailable"]

DATABASE_ERRORS = (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, psycopg.Error)
"""What the database or its drivers raise when it is away, read-only, or refuses a statement."""
NOT_RECORDED = "not_recorded"
UNKNOWN = "unknown"


class LogUnavailable(Unavailable):
    """The decision log cannot confirm a write or answer a read; retry after Retry-After seconds.

    503 with Retry-After (keel.errors.Unavailable); `outcome` says whether a write may have been
    recorded."""

    def __init__(self, message: str, outcome: str | None = NOT_RECORDED, retry_after: float = 2.0) -> None:
        if outcome == UNKNOWN:
            message += (
                "; it may or may not have been recorded. A retry with the same Idempotency-Key is "
                "safe: it returns what was recorded, or records it once"
            )
        super().__init__(message, retry_after)
        self.outcome = outcome

    def to_dict(self) -> dict[str, Any]:
        outcome = {"outcome": self.outcome} if self.outcome else {}  # a failed read has none
        return {**super().to_dict(), **outcome, "retry_after_seconds": self.retry_after}
