"""Migration 0009's search indexes: a 0008 log upgrades and searches the same, the indexes are the
ones schema.py declares for each dialect, and on PostgreSQL the key searches plan an index probe."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from keel.decision_log import Database
from keel.decision_log.bulk import BulkLoader
from keel.decision_log.migrations import HEAD, downgrade, upgrade
from keel.decision_log.schema import FILTER_INDEXES, SEARCH_INDEXES, decisions
from keel.decision_log.search import DecisionQuery, search, search_sql
from keel.decision_log.verify import verify
from tests.conftest import fresh_postgres_database
from tests.integration.test_bulk_load import decision

WINDOW = ("2026-11-01T00:00:00+00:00", "2026-11-02T00:00:00+00:00")
ROWS = 240


def _declared(dialect: str) -> set[str]:
    """The decisions table's index names schema.py declares for a dialect (ddl_if respected)."""
    names = set()
    for index in decisions.indexes:
        only = index._ddl_if  # where SQLAlchemy keeps ddl_if's dialect
        if only is None or only.dialect is None or only.dialect == dialect:
            names.add(str(index.name))
    return names


def _present(db: Database) -> set[str]:
    """The decisions table's index names in the database (not the unique constraints' own)."""
    with db.engine.begin() as conn:
        indexes = sa.inspect(conn).get_indexes("decisions")
    return {str(i["name"]) for i in indexes if "duplicates_constraint" not in i}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            yield f"sqlite:///{tmp_path / 'decisions.db'}"
        else:
            yield stack.enter_context(fresh_postgres_database("keel_t_0009"))


def _queries() -> dict[str, DecisionQuery]:
    since, until = WINDOW
    return {
        "window": DecisionQuery(since, until),
        "case_id": DecisionQuery(since, until, case_id="case-3"),
        "case_id, none": DecisionQuery(since, until, case_id="no-such-case"),
        "caller": DecisionQuery(since, until, caller="batch:nightly"),
        "caller, none": DecisionQuery(since, until, caller="nobody"),
        "outcome, none": DecisionQuery(since, until, outcome="no_such_class"),
        "abstained": DecisionQuery(since, until, abstained=True),
        "not abstained": DecisionQuery(since, until, abstained=False),
        "region": DecisionQuery(since, until, segments={"region": "EMEA"}),
        "region, none": DecisionQuery(since, until, segments={"region": "Atlantis"}),
        "2020": DecisionQuery("2020-01-01T00:00:00+00:00", "2020-01-08T00:00:00+00:00"),
    }


def _expected(rows: list[dict[str, Any]], query: DecisionQuery) -> list[str]:
    """The decision ids a search must find, newest first, computed here in Python."""

    def keep(r: dict[str, Any]) -> bool:
        return (
            query.since <= r["created_at"] < query.until
            and query.case_id in (None, r["case_id"])
            and query.caller in (None, r["caller"])
            and query.outcome in (None, r["outcome"])
            and query.abstained in (None, r["abstained"])
            and all(json.loads(r["segments"]).get(k) == v for k, v in query.segments.items())
        )

    return [r["decision_id"] for r in reversed(rows) if keep(r)][:50]


def test_0009_upgrades_a_0008_log_whose_searches_and_chain_are_unchanged(url: str) -> None:
    db = Database(url)
    upgrade(db.engine, db.is_postgres, to="0008")
    rows = [{**decision(i), "caller": "batch:nightly" if i % 7 == 0 else "svc"} for i in range(1, ROWS + 1)]
    BulkLoader(db).load("decisions", rows)
    before = {name: [r["decision_id"] for r in search(db, q)[0]] for name, q in _queries().items()}
    db.create_schema()  # to head
    dialect = "postgresql" if db.is_postgres else "sqlite"
    with db.engine.begin() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == HEAD
    present = _present(db)
    assert present == _declared(dialect)  # the migrations arrive at schema.py's indexes
    assert ("decisions_segment_region" in present) == db.is_postgres  # SQLite keeps its text match
    for name, query in _queries().items():
        after = [r["decision_id"] for r in search(db, query)[0]]
        assert after == before[name] == _expected(rows, query), name
    assert _expected(rows, _queries()["region"]) and _expected(rows, _queries()["abstained"])
    assert verify(db).ok
    downgrade(db.engine, db.is_postgres, "0008")  # and back: only 0009's indexes go
    left = _present(db)
    later = {str(i.name) for i in (*SEARCH_INDEXES, *FILTER_INDEXES)} | {"decisions_decision_id"}  # 0011's
    assert left == _declared(dialect) - later, left
    db.create_schema()
    assert [r["decision_id"] for r in search(db, _queries()["region"])[0]] == before["region"]
    db.dispose()


PROBES = {
    "case_id, none": "decisions_case_id",
    "caller, none": "decisions_caller",
    "outcome, none": "decisions_outcome",
    "abstained": "decisions_abstained",
    "region, none": "decisions_segment_region",
    "2020": "decisions_created_at",
}


def _scans(plan: dict[str, Any]) -> list[tuple[str, str | None]]:
    found = [(plan["Node Type"], plan.get("Index Name"))] if plan.get("Alias") == "d" else []
    for child in plan.get("Plans", []):
        found.extend(_scans(child))
    return found


def _family(conn: Any, index: str) -> set[str]:
    """An index and, the log being partitioned by month (migration 0011), its partitions' indexes."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = CAST(%s AS regclass)",
        (index,),
    ).fetchall()
    return {index, *(r[0] for r in rows)}


@pytest.mark.postgres
def test_key_searches_plan_an_index_probe_on_postgresql() -> None:
    """What this can show, and what not: on a log of a few hundred rows the planner would rightly
    read the whole table, so sequential scans are switched off (`enable_seqscan`), and the test
    asks which of the remaining paths PostgreSQL picks for the exact statement the console runs
    (search_sql) with the planner's statistics after ANALYZE. It shows that each search's index
    exists, matches the statement's shape (the jsonb expression, the partial index predicates,
    the bound parameters) and is preferred to walking the primary key; and, by dropping the
    indexes inside a rolled-back transaction, that without them the same statement does not
    probe them (so this test can fail). It does not show the plan or the time at 10M decisions:
    bench.search_plans does that (EXPLAIN ANALYZE on a filled log), and bench.console times it."""
    import psycopg

    with fresh_postgres_database("keel_t_plans") as url:
        db = Database(url)
        db.create_schema()
        BulkLoader(db).load("decisions", [decision(i) for i in range(1, ROWS + 1)])
        queries = _queries()
        with psycopg.connect(url) as conn:
            conn.execute("ANALYZE decisions")
            conn.execute("SET enable_seqscan = off")
            for name, index in PROBES.items():
                sql, params = search_sql(db, queries[name], 51)
                explain = "EXPLAIN (FORMAT JSON) " + sql.replace("?", "%s")
                scans = _scans(conn.execute(explain, params).fetchone()[0][0]["Plan"])
                assert scans and all(node != "Seq Scan" for node, _ in scans), (name, scans)
                family = _family(conn, index)
                assert family & {used for _, used in scans}, (name, scans)
                conn.execute(f"DROP INDEX {index}")
                without = _scans(conn.execute(explain, params).fetchone()[0][0]["Plan"])
                assert not family & {used for _, used in without}, (name, without)
                conn.rollback()
                conn.execute("SET enable_seqscan = off")
        db.dispose()
