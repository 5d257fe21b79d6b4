"""A log kept for years: id tables, the records chain, and (PostgreSQL) monthly partitions.

Uniqueness by id table. PostgreSQL enforces a unique key on a partitioned table only when the key
holds the partition column (`created_at`), so `decisions.decision_id`, the idempotency key and
`feedback.feedback_id` are kept unique by two small tables instead: `decision_ids` (decision_id
PRIMARY KEY, with seq, created_at and the idempotency columns under a partial unique index) and
`feedback_ids` (feedback_id PRIMARY KEY). A row trigger on each chain fills them in the same
statement that logs the row, whoever writes it (the writer, the bulk loader, a restore), so a
duplicate fails the insert as the old unique index did. The id tables stay when a month leaves the
live log: they are the id-to-month index that finds an archived decision (and a removed decision's
id can never be logged again). SQLite gets the same tables and triggers, so lookups of archived ids
work alike; its `decisions` and `feedback` stay one table each, with their unique indexes.

Partitions (PostgreSQL): `decisions` and `feedback` become `PARTITION BY RANGE (created_at)`, one
partition per month (`decisions_2026_05` holds created_at in ['2026-05-01T00:00:00+00:00',
'2026-06-01T00:00:00+00:00')) and a DEFAULT partition for any row outside the months made so far
(a write never fails for want of a partition; `keel log maintain` moves such rows into their month).
`created_at` gets the "C" collation so ISO timestamps sort as bytes, the partition bounds compare
the same way, and a window `created_at >= ? AND created_at < ?` prunes to its months. The primary
key becomes (seq, created_at); every other index is rebuilt on the partitioned table as it was
(unique ones as plain indexes: the id tables hold uniqueness now).

Converting an existing log copies every row once (INSERT ... SELECT in seq order, values
untouched, so every chain hash verifies unchanged), then builds the indexes, then drops the old
table. It needs about the old tables' size free on the database's disk; it checks that first when
it can see the data directory, and refuses with the numbers otherwise. The copy holds an ACCESS
EXCLUSIVE lock on both tables (writers wait) for its duration.

`retention_events` is a new hash chain: every archive, removal, restore, hold and release, and
deletion of an archive (what, when, who, under which policy), keel.decision_log.retention.
"""

import os
import re
import shutil
from datetime import UTC, date, datetime

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"

AHEAD = 3
"""Months made ahead of the current one."""
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
IDS = {"decisions": "decision_id", "feedback": "feedback_id"}
SPACE_MARGIN = 1.2
"""Free space asked for, over the size of the tables copied (indexes are rebuilt too)."""

TRIGGER_SQLITE = {
    "decisions": """CREATE TRIGGER IF NOT EXISTS decisions_ids AFTER INSERT ON decisions BEGIN
        INSERT INTO decision_ids (decision_id, seq, created_at, caller, model, idempotency_key,
                                  request_index)
        VALUES (NEW.decision_id, NEW.seq, NEW.created_at, NEW.caller, NEW.model, NEW.idempotency_key,
                NEW.request_index);
    END""",
    "feedback": """CREATE TRIGGER IF NOT EXISTS feedback_ids AFTER INSERT ON feedback BEGIN
        INSERT INTO feedback_ids (feedback_id, seq, created_at)
        VALUES (NEW.feedback_id, NEW.seq, NEW.created_at);
    END""",
}
TRIGGER_PG = {
    "decisions": """CREATE OR REPLACE FUNCTION keel_decision_ids() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO decision_ids (decision_id, seq, created_at, caller, model, idempotency_key,
                                  request_index)
        VALUES (NEW.decision_id, NEW.seq, NEW.created_at, NEW.caller, NEW.model, NEW.idempotency_key,
                NEW.request_index);
        RETURN NEW;
    END $$""",
    "feedback": """CREATE OR REPLACE FUNCTION keel_feedback_ids() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO feedback_ids (feedback_id, seq, created_at)
        VALUES (NEW.feedback_id, NEW.seq, NEW.created_at);
        RETURN NEW;
    END $$""",
}
BACKFILL = {
    "decisions": "INSERT INTO decision_ids (decision_id, seq, created_at, caller, model, idempotency_key, "
    "request_index) SELECT decision_id, seq, created_at, caller, model, idempotency_key, request_index "
    "FROM decisions",
    "feedback": "INSERT INTO feedback_ids (feedback_id, seq, created_at) "
    "SELECT feedback_id, seq, created_at FROM feedback",
}


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        _check_space()
        for table in IDS:
            _partition(table)
    _id_tables(postgres)
    _retention_events()


def _id_tables(postgres: bool) -> None:
    op.create_table(
        "decision_ids",
        sa.Column("decision_id", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("caller", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("request_index", sa.Integer, nullable=False),
    )
    op.create_index(
        "decision_ids_idempotency",
        "decision_ids",
        ["caller", "model", "idempotency_key", "request_index"],
        unique=True,
        sqlite_where=sa.text("idempotency_key IS NOT NULL"),
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index("decision_ids_seq", "decision_ids", ["seq"])
    op.create_table(
        "feedback_ids",
        sa.Column("feedback_id", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
    )
    for table in IDS:
        op.execute(BACKFILL[table])
        if postgres:
            op.execute(TRIGGER_PG[table])
            op.execute(
                f"CREATE TRIGGER {table}_ids BEFORE INSERT ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION keel_{IDS[table]}s()"
            )
        else:
            op.execute(TRIGGER_SQLITE[table])


def _retention_events() -> None:
    op.create_table(
        "retention_events",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("month", sa.Text),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("policy", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.Text, nullable=False, unique=True),
        sa.Column("row_hash", sa.Text, nullable=False),
        sa.Column("key_id", sa.Text),
    )


# -- PostgreSQL: partitions -------------------------------------------------------------------


def _month_start(year: int, month: int) -> str:
    return datetime(year, month, 1, tzinfo=UTC).isoformat()


def _next(year: int, month: int) -> tuple[int, int]:
    return (year + month // 12, month % 12 + 1)


INDEXES = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = :t"


def _check_space() -> None:
    bind = op.get_bind()
    needed = int(
        bind.execute(
            sa.text("SELECT pg_total_relation_size('decisions') + pg_total_relation_size('feedback')")
        ).scalar_one()
    )
    try:
        with bind.begin_nested():
            folder = str(bind.execute(sa.text("SELECT current_setting('data_directory')")).scalar_one())
    except sa.exc.DBAPIError:
        return  # not allowed to see it (not a superuser): the copy runs and fails cleanly if full
    if not os.path.isdir(folder):
        return  # the server is on another machine: its disk cannot be seen from here
    free = shutil.disk_usage(folder).free
    if free < needed * SPACE_MARGIN:
        raise RuntimeError(
            f"migration 0011 (partitioning the decision log) copies decisions and feedback once: it needs "
            f"about {needed * SPACE_MARGIN / 1e9:.2f} GB free in {folder}, and {free / 1e9:.2f} GB are. "
            "Free space (or archive and remove old months on a copy first), then start again: nothing "
            "was changed."
        )


def _partition(table: str) -> None:
    bind = op.get_bind()
    kind = bind.execute(
        sa.text("SELECT relkind FROM pg_class WHERE oid = CAST(:t AS regclass)"), {"t": table}
    )
    if kind.scalar_one() == "p":
        return
    columns = bind.execute(
        sa.text(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
            "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a LEFT JOIN pg_attrdef d "
            "ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = CAST(:t AS regclass) AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum"
        ),
        {"t": table},
    ).all()
    indexes, sequence = _catalog(table)
    new = f"{table}_partitioned"
    body = ", ".join(
        f"{name} {kind}"
        + (' COLLATE "C"' if name == "created_at" else "")
        + (" NOT NULL" if notnull else "")
        + (f" DEFAULT {default}" if default else "")
        for name, kind, notnull, default in columns
    )
    op.execute(f"CREATE TABLE {new} ({body}, PRIMARY KEY (seq, created_at)) PARTITION BY RANGE (created_at)")
    for year, month in _months(table):
        start, end = _month_start(year, month), _month_start(*_next(year, month))
        op.execute(
            f"CREATE TABLE {table}_{year:04d}_{month:02d} PARTITION OF {new} "
            f"FOR VALUES FROM ('{start}') TO ('{end}')"
        )
    op.execute(f"CREATE TABLE {table}_default PARTITION OF {new} DEFAULT")
    names = ", ".join(name for name, *_ in columns)
    op.execute(f"INSERT INTO {new} ({names}) SELECT {names} FROM {table} ORDER BY seq")
    _replace(table, new, sequence)
    op.execute(f"ALTER INDEX {new}_pkey RENAME TO {table}_pkey")
    for name, definition in indexes:
        if name == f"{table}_pkey" or name == f"{table}_{IDS[table]}_key":
            continue
        op.execute(definition.replace("CREATE UNIQUE INDEX", "CREATE INDEX"))
    op.execute(f"CREATE INDEX {table}_{IDS[table]} ON {table} ({IDS[table]})")


def _catalog(table: str) -> tuple[list[tuple[str, str]], str]:
    """The table's indexes (name, definition) and the sequence its `seq` is drawn from."""
    bind = op.get_bind()
    indexes = [(str(n), str(d)) for n, d in bind.execute(sa.text(INDEXES), {"t": table})]
    sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence(:t, 'seq')"), {"t": table}).scalar_one()
    return indexes, str(sequence)


def _replace(table: str, new: str, sequence: str) -> None:
    """`new` (filled) takes the place of `table`; the sequence of seq goes on where it stood."""
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY NONE")
    op.execute(f"DROP TABLE {table}")
    op.execute(f"ALTER TABLE {new} RENAME TO {table}")
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY {table}.seq")


def _months(table: str) -> list[tuple[int, int]]:
    """The months the table's rows fall in (others go to DEFAULT), and this month and AHEAD after."""
    found = op.get_bind().execute(sa.text(f"SELECT DISTINCT substr(created_at, 1, 7) FROM {table}")).scalars()
    months = {(int(m[:4]), int(m[5:])) for m in found if m and re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", m)}
    today = date.today()
    current = (today.year, today.month)
    for _ in range(AHEAD + 1):
        months.add(current)
        current = _next(*current)
    return sorted(months)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_table("retention_events")
    for table, column in IDS.items():
        op.execute(f"DROP TRIGGER IF EXISTS {table}_ids" + (f" ON {table}" if postgres else ""))
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS keel_{column}s()")
    op.drop_table("decision_ids")
    op.drop_table("feedback_ids")
    if postgres:
        for table in IDS:
            _unpartition(table)


def _unpartition(table: str) -> None:
    """Back to one table with its unique keys (fails, as it should, if an id repeats)."""
    indexes, sequence = _catalog(table)
    new = f"{table}_single"
    op.execute(f"CREATE TABLE {new} (LIKE {table} INCLUDING DEFAULTS)")
    op.execute(f'ALTER TABLE {new} ALTER COLUMN created_at TYPE text COLLATE "default"')
    op.execute(f"INSERT INTO {new} SELECT * FROM {table} ORDER BY seq")
    _replace(table, new, sequence)
    op.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (seq)")
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_{IDS[table]}_key UNIQUE ({IDS[table]})")
    unique = {"decisions_idempotency"}
    for name, definition in indexes:
        if name in (f"{table}_pkey", f"{table}_{IDS[table]}"):
            continue
        if name in unique:
            definition = definition.replace("CREATE INDEX", "CREATE UNIQUE INDEX")
        op.execute(definition.replace(" ONLY ", " "))
