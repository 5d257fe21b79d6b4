"""Why a write was not acknowledged, and what the caller may safely do about it."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
import sqlalchemy.exc

from keel.errors import KeelError

__all__ = ["DATABASE_ERRORS", "LogUnavailable"]

DATABASE_ERRORS = (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, psycopg.Error)
"""What the database or its drivers raise when it is away, read-only, or refuses a statement."""
NOT_RECORDED = "not_recorded"
UNKNOWN = "unknown"


class LogUnavailable(KeelError):
    """503: the log cannot confirm a write. `outcome` says whether it may have been recorded."""

    status_code = 503

    def __init__(self, message: str, outcome: str | None = NOT_RECORDED, retry_after: float = 2.0) -> None:
        if outcome == UNKNOWN:
            message += (
                "; it may or may not have been recorded. A retry with the same Idempotency-Key is "
                "safe: it returns what was recorded, or records it once"
            )
        super().__init__(message)
        self.outcome = outcome
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        outcome = {"outcome": self.outcome} if self.outcome else {}  # a failed read has none
        return {**super().to_dict(), **outcome, "retry_after_seconds": self.retry_after}

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after)))}
