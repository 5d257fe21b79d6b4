"""The decision log's hash chains: see keel.decision_log.chain and .verify (kept for old imports)."""

from keel.decision_log.chain import (
    CHAINS,
    DECISION_COLUMNS,
    FEEDBACK_COLUMNS,
    chain_hash,
    content_digest,
    row_hash,
)
from keel.decision_log.verify import VerifyResult, verify

__all__ = [
    "CHAINS",
    "DECISION_COLUMNS",
    "FEEDBACK_COLUMNS",
    "VerifyResult",
    "chain_hash",
    "content_digest",
    "row_hash",
    "verify",
]
