"""The alias history joins the log's chains: `alias_history` (keyed like decisions and feedback).

Before this revision `keel.models.history` kept the table itself (created on first use) as a
plain sha256 chain over each row's JSON content. Existing rows stay as they are; the revision
adds `key_id`, records the chain's head in `chain_heads`, and records how many rows are in the
old format (`alias_history.legacy`), so they still verify and no later row may use it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
GENESIS = "0" * 64


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if "alias_history" not in inspector.get_table_names():
        op.create_table(
            "alias_history",
            sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
            sa.Column("model", sa.Text, nullable=False),
            sa.Column("alias", sa.Text, nullable=False),
            sa.Column("action", sa.Text, nullable=False),
            sa.Column("from_version", sa.Text),
            sa.Column("to_version", sa.Text),
            sa.Column("actor", sa.Text, nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("forced", sa.Boolean, nullable=False),
            sa.Column("gates", sa.Text, nullable=False),
            sa.Column("created_at", sa.Text, nullable=False),
            sa.Column("prev_hash", sa.Text, nullable=False, unique=True),
            sa.Column("row_hash", sa.Text, nullable=False),
            sa.Column("key_id", sa.Text),
        )
        op.create_index("alias_history_model", "alias_history", ["model", "seq"])
        return
    if "key_id" not in {c["name"] for c in inspector.get_columns("alias_history")}:
        op.add_column("alias_history", sa.Column("key_id", sa.Text))
    last = bind.execute(sa.text("SELECT seq, row_hash FROM alias_history ORDER BY seq DESC LIMIT 1")).first()
    seq, head = (int(last[0]), str(last[1])) if last else (0, GENESIS)
    for name in ("alias_history", "alias_history.legacy"):
        bind.execute(sa.text("DELETE FROM chain_heads WHERE name = :n"), {"n": name})
        bind.execute(
            sa.text("INSERT INTO chain_heads (name, seq, row_hash) VALUES (:n, :s, :h)"),
            {"n": name, "s": seq, "h": head},
        )
