"""Audit plans join the log: `audit_plans` (append-only, hash-linked) and `audit_secret`.

`audit_plans` holds every plan `keel audit set` recorded; a model's current plan is its latest
row. `audit_secret` holds one random value, made here once, from which the default plan of a
model without one derives its seed, so every replica selects the same cases.
"""

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_plans",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("field", sa.Text),
        sa.Column("probabilities", sa.Text, nullable=False),
        sa.Column("default_probability", sa.Double, nullable=False),
        sa.Column("cross_share", sa.Double, nullable=False),
        sa.Column("seed", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.Text, nullable=False, unique=True),
        sa.Column("row_hash", sa.Text, nullable=False),
        sa.Column("key_id", sa.Text),
        sa.UniqueConstraint("model", "version", name="audit_plans_model_version"),
    )
    secret = op.create_table(
        "audit_secret",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
    )
    op.bulk_insert(
        secret, [{"id": 1, "secret": secrets.token_hex(32), "created_at": datetime.now(UTC).isoformat()}]
    )


def downgrade() -> None:
    op.drop_table("audit_secret")
    op.drop_table("audit_plans")
