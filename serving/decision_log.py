"""The decision log as the service uses it: see keel.decision_log (kept for old imports)."""

from typing import Any

from keel.decision_log import (
    CHAINS,
    DECISION_COLUMNS,
    FEEDBACK_COLUMNS,
    DecisionLog,
    LogUnavailable,
    Replay,
    VerifyResult,
    row_hash,
)
from keel.errors import Conflict

__all__ = [
    "CHAINS",
    "DECISION_COLUMNS",
    "FEEDBACK_COLUMNS",
    "DecisionLog",
    "LogUnavailable",
    "Replay",
    "VerifyResult",
    "reject_changed_replay",
    "row_hash",
]


def reject_changed_replay(stored: list[dict[str, Any]], request_hash: str) -> list[dict[str, Any]]:
    """An idempotency key reused with a different request body is a client error."""
    if any(r.get("request_hash") != request_hash for r in stored):
        raise Conflict("this Idempotency-Key was used before with a different request body")
    return stored
