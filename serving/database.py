"""Where the decision log's database is: see keel.decision_log.database (kept for old imports)."""

from keel.decision_log.database import GENESIS, Connection, Database, redact

__all__ = ["GENESIS", "Connection", "Database", "redact"]
