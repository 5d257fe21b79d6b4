"""PostgreSQL: the monthly partitions of `decisions` and `feedback` (migration 0011 made them).

Each month's rows live in `<table>_YYYY_MM`, bounded by `month_start` of that month and the next,
compared as "C"-collated text; anything outside the months made so far lands in
`<table>_default`, so a write never fails for want of a partition. `ensure_months` makes the
current month and `AHEAD` after it: the log does it whenever it opens (`Database.create_schema`),
and `keel log maintain` on a schedule. A month whose rows already sit in the default partition
(logged before its partition existed) gets them moved into the new partition in the same
transaction. SQLite keeps one table per chain; every function here is a no-op there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa

from keel.decision_log.months import month_after, month_bounds

__all__ = ["AHEAD", "PARTITIONED", "Maintained", "ensure_months", "partition_name", "partitions"]

AHEAD = 3
"""Months made ahead of the current one."""
PARTITIONED = ("decisions", "feedback")
_MONTH = re.compile(r"^(decisions|feedback)_(\d{4})_(\d{2})$")


@dataclass
class Maintained:
    created: list[str] = field(default_factory=list)
    moved: dict[str, int] = field(default_factory=dict)
    """Rows moved out of a default partition, per new partition."""


def partition_name(table: str, month: str) -> str:
    return f"{table}_{month.replace('-', '_')}"


def partitions(conn: sa.Connection, table: str) -> list[str]:
    """The months (YYYY-MM) that have a partition of `table`, oldest first."""
    names = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:t AS regclass)"
        ),
        {"t": table},
    ).scalars()
    return sorted(f"{m[2]}-{m[3]}" for n in names if (m := _MONTH.match(n)))


def is_partitioned(conn: sa.Connection, table: str) -> bool:
    kind = conn.execute(sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table})
    return kind.scalar() == "p"


def ensure_months(engine: sa.Engine, today: date | None = None, ahead: int = AHEAD) -> Maintained:
    """Make the partitions of this month and `ahead` after it, and of every month the default
    partitions hold rows of; move those rows in."""
    done = Maintained()
    if engine.dialect.name != "postgresql":
        return done
    today = today or date.today()
    wanted = [today.strftime("%Y-%m")]
    for _ in range(ahead):
        wanted.append(month_after(wanted[-1]))
    with engine.begin() as conn:
        for table in PARTITIONED:
            if not is_partitioned(conn, table):
                continue
            have = set(partitions(conn, table))
            stray = conn.execute(
                sa.text(f"SELECT DISTINCT substr(created_at, 1, 7) FROM {table}_default")
            ).scalars()
            months = {m for m in stray if re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", m or "")}
            for month in sorted((set(wanted) | months) - have):
                moved = _create(conn, table, month)
                done.created.append(partition_name(table, month))
                if moved:
                    done.moved[partition_name(table, month)] = moved
    return done


def _create(conn: sa.Connection, table: str, month: str) -> int:
    """One month's partition; rows of it in the default partition are moved in first (PostgreSQL
    refuses a partition whose range the default partition holds rows of)."""
    name, (start, end) = partition_name(table, month), month_bounds(month)
    values = f"FOR VALUES FROM ('{start}') TO ('{end}')"
    # Writers of the table wait meanwhile: nothing lands in the default partition mid-move.
    conn.execute(sa.text(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"))
    inside = "created_at >= :start AND created_at < :end"
    bounds = {"start": start, "end": end}
    count = conn.execute(sa.text(f"SELECT count(*) FROM {table}_default WHERE {inside}"), bounds).scalar_one()
    if not count:
        conn.execute(sa.text(f"CREATE TABLE {name} PARTITION OF {table} {values}"))
        return 0
    conn.execute(sa.text(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
    # Moved as they are (the id tables already hold these rows: the trigger of `table` is not
    # on the detached table, so nothing is recorded twice).
    conn.execute(
        sa.text(
            f"WITH moved AS (DELETE FROM {table}_default WHERE {inside} RETURNING *) "
            f"INSERT INTO {name} SELECT * FROM moved"
        ),
        bounds,
    )
    conn.execute(sa.text(f"ALTER TABLE {table} ATTACH PARTITION {name} {values}"))
    return int(count)
