"""Keyed chain and per-key rate limits: `key_id` on chained rows, `rate_per_second` on API keys."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table in ("decisions", "feedback"):
        if "key_id" not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, sa.Column("key_id", sa.Text))
    if "rate_per_second" not in {c["name"] for c in inspector.get_columns("api_keys")}:
        op.add_column("api_keys", sa.Column("rate_per_second", sa.Double))
