"""Migration 0013: the console's route, version, origin, final-outcome and overridden filters find
exactly what they should (feedback revisions included), whichever way a feedback filter is
answered (candidates looked up, or the window walked), on SQLite and PostgreSQL; and on
PostgreSQL a search for a value that matches nothing is an index probe."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from keel.decision_log import Database
from keel.decision_log import search as search_module
from keel.decision_log.bulk import BulkLoader
from keel.decision_log.search import DecisionQuery, search, search_sql
from tests.conftest import fresh_postgres_database
from tests.integration.test_bulk_load import decision
from tests.integration.test_search_indexes import ROWS, WINDOW, _family, _scans

CLASSES = ("finance_ap", "legal", "sales_ops")


def _rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(1, ROWS + 1):
        row = decision(i)
        row["route"] = "auto" if i % 3 else ("human_review" if i % 2 else "finance_approval")
        row["origin"] = "shadow" if i % 11 == 0 else None
        rows.append(row)
    return rows


def _feedback(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Feedback on every fourth decision; every eighth is overridden and then, every sixteenth,
    confirmed after all (its latest revision is no override)."""
    out = []
    for i, row in enumerate(rows, start=1):
        if i % 4:
            continue
        revisions = [("override", CLASSES[i % 3])] + ([("confirmation", "finance_ap")] if i % 16 == 0 else [])
        if i % 8:
            revisions = [("confirmation", row["outcome"] or "legal")]
        for n, (kind, final) in enumerate(revisions):
            out.append({
                "feedback_id": str(uuid.uuid4()), "decision_id": row["decision_id"], "model": row["model"],
                "created_at": row["created_at"].replace("+00:00", f"{n}+00:00"), "caller": "svc",
                "actor": "reviewer", "final_outcome": final, "kind": kind, "record": {"kind": kind},
            })  # fmt: skip
    return out


def _latest(feedback: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for f in feedback:  # in logged order: the last revision wins
        latest[f["decision_id"]] = f
    return latest


def _queries() -> dict[str, DecisionQuery]:
    since, until = WINDOW
    return {
        "model version": DecisionQuery(since, until, model_version="2"),
        "model version, none": DecisionQuery(since, until, model_version="999"),
        "route": DecisionQuery(since, until, route="finance_approval"),
        "route auto": DecisionQuery(since, until, route="auto"),
        "route, none": DecisionQuery(since, until, route="no_such_route"),
        "origin shadow": DecisionQuery(since, until, origin="shadow"),
        "origin live": DecisionQuery(since, until, origin="live"),
        "origin, none": DecisionQuery(since, until, origin="batch"),
        "overridden": DecisionQuery(since, until, overridden=True),
        "not overridden": DecisionQuery(since, until, overridden=False),
        "overridden, none": DecisionQuery(since, until, overridden=True, model_version="999"),
        "final outcome": DecisionQuery(since, until, final_outcome="legal"),
        "final outcome, none": DecisionQuery(since, until, final_outcome="no_such_class"),
    }


def _expected(rows: list[dict[str, Any]], latest: dict[str, dict[str, Any]], q: DecisionQuery) -> list[str]:
    def keep(r: dict[str, Any]) -> bool:
        f = latest.get(r["decision_id"])
        overridden = f is not None and f["kind"] == "override"
        return (
            q.since <= r["created_at"] < q.until
            and q.model_version in (None, r["model_version"])
            and q.route in (None, r["route"])
            and q.origin in (None, r["origin"] or "live")
            and q.overridden in (None, overridden)
            and q.final_outcome in (None, f and f["final_outcome"])
        )

    return [r["decision_id"] for r in reversed(rows) if keep(r)][:50]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            yield f"sqlite:///{tmp_path / 'decisions.db'}"
        else:
            yield stack.enter_context(fresh_postgres_database("keel_t_0013"))


@pytest.mark.parametrize("few", [0, 10**6], ids=["walk", "by-feedback"])
def test_filters_find_exactly_the_matching_decisions(
    url: str, few: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_module, "FEW_FEEDBACK", few)  # 0: walk unless nothing is named
    db = Database(url)
    rows = _rows()
    feedback = _feedback(rows)
    BulkLoader(db).load("decisions", rows)
    BulkLoader(db).load("feedback", feedback)
    latest = _latest(feedback)
    for name, query in _queries().items():
        page = search(db, query)[0]
        found = [r["decision_id"] for r in page]
        assert found == _expected(rows, latest, query), name
        for r in page:  # each row shows its latest revision
            f = latest.get(r["decision_id"])
            assert (r["final_outcome"], r["feedback_kind"]) == (
                (f["final_outcome"], f["kind"]) if f else (None, None)
            )
        if name.endswith("none"):
            assert not found, name
        else:
            assert found, name
    # a decision overridden and then confirmed is no longer overridden, nor finally `legal` by it
    revised = {f["decision_id"] for f in feedback if f["kind"] == "confirmation"} & {
        f["decision_id"] for f in feedback if f["kind"] == "override"
    }
    assert revised
    overridden = {r["decision_id"] for r in search(db, _queries()["overridden"])[0]}
    assert not revised & overridden
    db.dispose()


PROBES = {
    "model version, none": ("d", "decisions_model_version"),
    "route, none": ("d", "decisions_route"),
    "origin, none": ("d", "decisions_origin"),
    "final outcome, none": ("f", "feedback_final_outcome"),
}


def _scans_of(plan: dict[str, Any], alias: str) -> list[tuple[str, str | None]]:
    """The scans of one table alias (PostgreSQL names a subquery's repeated alias `f_1`, `f_2` ...)."""
    named = str(plan.get("Alias", ""))
    found = [(plan["Node Type"], plan.get("Index Name"))] if alias in (named, named.rsplit("_", 1)[0]) else []
    for child in plan.get("Plans", []):
        found.extend(_scans_of(child, alias))
    return found


@pytest.mark.postgres
def test_searches_for_nothing_probe_the_0013_indexes_on_postgresql() -> None:
    """As test_search_indexes' probe test: sequential scans off, which index PostgreSQL picks for
    the console's exact statement, and that without the index it does not."""
    import psycopg

    with fresh_postgres_database("keel_t_plans13") as url:
        db = Database(url)
        db.create_schema()
        rows = _rows()
        BulkLoader(db).load("decisions", rows)
        BulkLoader(db).load("feedback", _feedback(rows))
        queries = _queries()
        with psycopg.connect(url) as conn:
            conn.execute("ANALYZE decisions, feedback")
            conn.execute("SET enable_seqscan = off")
            for name, (alias, index) in PROBES.items():
                sql, params = search_sql(db, queries[name], 51)
                explain = "EXPLAIN (FORMAT JSON) " + sql.replace("?", "%s")
                plan = conn.execute(explain, params).fetchone()[0][0]["Plan"]
                scans = _scans_of(plan, alias)
                assert _scans(plan) and all(node != "Seq Scan" for node, _ in scans), (name, scans)
                family = _family(conn, index)
                assert family & {used for _, used in scans}, (name, json.dumps(plan)[:2000])
                conn.execute(f"DROP INDEX {index}")
                without = _scans_of(conn.execute(explain, params).fetchone()[0][0]["Plan"], alias)
                assert not family & {used for _, used in without}, (name, without)
                conn.rollback()
                conn.execute("SET enable_seqscan = off")
        db.dispose()
