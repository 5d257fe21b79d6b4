"""SQL of `keel monitor`'s shared state: `monitor_runs`, `monitor_sequential`, `monitor_imports`.

`keel.monitoring` is the API over it (recording runs, the sequential test, the console's reads);
this module only moves rows. JSON columns are stored as text, parsed by the caller, so SQLite and
PostgreSQL behave alike. The sequential state is updated by compare-and-swap on its revision:
`swap_sequential` succeeds only if nobody changed the row since it was read.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from keel.decision_log.database import Database
from keel.decision_log.outbox import OutboxEvent, stage
from keel.decision_log.schema import monitor_imports, monitor_runs, monitor_sequential

__all__ = [
    "RUN_COLUMNS",
    "RunRow",
    "SequentialRow",
    "import_once",
    "insert_run",
    "latest_runs",
    "monitored_models",
    "read_run",
    "read_sequential",
    "recent_runs",
    "sequential_states",
    "swap_sequential",
    "was_imported",
]

RUN_COLUMNS = tuple(c.name for c in monitor_runs.columns)
_LISTED = tuple(c for c in monitor_runs.columns if c.name != "summary")
"""Listings leave the summary out: it can be hundreds of kilobytes per run."""


@dataclass(frozen=True)
class RunRow:
    """One `monitor_runs` row with its JSON columns still as text."""

    run_id: str
    model: str
    generated_at: str
    window_start: str | None
    window_end: str | None
    status: str
    recommendation: str
    decisions: int | None
    versions: str
    verdicts: str
    trend: str
    summary: str | None
    report_dir: str | None
    mlflow_run_id: str | None
    host: str


@dataclass(frozen=True)
class SequentialRow:
    model: str
    field: str
    state: str
    revision: int
    updated_at: str


def _run(row: Any) -> RunRow:
    values = row._mapping
    return RunRow(**{c: values.get(c) for c in RUN_COLUMNS})


def insert_run(db: Database, run: RunRow, events: Sequence[OutboxEvent] = ()) -> None:
    """Record one run, and stage the `events` announcing it in the same transaction."""
    conn = db.connect()
    try:
        with db.transaction(conn):
            conn.execute(
                f"INSERT INTO monitor_runs ({', '.join(RUN_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
                tuple(getattr(run, c) for c in RUN_COLUMNS),
            )
            stage(conn, events, time.time())
    finally:
        conn.close()


def recent_runs(db: Database, model: str, limit: int = 50) -> list[RunRow]:
    """The model's runs, newest first, summaries left out (the index on (model, generated_at)
    serves it)."""
    sql = (
        sa.select(*_LISTED)
        .where(monitor_runs.c.model == model)
        .order_by(monitor_runs.c.generated_at.desc(), monitor_runs.c.run_id.desc())
        .limit(limit)
    )
    with db.engine.connect() as conn:
        return [_run(r) for r in conn.execute(sql)]


def read_run(db: Database, run_id: str) -> RunRow | None:
    with db.engine.connect() as conn:
        row = conn.execute(sa.select(monitor_runs).where(monitor_runs.c.run_id == run_id)).first()
    return _run(row) if row is not None else None


def monitored_models(db: Database) -> list[str]:
    with db.engine.connect() as conn:
        return [str(r[0]) for r in conn.execute(sa.select(monitor_runs.c.model).distinct().order_by("model"))]


def latest_runs(db: Database, per_model: int = 1) -> list[RunRow]:
    """The `per_model` newest runs of every monitored model, newest first within each model."""
    rank = (
        sa.func.row_number()
        .over(
            partition_by=monitor_runs.c.model,
            order_by=(monitor_runs.c.generated_at.desc(), monitor_runs.c.run_id.desc()),
        )
        .label("rank")
    )
    ranked = sa.select(*_LISTED, rank).subquery()
    sql = (
        sa.select(*(ranked.c[c.name] for c in _LISTED))
        .where(ranked.c.rank <= per_model)
        .order_by(ranked.c.model, ranked.c.rank)
    )
    with db.engine.connect() as conn:
        return [_run(r) for r in conn.execute(sql)]


def read_sequential(db: Database, model: str, field: str) -> SequentialRow | None:
    sql = sa.select(monitor_sequential).where(
        monitor_sequential.c.model == model, monitor_sequential.c.field == field
    )
    with db.engine.connect() as conn:
        row = conn.execute(sql).first()
    return SequentialRow(**row._mapping) if row is not None else None


def sequential_states(db: Database, model: str) -> list[SequentialRow]:
    """Every field's stored evidence of `model`, by field."""
    sql = (
        sa.select(monitor_sequential)
        .where(monitor_sequential.c.model == model)
        .order_by(monitor_sequential.c.field)
    )
    with db.engine.connect() as conn:
        return [SequentialRow(**r._mapping) for r in conn.execute(sql)]


def swap_sequential(
    db: Database, model: str, field: str, state: str, revision: int | None, updated_at: str
) -> bool:
    """Store `state` if the row is still at `revision` (None: there is no row yet); False when
    another writer got there first, and the caller must reload and redo its change."""
    with db.writing() as conn:
        if revision is None:
            return _insert_new(conn, db, monitor_sequential, {
                "model": model, "field": field, "state": state, "revision": 1, "updated_at": updated_at,
            })  # fmt: skip
        done = conn.execute(
            monitor_sequential.update()
            .where(
                monitor_sequential.c.model == model,
                monitor_sequential.c.field == field,
                monitor_sequential.c.revision == revision,
            )
            .values(state=state, revision=revision + 1, updated_at=updated_at)
        )
        return done.rowcount == 1


def was_imported(db: Database, source: str) -> bool:
    with db.engine.connect() as conn:
        row = conn.execute(sa.select(monitor_imports.c.source).where(monitor_imports.c.source == source))
        return row.first() is not None


def import_once(
    db: Database,
    source: str,
    imported_at: str,
    runs: Sequence[RunRow],
    states: Sequence[SequentialRow],
) -> tuple[int, int] | None:
    """Insert `runs` and `states` together with the marker `source`, in one transaction, unless
    the marker is there already (None); returns (runs, states) added. A state already in the
    table is kept: it is newer than any file. Two callers at once: the marker's key makes one
    wait for the other's commit, then find the marker and add nothing."""
    with db.writing() as conn:
        marker = {"source": source, "imported_at": imported_at, "runs": len(runs), "states": 0}
        if not _insert_new(conn, db, monitor_imports, marker):
            return None
        for run in runs:
            conn.execute(monitor_runs.insert().values(**{c: getattr(run, c) for c in RUN_COLUMNS}))
        kept = sum(_insert_new(conn, db, monitor_sequential, vars(s)) for s in states)
        conn.execute(monitor_imports.update().where(monitor_imports.c.source == source).values(states=kept))
    return len(runs), kept


def _insert_new(conn: sa.Connection, db: Database, table: sa.Table, values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on the primary key; True when the row was added. Told by
    RETURNING: on PostgreSQL the result's rowcount for this statement came back -1."""
    if db.is_postgres:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table).values(**values).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).values(**values).on_conflict_do_nothing()
    first_key = next(iter(table.primary_key.columns))
    return conn.execute(stmt.returning(first_key)).first() is not None
