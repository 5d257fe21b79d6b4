"""Monitoring state joins the log: `monitor_runs`, `monitor_sequential` and `monitor_imports`.

Until this revision `keel monitor` kept its run history (`history.jsonl`) and the sequential
test's evidence (`sequential.json`) as files under one machine's `KEEL_HOME/reports/`; in the
log's database every machine and replica sees the same runs and the same evidence.
`monitor_sequential` carries a revision number so two monitors update it by compare-and-swap;
`monitor_imports` records which old reports folders were read in, so each is read once.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "monitor_runs",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("generated_at", sa.Text, nullable=False),
        sa.Column("window_start", sa.Text),
        sa.Column("window_end", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("recommendation", sa.Text, nullable=False),
        sa.Column("decisions", sa.BigInteger),
        sa.Column("versions", sa.Text, nullable=False),
        sa.Column("verdicts", sa.Text, nullable=False),
        sa.Column("trend", sa.Text, nullable=False),
        sa.Column("summary", sa.Text),
        sa.Column("report_dir", sa.Text),
        sa.Column("mlflow_run_id", sa.Text),
        sa.Column("host", sa.Text, nullable=False),
    )
    op.create_index("monitor_runs_model_time", "monitor_runs", ["model", "generated_at"])
    op.create_table(
        "monitor_sequential",
        sa.Column("model", sa.Text, primary_key=True),
        sa.Column("field", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
    )
    op.create_table(
        "monitor_imports",
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("imported_at", sa.Text, nullable=False),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.Column("states", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("monitor_imports")
    op.drop_table("monitor_sequential")
    op.drop_index("monitor_runs_model_time", table_name="monitor_runs")
    op.drop_table("monitor_runs")
