"""Correlation context and traceparent on a real `keel serve`: stored in the chained record,
returned, searchable by process instance (paginated), inherited by feedback; and the 0008
migration on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from keel.decision_log import Database, DecisionLog
from keel.decision_log.migrations import HEAD, upgrade
from keel.decision_log.verify import verify
from keel.feature_defs.contract import load_contract
from tests.conftest import fresh_postgres_database, run_keel
from tests.integration.conftest import Server
from tests.integration.test_log_store import row

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _case(case_id: str) -> dict[str, object]:
    return {**load_contract("routing").example_case, "case_id": case_id}


def _log_path(server: Server) -> Path:
    return Path(server.env["KEEL_DECISION_LOG_URL"].removeprefix("sqlite:///"))


def test_context_is_stored_returned_searchable_and_inherited_by_feedback(server: Server) -> None:
    instance = f"pi-{uuid.uuid4()}"
    call = {
        "process_definition_id": "invoice",
        "process_definition_version": 3,
        "process_instance_id": instance,
    }
    cases = [_case(f"c{i}") for i in range(5)]
    cases[1]["context"] = {"element_id": "route_exception", "business_key": "INV-1"}
    with server.client() as c:
        r = c.post(
            "/v1/routing/decide", json={"cases": cases, "context": call}, headers={"traceparent": TRACEPARENT}
        )
        assert r.status_code == 200, r.text
        decisions = r.json()["decisions"]
        assert [d["context"] for d in decisions] == [call] + [
            {**call, "element_id": "route_exception", "business_key": "INV-1"}
        ] + [call] * 3
        assert all(d["traceparent"] == TRACEPARENT for d in decisions)
        logged = c.get(f"/v1/decisions/{decisions[1]['decision_id']}").json()
        assert logged["context"]["business_key"] == "INV-1" and "context" not in logged["inputs"]

        # Feedback without its own context is found under its decision's process instance.
        fb = c.post(
            "/v1/feedback",
            json={"decision_id": decisions[0]["decision_id"], "final_outcome": "legal", "actor": "r1"},
        )
        assert fb.status_code == 201, fb.text
        review = {"process_instance_id": instance, "element_id": "review_task"}
        fb2 = c.post(
            "/v1/feedback",
            json={
                "decision_id": decisions[1]["decision_id"],
                "final_outcome": "legal",
                "actor": "r1",
                "context": review,
            },
        )
        assert fb2.status_code == 201 and fb2.json()["context"] == review, fb2.text

        seen: list[dict[str, object]] = []
        after = None
        for _ in range(10):  # 5 decisions in pages of 2: three pages
            params: dict[str, object] = {"process_instance": instance, "limit": 2}
            if after is not None:
                params["after"] = after
            page = c.get("/v1/decisions", params=params)
            assert page.status_code == 200, page.text
            seen += page.json()["decisions"]
            after = page.json()["next_after"]
            if after is None:
                break
        assert [d["decision_id"] for d in seen] == [d["decision_id"] for d in decisions]
        assert [len(d["feedback"]) for d in seen] == [1, 1, 0, 0, 0]
        assert c.get("/v1/decisions", params={"process_instance": "nobody"}).json()["decisions"] == []
        assert c.get("/v1/decisions").status_code == 422  # process_instance is required
    with server.client("decide") as c:
        assert c.get("/v1/decisions", params={"process_instance": instance}).status_code == 403

    conn = sqlite3.connect(_log_path(server))
    try:
        pis = conn.execute(
            "SELECT process_instance FROM feedback WHERE decision_id IN (?, ?) ORDER BY seq",
            (decisions[0]["decision_id"], decisions[1]["decision_id"]),
        ).fetchall()
        plan = " ".join(
            str(r[-1])
            for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM decisions WHERE process_instance = ? AND seq > ? "
                "ORDER BY seq LIMIT 3",
                (instance, 0),
            )
        )
    finally:
        conn.close()
    assert pis == [(instance,), (instance,)]
    assert "decisions_process_instance" in plan, plan
    done = run_keel(server.env, "verify-log")
    assert done.returncode == 0, done.stdout + done.stderr


def test_bad_contexts_are_422_with_field_errors_and_a_bad_traceparent_is_ignored(server: Server) -> None:
    with server.client() as c:
        big = {
            "cases": [_case("x")],
            "context": {"business_key": "k" * 1000, "process_instance_id": "p" * 200},
        }
        big["cases"][0]["context"] = {f: "v" * 500 for f in ("process_definition_id", "element_id")}
        r = c.post("/v1/routing/decide", json=big)
        assert r.status_code == 422, r.text
        errors = r.json()["errors"]
        assert [(e["row"], e["field"]) for e in errors] == [(0, "context")] and "2048" in errors[0]["problem"]

        extra = {"cases": [{**_case("y"), "context": {"process_instance": "typo"}}]}
        r = c.post("/v1/routing/decide", json=extra)
        assert r.status_code == 422
        assert [(e["row"], e["field"]) for e in r.json()["errors"]] == [(0, "context.process_instance")]

        r = c.post("/v1/routing/decide", json={"cases": [_case("z")], "context": "pi-1"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "context"

        r = c.post(
            "/v1/routing/decide", json={"cases": [_case("w")]}, headers={"traceparent": "00-not-a-trace-01"}
        )
        assert r.status_code == 200
        decision = r.json()["decisions"][0]
        assert "traceparent" not in decision and "context" not in decision  # as before contexts existed

        r = c.post(
            "/v1/feedback",
            json={
                "decision_id": decision["decision_id"],
                "final_outcome": "legal",
                "actor": "a",
                "context": {"x": 1},
            },
        )
        assert r.status_code == 422 and r.json()["errors"][0]["field"].startswith("context")


def test_a_retry_with_another_context_is_a_conflict(server: Server) -> None:
    body = {"cases": [_case("r")], "context": {"process_instance_id": "pi-a"}}
    with server.client() as c:
        key = {"Idempotency-Key": str(uuid.uuid4())}
        first = c.post("/v1/routing/decide", json=body, headers=key)
        again = c.post("/v1/routing/decide", json=body, headers={**key, "traceparent": TRACEPARENT})
        assert first.status_code == again.status_code == 200
        assert first.json() == again.json()  # a retry's new span replays the first answer
        other = c.post(
            "/v1/routing/decide", json={**body, "context": {"process_instance_id": "pi-b"}}, headers=key
        )
        assert other.status_code == 409


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_0008_upgrades_a_0007_log_whose_rows_still_verify(kind: str, tmp_path: Path) -> None:
    with fresh_postgres_database("keel_0008") as pg_url:
        url = f"sqlite:///{tmp_path / 'decisions.db'}" if kind == "sqlite" else pg_url
        db = Database(url)
        upgrade(db.engine, db.is_postgres, to="0007")
        with db.engine.begin() as conn:
            assert "process_instance" not in {c["name"] for c in sa.inspect(conn).get_columns("decisions")}
        db.dispose()
        # Rows chained at 0007 are written as that release wrote them: without the column.
        log = DecisionLog(Database(url)).open()  # opening brings it to head
        try:
            log.append("decisions", [row(1), row(2)])
            tagged = row(3)
            tagged["record"]["context"] = {"process_instance_id": "pi-9"}
            log.append("decisions", [{**tagged, "process_instance": "pi-9"}])
        finally:
            log.close()
        upgraded = Database(url)
        inspector = sa.inspect(upgraded.engine)
        assert "decisions_process_instance" in {i["name"] for i in inspector.get_indexes("decisions")}
        assert "feedback_process_instance" in {i["name"] for i in inspector.get_indexes("feedback")}
        with upgraded.engine.begin() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == HEAD
            assert (
                conn.execute(
                    sa.text("SELECT count(*) FROM decisions WHERE process_instance = 'pi-9'")
                ).scalar_one()
                == 1
            )
        assert verify(upgraded).ok
        # The column is covered by the chain: moving a decision to another process instance shows.
        for edit in ("UPDATE decisions SET process_instance = 'pi-x' WHERE seq = 3",
                     "UPDATE decisions SET process_instance = 'pi-x' WHERE seq = 1"):  # fmt: skip
            with upgraded.engine.begin() as conn:
                conn.execute(sa.text(edit))
            result = verify(upgraded)
            assert not result.ok and result.table == "decisions", result
            with upgraded.engine.begin() as conn:
                conn.execute(
                    sa.text("UPDATE decisions SET process_instance = CASE seq WHEN 3 THEN 'pi-9' END")
                )
        assert verify(upgraded).ok
        upgraded.dispose()
