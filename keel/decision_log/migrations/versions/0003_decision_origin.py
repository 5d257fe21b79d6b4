"""Decision origin: `origin` (live, batch, shadow) on decisions, in the monitoring index.

Batch decisions logged before this revision are known by their caller (`batch:` prefix) and get
origin `batch`; everything else was answered online (`live`). The covering monitoring index is
rebuilt with the column, so windows that count live decisions only stay index-only scans.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

MONITORING = [
    "model",
    "created_at",
    "model_version",
    "outcome",
    "abstained",
    "route",
    "confidence",
    "intervened",
    "segments",
]


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "origin" in {c["name"] for c in inspector.get_columns("decisions")}:
        return
    # A constant default: PostgreSQL adds the column without rewriting the table.
    op.add_column("decisions", sa.Column("origin", sa.Text, nullable=False, server_default="live"))
    op.execute(
        sa.text(
            "UPDATE decisions SET origin = 'batch' "
            "WHERE caller >= 'batch:' AND caller < 'batch;' AND idempotency_key IS NOT NULL"
        )
    )
    if "decisions_monitoring" in {i["name"] for i in inspector.get_indexes("decisions")}:
        op.drop_index("decisions_monitoring", table_name="decisions")
    op.create_index("decisions_monitoring", "decisions", [*MONITORING, "origin"])
