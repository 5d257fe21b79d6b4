"""Migration 0011 on real databases: PostgreSQL's log partitioned by month (converted in place,
every chain hash unchanged), ids and idempotency keys kept unique by the id tables, partitions made
ahead and strays moved out of the default partition; SQLite unpartitioned with the same id tables."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from keel.decision_log import Database, DecisionLog, LogSettings
from keel.decision_log.bulk import BulkLoader
from keel.decision_log.log_key import ChainKeys
from keel.decision_log.migrations import HEAD, downgrade
from keel.decision_log.partitions import ensure_months, partitions
from keel.decision_log.verify import verify
from tests.conftest import fresh_postgres_database, run_keel
from tests.integration.test_archive import MONTHS, PER_MONTH, decisions, fill, keys

__all__ = ["keys"]

DUPLICATE = (sqlite3.IntegrityError, psycopg.IntegrityError)


@pytest.fixture
def pg_log(keys: ChainKeys) -> Iterator[Database]:
    with fresh_postgres_database("keel_t_partitions") as url:
        db = fill(url, keys)
        yield db
        db.dispose()


def _scalar(db: Database, sql: str) -> object:
    with db.engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


def _plan(db: Database, sql: str) -> str:
    with db.engine.connect() as conn:
        return "\n".join(conn.execute(sa.text(f"EXPLAIN {sql}")).scalars())


def test_an_existing_log_is_partitioned_in_place_and_verifies_unchanged(
    pg_log: Database,
    keys: ChainKeys,
) -> None:
    before = verify(pg_log, keys)
    assert before.ok, before.problem
    with pg_log.engine.connect() as conn:
        assert set(partitions(conn, "decisions")) >= set(MONTHS)
    downgrade(pg_log.engine, True, "0009")  # back to one table, as a log made before 0011
    assert _scalar(pg_log, "SELECT relkind FROM pg_class WHERE relname = 'decisions'") == "r"
    # 0011's retention chain goes with the downgrade; an empty chain has no stored head.
    older = {t: h for t, h in before.heads.items() if t != "retention_events" and h[0] > 0}
    # Read the heads as stored: this code verifies logs at HEAD (0012's audit-plan column), not 0009.
    with pg_log.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT name, seq, row_hash FROM chain_heads")).all()
    assert {name: (int(seq), str(h)) for name, seq, h in stored} == older
    pg_log.create_schema()
    assert _scalar(pg_log, "SELECT version_num FROM alembic_version") == HEAD
    assert _scalar(pg_log, "SELECT relkind FROM pg_class WHERE relname = 'decisions'") == "p"
    after = verify(pg_log, keys)
    assert after.ok, after.problem
    assert after.heads == before.heads and after.rows_checked == before.rows_checked
    assert _scalar(pg_log, "SELECT count(*) FROM decisions_2026_09") == PER_MONTH
    assert _scalar(pg_log, "SELECT count(*) FROM decisions_default") == 0
    assert _scalar(pg_log, "SELECT count(*) FROM decision_ids") == len(MONTHS) * PER_MONTH
    # A month's window reads that month's partition only.
    plan = _plan(
        pg_log,
        "SELECT count(*) FROM decisions WHERE created_at >= '2026-09-01T00:00:00+00:00' "
        "AND created_at < '2026-10-01T00:00:00+00:00'",
    )
    assert "decisions_2026_09" in plan
    assert "decisions_2026_08" not in plan and "decisions_2026_10" not in plan and "default" not in plan


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_ids_and_idempotency_keys_stay_unique(kind: str, tmp_path: Path, keys: ChainKeys) -> None:
    with _log(kind, tmp_path, keys) as db:
        taken = str(_scalar(db, "SELECT decision_id FROM decisions ORDER BY seq LIMIT 1"))
        row = next(decisions("2026-10", 1))
        with pytest.raises(DUPLICATE):
            BulkLoader(db, keys).load("decisions", [{**row, "decision_id": taken}])
        keyed = {**row, "idempotency_key": "k-1", "caller": "svc"}
        BulkLoader(db, keys).load("decisions", [keyed])
        with pytest.raises(DUPLICATE):
            BulkLoader(db, keys).load("decisions", [{**keyed, "decision_id": str(uuid.uuid4())}])
        # The online writer logs through the same trigger.
        log = DecisionLog(db, settings=LogSettings(key_file=tmp_path / "chain.key")).open()
        try:
            fresh = {**next(decisions("2026-10", 1)), "created_at": "2026-10-30T10:00:00+00:00"}
            log.append("decisions", [fresh])
        finally:
            log.close()
        found = _scalar(db, f"SELECT seq FROM decision_ids WHERE decision_id = '{fresh['decision_id']}'")
        assert found == _scalar(db, "SELECT max(seq) FROM decisions")
        result = verify(db, keys)
        assert result.ok, result.problem


class _log:
    def __init__(self, kind: str, tmp_path: Path, keys: ChainKeys) -> None:
        self.kind, self.tmp_path, self.keys = kind, tmp_path, keys
        self._pg = fresh_postgres_database("keel_t_ids") if kind == "postgres" else None

    def __enter__(self) -> Database:
        url = self._pg.__enter__() if self._pg else f"sqlite:///{self.tmp_path / 'log.db'}"
        self.db = fill(url, self.keys)
        return self.db

    def __exit__(self, *exc: object) -> None:
        self.db.dispose()
        if self._pg:
            self._pg.__exit__(None, None, None)


def test_partitions_are_made_ahead_and_strays_moved_in(
    pg_log: Database, keys: ChainKeys, tmp_path: Path
) -> None:
    # A month with no partition yet: its rows land in the default partition, never refused.
    BulkLoader(pg_log, keys).load("decisions", decisions("2025-02", 40))
    assert _scalar(pg_log, "SELECT count(*) FROM decisions_default") == 40
    env = {**os.environ, "KEEL_HOME": str(tmp_path / "home"), "KEEL_DECISION_LOG_URL": pg_log.url}
    maintained = run_keel(env, "log", "maintain")
    assert maintained.returncode == 0, maintained.stderr
    assert "decisions_2025_02 (40 rows moved in)" in maintained.stdout
    done = ensure_months(pg_log.engine, today=date(2027, 6, 15), ahead=2)
    assert done.moved == {}
    assert {"decisions_2027_06", "decisions_2027_07", "decisions_2027_08"} <= set(done.created)
    assert _scalar(pg_log, "SELECT count(*) FROM decisions_default") == 0
    assert _scalar(pg_log, "SELECT count(*) FROM decisions_2025_02") == 40
    assert ensure_months(pg_log.engine, today=date(2027, 6, 15), ahead=2).created == []
    # The moved rows still log through the trigger and verify; new rows of the month go straight in.
    BulkLoader(pg_log, keys).load("decisions", decisions("2025-02", 5))
    assert _scalar(pg_log, "SELECT count(*) FROM decisions_2025_02") == 45
    result = verify(pg_log, keys)
    assert result.ok, result.problem
