"""The decision log: one package owns its schema, migrations, writes, reads and verification.

Nothing outside this package writes SQL against the log's tables (decisions, feedback,
chain_heads, api_keys, alias_history, event_outbox, and the monitoring state: monitor_runs,
monitor_sequential, monitor_imports).
"""

from keel.decision_log.chain import CHAINS, DECISION_COLUMNS, FEEDBACK_COLUMNS, row_hash
from keel.decision_log.database import GENESIS, Connection, Database, redact
from keel.decision_log.errors import LogUnavailable
from keel.decision_log.settings import LogSettings
from keel.decision_log.submission import reject_changed_replay
from keel.decision_log.verify import VerifyResult
from keel.decision_log.writer import DecisionLog, Replay

__all__ = [
    "CHAINS",
    "DECISION_COLUMNS",
    "FEEDBACK_COLUMNS",
    "GENESIS",
    "Connection",
    "Database",
    "DecisionLog",
    "LogSettings",
    "LogUnavailable",
    "Replay",
    "VerifyResult",
    "redact",
    "reject_changed_replay",
    "row_hash",
]
