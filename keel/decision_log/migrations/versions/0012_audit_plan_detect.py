"""Audit plans record their detection target: a nullable `detect_ratio` on `audit_plans`.

`keel audit plan --detect R` plans the audits to catch an R-fold override increase in any one
segment value; `keel audit set` now records R with the plan, and `keel monitor` tunes its
sequential test's mixture to the active plan's R (unless KEEL_MONITOR_SEQUENTIAL_DETECT_RATIO is
set). The column is covered by the plan's row hash only when set
(keel.decision_log.chain.hashed_values), so plans recorded before this revision verify
unchanged. A nullable column without a default: PostgreSQL adds it without rewriting the table.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"


def upgrade() -> None:
    if "detect_ratio" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("audit_plans")}:
        op.add_column("audit_plans", sa.Column("detect_ratio", sa.Double))


def downgrade() -> None:
    op.drop_column("audit_plans", "detect_ratio")
