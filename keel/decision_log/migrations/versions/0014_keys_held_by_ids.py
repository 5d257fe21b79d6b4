"""Idempotency keys are held by `decision_ids` alone, on SQLite as on PostgreSQL.

Since 0011 the trigger-filled `decision_ids` keeps (caller, model, idempotency key, request index)
unique for the live log, and clears a key when its decision's month leaves the live log (the key
expires with the month and may be used again). A restored month brings back rows whose key a newer
live decision may hold by then; the restored rows must come back exactly as archived (their hashes
cover the key), so `decisions` itself cannot refuse two rows with one key. PostgreSQL's index on the
partitioned table is plain already (0011); SQLite's becomes plain here. Uniqueness for new writes is
unchanged: the trigger's insert into `decision_ids` refuses a key held by a live decision.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"

COLUMNS = ["caller", "model", "idempotency_key", "request_index"]
WHERE_KEYED = sa.text("idempotency_key IS NOT NULL")


def _index(unique: bool) -> None:
    op.drop_index("decisions_idempotency", table_name="decisions")
    op.create_index("decisions_idempotency", "decisions", COLUMNS, unique=unique, sqlite_where=WHERE_KEYED)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _index(unique=False)


def downgrade() -> None:
    """Fails, as it should, while a restored row and a live one share a key."""
    if op.get_bind().dialect.name == "sqlite":
        _index(unique=True)
