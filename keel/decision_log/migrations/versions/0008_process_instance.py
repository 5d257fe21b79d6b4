"""Correlation: `process_instance` on decisions and feedback, each with a partial index.

A decision's record may carry the caller's correlation context (process definition and instance,
element, business key) and W3C `traceparent`; the record is hashed, so they are chained with it.
The process instance is also copied into its own column, covered by the row hash whenever it is
set (keel.decision_log.chain.hashed_values), so `GET /v1/decisions?process_instance=` reads an
index instead of every record. Feedback inherits its decision's process instance. Rows logged
before this revision have NULL there and verify unchanged. Nullable columns without a default:
PostgreSQL adds them without rewriting the table; the indexes skip the NULL rows.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"

TABLES = ("decisions", "feedback")


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table in TABLES:
        if "process_instance" not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, sa.Column("process_instance", sa.Text))
        op.create_index(
            f"{table}_process_instance",
            table,
            ["process_instance", "seq"],
            sqlite_where=sa.text("process_instance IS NOT NULL"),
            postgresql_where=sa.text("process_instance IS NOT NULL"),
        )


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(f"{table}_process_instance", table_name=table)
        op.drop_column(table, "process_instance")
