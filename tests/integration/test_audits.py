"""Audit sampling over a real `keel serve`: decisions carry their audit selection in the chained
record, reviewers name their pool, and a plan recorded with `keel audit set` reaches a running
server without a restart and is listed by `keel history`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from keel.decision_log import DecisionLog
from keel.decision_log.database import Database
from tests.conftest import Store, cli_env, run_keel, wait_until
from tests.integration.conftest import Server, make_keys, start_server
from tests.integration.test_batch import MODEL as BATCH_MODEL
from tests.integration.test_batch import score_logged
from tests.integration.test_service import cases_of, decide

AUDIT_KEYS = {"selected", "probability", "pool", "plan"}


def _check_audits(decisions: list[dict[str, Any]], plan: int) -> None:
    for d in decisions:
        audit = d["audit"]
        assert set(audit) == AUDIT_KEYS, audit
        assert audit["plan"] == plan
        if d["abstained"]:
            assert audit == {"selected": False, "probability": 0.0, "pool": None, "plan": plan}
        else:
            assert 0.0 < audit["probability"] <= 1.0
            assert audit["pool"] in (("local", "cross") if audit["selected"] else (None,))


def test_decisions_carry_their_audit_in_the_chained_record(server: Server, store: Store) -> None:
    decisions = decide(server, "routing", cases_of("routing", 300, seed=41)).json()["decisions"]
    _check_audits(decisions, plan=0)
    assert any(not d["abstained"] for d in decisions)
    decided = next(d for d in decisions if not d["abstained"])
    with server.client("read") as c:
        logged = c.get(f"/v1/decisions/{decided['decision_id']}").json()
    assert logged["audit"] == decided["audit"]
    assert server.env["KEEL_DECISION_LOG_URL"].startswith("sqlite:///")
    path = server.env["KEEL_DECISION_LOG_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        (text,) = db.execute(
            "SELECT record FROM decisions WHERE decision_id = ?", (decided["decision_id"],)
        ).fetchone()
    assert json.loads(text)["audit"] == decided["audit"]
    done = run_keel(cli_env(store, KEEL_DECISION_LOG_URL=server.env["KEEL_DECISION_LOG_URL"]), "verify-log")
    assert done.returncode == 0, done.stdout + done.stderr


def test_feedback_names_the_reviewer_pool_and_refuses_an_unknown_one(server: Server) -> None:
    decisions = decide(server, "routing", cases_of("routing", 50, seed=42)).json()["decisions"]
    decided = next(d for d in decisions if not d["abstained"])
    body = {"decision_id": decided["decision_id"], "final_outcome": decided["outcome"], "actor": "rev-x"}
    with server.client("feedback") as c:
        plain = c.post("/v1/feedback", json=body)  # an existing client: no pool, nothing changes
        assert plain.status_code == 201, plain.text
        assert plain.json()["reviewer_pool"] is None and plain.json()["reviewer_segment"] is None
        cross = c.post(
            "/v1/feedback",
            json={**body, "actor": "rev-y", "reviewer_pool": "cross", "reviewer_segment": "APAC"},
        )
        assert cross.status_code == 201, cross.text
        assert (cross.json()["reviewer_pool"], cross.json()["reviewer_segment"]) == ("cross", "APAC")
        bad = c.post("/v1/feedback", json={**body, "actor": "rev-z", "reviewer_pool": "elsewhere"})
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"][0]["field"] == "reviewer_pool"
    with server.client("read") as c:
        feedback = c.get(f"/v1/decisions/{decided['decision_id']}").json()["feedback"]
    assert [(f["actor"], f["reviewer_pool"]) for f in feedback] == [("rev-x", None), ("rev-y", "cross")]


def test_a_recorded_plan_reaches_a_running_server_and_the_history(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'decisions.db'}"
    keys = make_keys(url, "audit")
    srv = start_server(store, tmp_path, url, extra_env={"KEEL_AUDIT_REFRESH_SECONDS": "0.5"})
    srv.keys = keys
    env = cli_env(store, KEEL_DECISION_LOG_URL=url)
    try:
        cases = cases_of("routing", 600, seed=43)
        before = decide(srv, "routing", cases[:300]).json()["decisions"]
        _check_audits(before, plan=0)
        out = tmp_path / "plan.json"
        planned = run_keel(
            env, "audit", "plan", "routing", "--detect", "2", "--within", "3", "--power", "0.9",
            "--budget", "0.5", "--out", str(out),
        )  # fmt: skip
        assert planned.returncode == 0, planned.stdout + planned.stderr
        plan = json.loads(out.read_text())
        regions = {c["region"] for c in cases[:300]}
        assert plan["field"] == "region" and set(plan["probabilities"]) <= {*regions, "None"}
        assert all(0 < p <= 1 for p in plan["probabilities"].values())
        assert plan["audited_share"] <= 0.5 + 1e-6
        assert "audit plan by region" in planned.stdout and "probability" in planned.stdout
        # Every cell at 1: the new plan shows in each decided case once the server has it.
        plan["probabilities"] = dict.fromkeys(plan["probabilities"], 1.0)
        plan["default_probability"] = 1.0
        out.write_text(json.dumps(plan))
        recorded = run_keel(
            env, "audit", "set", "routing", "--plan", str(out), "--reason", "all in", "--actor", "ana"
        )
        assert recorded.returncode == 0, recorded.stdout + recorded.stderr
        assert "audit plan v1 recorded by ana" in recorded.stdout
        assert "planned to detect 2x" in recorded.stdout

        def picked_up() -> bool:
            got = decide(srv, "routing", cases[300:320]).json()["decisions"]
            return all(d["audit"]["plan"] == 1 for d in got)

        wait_until(picked_up, 30, lambda: "the server still decides under the default plan")
        after = decide(srv, "routing", cases[320:]).json()["decisions"]
        _check_audits(after, plan=1)
        assert all(d["audit"]["selected"] for d in after if not d["abstained"])
        shown = run_keel(env, "history", "routing")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "audit plan v1" in shown.stdout and "reason: all in" in shown.stdout
        assert "planned to detect 2x" in shown.stdout
        body = json.loads(run_keel(env, "history", "routing", "--json").stdout)
        assert [p["version"] for p in body["audit_plans"]] == [1] and "seed" not in body["audit_plans"][0]
        assert body["audit_plans"][0]["detect_ratio"] == 2.0
        with srv.client("read") as c:
            served = c.get("/v1/models/routing/history").json()
        assert served["audit_plans"][0]["actor"] == "ana" and "moves" in served
        assert run_keel(env, "verify-log").returncode == 0
        bad = run_keel(env, "audit", "set", "routing", "--plan", str(tmp_path / "missing.json"))
        assert bad.returncode != 0 and "cannot read plan file" in bad.stderr
        out.write_text(json.dumps({**plan, "target": {**plan["target"], "detect": 0.5}}))
        bad = run_keel(env, "audit", "set", "routing", "--plan", str(out))
        assert bad.returncode != 0 and "target.detect = 0.5" in bad.stderr
    finally:
        srv.stop()


def test_a_logged_batch_run_samples_like_live_decisions(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    from keel.decision_log.audit_plans import append_plan
    from keel.decision_log.log_key import NO_KEYS

    source = tmp_path / "cases.parquet"
    cases = cases_of(BATCH_MODEL, 200, seed=44)
    pd.DataFrame(cases).to_parquet(source)
    url = f"sqlite:///{tmp_path / 'decisions.db'}"
    db = Database(url)
    db.create_schema()
    append_plan(db, NO_KEYS, BATCH_MODEL, "region", {}, 0.5, 0.5, "ana", "batch test")
    db.dispose()
    score_logged(store, source, tmp_path / "out.jsonl", url)
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(records) == len(cases)
    with sqlite3.connect(tmp_path / "decisions.db") as conn:
        logged = {
            json.loads(r)["decision_id"]: json.loads(r)["audit"]
            for (r,) in conn.execute("SELECT record FROM decisions")
        }
    decided = [r for r in records if not r["abstained"]]
    assert decided and all(r["audit"]["plan"] == 1 and r["audit"]["probability"] == 0.5 for r in decided)
    assert all(logged[r["decision_id"]] == r["audit"] for r in records)
    assert DecisionLog(Database(url)).verify().ok


def test_upgrade_from_0006_keeps_rows_and_adds_the_audit_tables(tmp_path: Path) -> None:
    """A log written at 0006 (here: one taken back to it) upgrades to 0007 with its rows, still verifying."""
    from alembic import command
    from alembic.config import Config

    from keel.decision_log import migrations
    from keel.decision_log.migrations import HEAD
    from tests.integration.test_log_store import row

    url = f"sqlite:///{tmp_path / 'decisions.db'}"
    log = DecisionLog(Database(url)).open()
    try:
        log.append("decisions", [row(i) for i in range(1, 4)])
    finally:
        log.close()
    db = Database(url)
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    with db.engine.execution_options(keel_write=True).begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0006")
    names = set(sa.inspect(db.engine).get_table_names())
    assert "audit_plans" not in names and "audit_secret" not in names and "decisions" in names
    db.dispose()

    log = DecisionLog(Database(url)).open()  # opening brings it to head, rows kept
    try:
        log.append("decisions", [row(4)])
    finally:
        log.close()
    upgraded = Database(url)
    assert {"audit_plans", "audit_secret"} <= set(sa.inspect(upgraded.engine).get_table_names())
    with upgraded.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == HEAD >= "0007"
        assert conn.execute(sa.text("SELECT count(*) FROM decisions")).scalar_one() == 4
        secret = conn.execute(sa.text("SELECT secret FROM audit_secret")).scalar_one()
    assert len(bytes.fromhex(secret)) == 32
    assert DecisionLog(upgraded).verify().ok
    upgraded.dispose()


def test_the_simulator_reviews_audits_by_the_named_pool(server: Server) -> None:
    from keel.cli.simulate import SimulationConfig, run_simulation

    cfg = SimulationConfig(
        url=server.url,
        key=server.keys["all"],
        models=("routing",),
        cases=400,
        scenario="review_practice",
        seed=5,
    )
    report = run_simulation(cfg)
    assert report.errors == {} and report.audits > 0 and report.audits >= report.cross_audits
    path = server.env["KEEL_DECISION_LOG_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        records = [json.loads(r) for (r,) in db.execute("SELECT record FROM feedback")]
    pooled = [r for r in records if r.get("reviewer_pool") and r["actor"].startswith("reviewer-")]
    assert len(pooled) >= report.audits
    assert all(
        r["reviewer_segment"] and r["actor"].startswith(f"reviewer-{r['reviewer_segment'].lower()}-")
        for r in pooled
    )


def test_plans_on_postgresql_are_shared_by_every_reader(tmp_path: Path) -> None:
    """On a PostgreSQL log the migration stores one secret, plans append with increasing versions
    from two writers, and two readers (two replicas) agree on every model's plan and default."""
    import threading

    from keel.decision_log.audit_plans import PlanBook, append_plan, plan_rows
    from keel.decision_log.log_key import NO_KEYS
    from tests.conftest import fresh_postgres_database

    with fresh_postgres_database("keel_audits") as url:
        db = Database(url)
        db.create_schema()
        errors: list[BaseException] = []

        def record(reason: str) -> None:
            try:
                append_plan(db, NO_KEYS, "routing", "region", {"EMEA": 0.3}, 0.05, 0.2, "ana", reason)
            except BaseException as exc:  # reported below
                errors.append(exc)

        writers = [threading.Thread(target=record, args=(f"w{i}",)) for i in range(2)]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        assert not errors
        assert sorted(r["version"] for r in plan_rows(db, "routing")) == [1, 2]
        one, two = PlanBook(), PlanBook()
        one.refresh(db)
        two.refresh(Database(url))
        assert one.plan("routing").version == two.plan("routing").version == 2
        assert one.plan("routing").seed == two.plan("routing").seed
        assert one.plan("discount_band").seed == two.plan("discount_band").seed
        assert one.plan("discount_band").version == 0
        db.dispose()


def test_verify_log_walks_the_audit_plan_chain_and_finds_an_edited_plan(tmp_path: Path) -> None:
    """An audit plan is a chained row like an alias move: `keel verify-log`'s walk covers it, so
    raising a segment's probability behind Keel's back shows as a broken chain."""
    from keel.decision_log.audit_plans import append_plan
    from keel.decision_log.log_key import NO_KEYS
    from keel.decision_log.verify import verify

    db = Database(f"sqlite:///{tmp_path / 'log.db'}")
    try:
        db.create_schema()
        for p in (0.1, 0.2):
            append_plan(db, NO_KEYS, "routing", "region", {"EMEA": p}, 0.05, 0.2, "tester", "plan")
        intact = verify(db)
        assert intact.ok and intact.heads["audit_plans"][0] == 2, intact
        with db.engine.begin() as conn:
            edit = "UPDATE audit_plans SET probabilities = '{\"EMEA\": 0.9}' WHERE version = 1"
            conn.execute(sa.text(edit))
        broken = verify(db)
        assert not broken.ok and broken.table == "audit_plans" and broken.bad_seq == 1, broken
    finally:
        db.dispose()


def _plan_as_0009_wrote_it(db: Database) -> None:
    """A plan row chained before migration 0012: the ten columns of that release, no detect_ratio."""
    from keel.decision_log.chain import AUDIT_PLAN_COLUMNS, row_hash
    from keel.decision_log.rows import read_head, write_head

    columns = AUDIT_PLAN_COLUMNS[:-1]
    values = ("routing", 1, "region", '{"EMEA": 0.3}', 0.05, 0.2, "ab" * 32, "2026-11-01T00:00:00+00:00",
              "ana", "before 0012")  # fmt: skip
    conn = db.connect()
    try:
        with db.transaction(conn, lock_heads=["audit_plans"]):
            _, prev = read_head(conn, "audit_plans")
            link = row_hash(prev, values)
            sql = (
                f"INSERT INTO audit_plans ({', '.join(columns)}, prev_hash, row_hash, key_id) "
                f"VALUES ({', '.join('?' * (len(columns) + 3))}) RETURNING seq"
            )
            seq = int(conn.execute(sql, (*values, prev, link, None)).fetchone()[0])
            write_head(conn, "audit_plans", seq, link)
    finally:
        conn.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_0012_records_the_detect_target_and_old_plans_still_verify(kind: str, tmp_path: Path) -> None:
    """A plan chained before 0012 verifies unchanged after it; a plan recorded with its --detect
    target carries it under the row hash (editing the target, or giving the old plan one, shows),
    and the current plan reads it back."""
    from keel.decision_log.audit_plans import append_plan, latest_plans, plan_rows
    from keel.decision_log.log_key import NO_KEYS
    from keel.decision_log.migrations import HEAD, downgrade, upgrade
    from keel.decision_log.verify import verify
    from tests.conftest import fresh_postgres_database

    with fresh_postgres_database("keel_0012") as pg_url:
        db = Database(f"sqlite:///{tmp_path / 'decisions.db'}" if kind == "sqlite" else pg_url)
        try:
            upgrade(db.engine, db.is_postgres, to="0009")
            _plan_as_0009_wrote_it(db)
            db.create_schema()  # to head: the column joins, the old row untouched
            with db.engine.begin() as conn:
                assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == HEAD
            assert verify(db).ok
            assert latest_plans(db)["routing"].detect_ratio is None
            append_plan(db, NO_KEYS, "routing", "region", {"EMEA": 0.4}, 0.05, 0.2, "ana", "planned", 2.5)
            assert [r["detect_ratio"] for r in plan_rows(db, "routing")] == [None, 2.5]
            current = latest_plans(db)["routing"]
            assert (current.version, current.detect_ratio, current.public()["detect_ratio"]) == (2, 2.5, 2.5)
            assert verify(db).ok
            for edit in ("UPDATE audit_plans SET detect_ratio = 1.5 WHERE version = 2",
                         "UPDATE audit_plans SET detect_ratio = 3 WHERE version = 1",
                         "UPDATE audit_plans SET detect_ratio = NULL WHERE version = 2"):  # fmt: skip
                with db.engine.begin() as conn:
                    conn.execute(sa.text(edit))
                broken = verify(db)
                assert not broken.ok and broken.table == "audit_plans", (edit, broken)
                restore = "UPDATE audit_plans SET detect_ratio = CASE version WHEN 2 THEN 2.5 END"
                with db.engine.begin() as conn:
                    conn.execute(sa.text(restore))
            assert verify(db).ok
            with pytest.raises(ValueError, match="detect_ratio"):
                append_plan(db, NO_KEYS, "routing", None, {}, 0.05, 0.2, "ana", "bad", 1.0)
            downgrade(db.engine, db.is_postgres, "0009")  # and back: only the column goes
            with db.engine.begin() as conn:
                assert "detect_ratio" not in {c["name"] for c in sa.inspect(conn).get_columns("audit_plans")}
        finally:
            db.dispose()


def test_the_sequential_test_is_tuned_to_the_active_plans_detect_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without KEEL_MONITOR_SEQUENTIAL_DETECT_RATIO the monitor's sequential mixture follows the
    model's current audit plan's --detect (rho = log(R)^2) and its verdict says so; the setting,
    when given, wins over the plan."""
    import math
    from datetime import UTC, datetime, timedelta

    from keel.decision_log.audit_plans import append_plan
    from keel.decision_log.log_key import NO_KEYS
    from keel.monitoring.log_reader import LogReader
    from keel.monitoring.monitor import _sequential
    from keel.monitoring.settings import MonitorSettings

    monkeypatch.delenv("KEEL_MONITOR_SEQUENTIAL_DETECT_RATIO", raising=False)
    db = Database(f"sqlite:///{tmp_path / 'log.db'}")
    end = datetime.now(UTC)
    start = end - timedelta(days=7)
    try:
        db.create_schema()
        reader = LogReader(db)

        def state(settings: MonitorSettings) -> Any:
            found = _sequential("routing", reader, start, end, settings, ["region"])
            assert found is not None
            return found

        plain = state(MonitorSettings())
        assert (plain.rho, plain.tuned_to) == (MonitorSettings().sequential_rho, "")
        append_plan(db, NO_KEYS, "routing", "region", {"EMEA": 0.3}, 0.05, 0.2, "ana", "plan", 3.0)
        planned = state(MonitorSettings())
        assert planned.rho == pytest.approx(math.log(3.0) ** 2)
        assert planned.tuned_to == "tuned to a 3x increase (audit plan v1's --detect)"
        # A plan without a target (a hand-written file) leaves the default design.
        append_plan(db, NO_KEYS, "routing", "region", {"EMEA": 0.3}, 0.05, 0.2, "ana", "no target")
        assert state(MonitorSettings()).rho == MonitorSettings().sequential_rho
        append_plan(db, NO_KEYS, "routing", "region", {"EMEA": 0.3}, 0.05, 0.2, "ana", "plan", 1.5)
        assert state(MonitorSettings()).rho == pytest.approx(math.log(1.5) ** 2)
        chosen = state(MonitorSettings(sequential_detect_ratio=2.0))
        assert chosen.rho == pytest.approx(math.log(2.0) ** 2)
        assert "KEEL_MONITOR_SEQUENTIAL_DETECT_RATIO" in chosen.tuned_to
    finally:
        db.dispose()
