"""The event outbox joins the log: `event_outbox` (keel.decision_log.outbox).

Alias moves, monitor runs and canary auto-rollbacks stage a CloudEvent here in the transaction
that records them; dispatchers claim due rows by lease and record each delivery attempt.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "event_outbox",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.Text, nullable=False, unique=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("subject", sa.Text),
        sa.Column("time", sa.Text, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Double, nullable=False),
        sa.Column("claimed_by", sa.Text),
        sa.Column("claimed_until", sa.Double),
        sa.Column("delivered_to", sa.Text, nullable=False),
        sa.Column("delivered_at", sa.Text),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("event_outbox_due", "event_outbox", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("event_outbox_due", table_name="event_outbox")
    op.drop_table("event_outbox")
