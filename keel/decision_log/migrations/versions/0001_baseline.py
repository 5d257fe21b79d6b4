"""Baseline: the log as it was created ad hoc before migrations (creates only what is missing).

The columns are spelled out here, not taken from keel.decision_log.schema: a revision is a frozen
record of one step, and the live schema moves on with later revisions.

Also the two in-place fixes the ad hoc code made: the monitoring columns (`segments`,
`intervened`) added to old logs, and the old full idempotency index replaced by a partial one
(most decisions carry no key; a full index still paid a page write per commit for each).
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WHERE_KEYED = sa.text("idempotency_key IS NOT NULL")


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    if "decisions" not in tables:
        op.create_table(
            "decisions",
            sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
            sa.Column("decision_id", sa.Text, nullable=False, unique=True),
            sa.Column("model", sa.Text, nullable=False),
            sa.Column("model_version", sa.Text, nullable=False),
            sa.Column("created_at", sa.Text, nullable=False),
            sa.Column("caller", sa.Text, nullable=False),
            sa.Column("case_id", sa.Text),
            sa.Column("idempotency_key", sa.Text),
            sa.Column("request_hash", sa.Text),
            sa.Column("request_index", sa.Integer, nullable=False),
            sa.Column("outcome", sa.Text),
            sa.Column("abstained", sa.Integer, nullable=False),
            sa.Column("route", sa.Text, nullable=False),
            sa.Column("confidence", sa.Double),
            sa.Column("segments", sa.Text),
            sa.Column("intervened", sa.Integer, nullable=False, server_default="0"),
            sa.Column("record", sa.Text, nullable=False),
            sa.Column("prev_hash", sa.Text, nullable=False),
            sa.Column("row_hash", sa.Text, nullable=False),
        )
    else:
        have = {c["name"] for c in inspector.get_columns("decisions")}
        if "segments" not in have:
            op.add_column("decisions", sa.Column("segments", sa.Text))
        if "intervened" not in have:
            op.add_column(
                "decisions", sa.Column("intervened", sa.Integer, nullable=False, server_default="0")
            )
    indexes = {i["name"]: i for i in inspector.get_indexes("decisions")} if "decisions" in tables else {}
    old = indexes.get("decisions_idempotency")
    if old is not None and not _is_partial():
        op.drop_index("decisions_idempotency", table_name="decisions")
        old = None
    if old is None:
        op.create_index(
            "decisions_idempotency",
            "decisions",
            ["caller", "model", "idempotency_key", "request_index"],
            unique=True,
            sqlite_where=WHERE_KEYED,
            postgresql_where=WHERE_KEYED,
        )
    if "decisions_model_time" not in indexes:
        op.create_index("decisions_model_time", "decisions", ["model", "created_at"])
    if "decisions_monitoring" not in indexes:
        op.create_index(
            "decisions_monitoring",
            "decisions",
            [
                "model",
                "created_at",
                "model_version",
                "outcome",
                "abstained",
                "route",
                "confidence",
                "intervened",
                "segments",
            ],
        )
    if "feedback" not in tables:
        op.create_table(
            "feedback",
            sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
            sa.Column("feedback_id", sa.Text, nullable=False, unique=True),
            sa.Column("decision_id", sa.Text, nullable=False),
            sa.Column("model", sa.Text, nullable=False),
            sa.Column("created_at", sa.Text, nullable=False),
            sa.Column("caller", sa.Text, nullable=False),
            sa.Column("actor", sa.Text, nullable=False),
            sa.Column("final_outcome", sa.Text, nullable=False),
            sa.Column("kind", sa.Text, nullable=False),
            sa.Column("record", sa.Text, nullable=False),
            sa.Column("prev_hash", sa.Text, nullable=False),
            sa.Column("row_hash", sa.Text, nullable=False),
        )
        op.create_index("feedback_decision", "feedback", ["decision_id"])
    if "chain_heads" not in tables:
        op.create_table(
            "chain_heads",
            sa.Column("name", sa.Text, primary_key=True),
            sa.Column("seq", sa.BigInteger, nullable=False),
            sa.Column("row_hash", sa.Text, nullable=False),
        )
    if "api_keys" not in tables:
        op.create_table(
            "api_keys",
            sa.Column("name", sa.Text, primary_key=True),
            sa.Column("key_hash", sa.Text, nullable=False, unique=True),
            sa.Column("roles", sa.Text, nullable=False),
            sa.Column("created_at", sa.Text, nullable=False),
            sa.Column("revoked_at", sa.Text),
        )


def _is_partial() -> bool:
    """Whether the existing idempotency index has a WHERE clause (read from the catalogue's DDL)."""
    bind = op.get_bind()
    sql = (
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'decisions_idempotency'"
        if bind.dialect.name == "postgresql"
        else "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'decisions_idempotency'"
    )
    found = bind.execute(sa.text(sql)).fetchone()
    return bool(found and "WHERE" in str(found[0]).upper())
