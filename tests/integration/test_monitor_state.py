"""`keel monitor`'s shared state in the decision log (real SQLite and PostgreSQL) and in MLflow
(the session's real store): runs recorded in both, the sequential evidence updated by
compare-and-swap under concurrent monitors, the one-time import of old reports folders, the
migration of an existing 0005 log, and the reads the console makes."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from keel.decision_log import DecisionLog
from keel.decision_log.database import Database
from keel.decision_log.migrations import HEAD, upgrade
from keel.monitoring import runs
from keel.monitoring.experiments import experiment_name
from keel.monitoring.log_reader import LogReader
from keel.monitoring.monitor import MonitorResult
from keel.monitoring.overrides import decided_reviews
from keel.monitoring.publish import record_run
from keel.monitoring.report import ReportSections, write_report
from keel.monitoring.run_history import import_reports
from keel.monitoring.sequential import Chunk, SequentialState, accumulate, load_state
from keel.monitoring.verdict import Verdict, exit_code
from keel.settings import StateSettings
from tests.conftest import Store, cli_env, fresh_postgres_database, run_keel
from tests.integration.test_log_store import row
from tests.integration.test_monitor import fill_log

MODEL = "routing"
WINDOW = {"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-08T00:00:00+00:00"}


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'decisions.db'}")
        database.create_schema()
        yield database
        database.dispose()
        return
    with fresh_postgres_database("keel_monitor") as url:
        database = Database(url)
        database.create_schema()
        yield database
        database.dispose()


def _result(folder: Path, override_rate: float, process: float, status: str = "warn") -> MonitorResult:
    """A run with a real report folder (index.html, summary.json) written by the report writer."""
    verdicts = [
        Verdict("decisions_in_window", "ok", 3000.0, None, None, "3000 decisions"),
        Verdict("feature_drift", "ok", 0.1, 0.2, 0.4, "1 of 10 features drifted"),
        Verdict("override_rate", status, override_rate, 0.08, 0.15, "overrides"),  # type: ignore[arg-type]
        Verdict("process_drift", "ok", process, 1.5, 2.5, "no segment differs"),
    ]
    overall = {"count": 30, "n": 300, "rate": override_rate, "low": override_rate / 2, "high": 0.2}
    sections = ReportSections(
        window=WINDOW,
        versions={"reference_version": "3", "served": {"3": 3000}},
        counts={"decisions": 3000, "n_decisions": 3000, "n_abstained": 300},
        verdicts=verdicts,
        recommendation="investigate: human override rate",
        overrides={"overall": overall},
    )
    paths = write_report(folder, MODEL, sections)
    summary = {"window": WINDOW, "decisions": 3000}
    return MonitorResult(MODEL, sections.status, exit_code(verdicts), sections.recommendation, verdicts,
                         paths, summary)  # fmt: skip


def test_a_run_is_recorded_in_the_log_and_in_mlflow_and_read_back(
    db: Database, store: Store, tmp_path: Path
) -> None:
    artifacts = StateSettings().artifact_location
    first = _result(tmp_path / "r1", 0.10, 0.0, "warn")
    second = _result(tmp_path / "r2", 0.20, 1.8, "alert")
    (run1, problem1), (run2, problem2) = (record_run(db, r, artifacts) for r in (first, second))
    assert problem1 is None and problem2 is None

    listed = runs.runs(db, MODEL)
    assert [r.run_id for r in listed] == [run2, run1]  # newest first
    assert listed[0].summary is None and listed[0].versions["served"] == {"3": 3000}
    assert listed[0].window_start == WINDOW["start"] and listed[0].decisions == 3000
    assert listed[0].report_dir == str(tmp_path / "r2") and listed[0].host
    assert runs.runs(db, MODEL, limit=1)[0].run_id == run2
    full = runs.run(db, run1)
    assert full is not None and full.summary is not None
    assert first.paths is not None
    assert full.summary == json.loads(first.paths.summary_json.read_text())
    assert runs.run(db, "no-such-run") is None

    # MLflow: the model's experiment, one run each, checks as metrics, the report as artifacts.
    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name(MODEL))
    assert experiment is not None
    mlflow_run = client.get_run(str(full.mlflow_run_id))
    assert mlflow_run.info.experiment_id == experiment.experiment_id
    assert mlflow_run.data.metrics["override_rate.value"] == pytest.approx(0.10)
    assert mlflow_run.data.metrics["override_rate.verdict"] == 1
    assert mlflow_run.data.metrics["feature_drift.verdict"] == 0
    assert mlflow_run.data.params["window_start"] == WINDOW["start"]
    assert mlflow_run.data.params["reference_version"] == "3"
    assert mlflow_run.data.tags["keel.monitor_run_id"] == run1
    assert json.loads(mlflow_run.data.tags["keel.versions"])["served"] == {"3": 3000}
    listed_artifacts = {a.path for a in client.list_artifacts(mlflow_run.info.run_id, "report")}
    assert {"report/index.html", "report/summary.json"} <= listed_artifacts

    # The console's reads: latest verdicts in registry order with their trend, chart series.
    (model,) = runs.latest_checks(db, last=5)
    assert model.model == MODEL and model.latest.run_id == run2
    assert [c.check for c in model.checks] == [
        "decisions_in_window", "feature_drift", "override_rate", "process_drift",
    ]  # fmt: skip
    override = model.checks[2]
    assert override.status == "alert" and override.title == "Human override rate"
    assert [(p.run_id, p.status, p.value) for p in override.recent] == [
        (run1, "warn", 0.10), (run2, "alert", 0.20),
    ]  # fmt: skip
    points = runs.trend(db, MODEL)
    assert [p.run_id for p in points] == [run1, run2]  # oldest first
    assert points[1].override_rate == pytest.approx(0.20) and points[1].override_low == pytest.approx(0.10)
    assert points[1].override_high == pytest.approx(0.2) and points[1].abstention_rate == pytest.approx(0.1)
    assert points[1].drift_share == pytest.approx(0.1) and points[1].process_drift_ratio == pytest.approx(1.8)
    assert points[1].sequential_evidence is None
    assert runs.models(db) == [MODEL]


def _units(start: str, end: str) -> int:
    return int(end) - int(start)


def test_concurrent_updates_of_the_sequential_evidence_count_each_chunk_once(db: Database) -> None:
    """Two monitors read the same revision at once; one stores its chunk, the other loses the
    compare-and-swap, reloads and asks for its chunk again from where the winner stopped."""
    both_read = threading.Barrier(2, timeout=30)
    calls: dict[str, list[str | None]] = {"a": [], "b": []}

    def monitor(name: str, end: str) -> SequentialState:
        def next_chunk(state: SequentialState) -> Chunk | None:
            calls[name].append(state.consumed_until)
            if len(calls[name]) == 1:
                both_read.wait()  # both hold the same revision before either stores
            start = state.consumed_until or "0"
            if int(start) >= int(end):
                return None
            return {"EMEA": (1.0, 2.0, 10 * _units(start, end), _units(start, end))}, start, end

        return accumulate(db, MODEL, "region", 0.05, 0.5, next_chunk)

    done: dict[str, SequentialState] = {}
    threads = [
        threading.Thread(target=lambda n=n, e=e: done.setdefault(n, monitor(n, e)))
        for n, e in (("a", "3"), ("b", "5"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads) and set(done) == {"a", "b"}
    state = load_state(db, MODEL, "region", 0.05, 0.5)
    covered = [(c["start"], c["end"]) for c in state.chunks]
    # Contiguous chunks from 0 to 5, each unit counted once, whichever monitor won.
    assert covered in ([("0", "3"), ("3", "5")], [("0", "5")]), covered
    assert state.values["EMEA"].n == 50 and state.consumed_until == "5"
    assert sorted(len(c) for c in calls.values()) == [1, 2]  # exactly one lost race, one retry
    with db.engine.connect() as conn:
        revision = conn.execute(sa.text("SELECT revision FROM monitor_sequential")).scalar_one()
    assert revision == len(state.chunks)


def _old_reports(root: Path) -> Path:
    """A reports folder as releases before 0006 left it: history, a report, sequential evidence."""
    reports = root / "reports"
    folder = _result(reports / MODEL / "20260101T000000Z", 0.12, 0.0).paths
    assert folder is not None
    lines = [
        {"generated_at": "2026-01-01T00:00:05+00:00", "window": WINDOW, "status": "warn",
         "recommendation": "investigate: human override rate", "decisions": 3000,
         "report": str(folder.index_html), "verdicts": {"override_rate": {"status": "warn", "value": 0.12}}},
        {"generated_at": "2026-01-02T00:00:05+00:00", "window": WINDOW, "status": "ok",
         "recommendation": "no action", "decisions": 2000, "report": str(reports / "gone" / "index.html"),
         "verdicts": {"override_rate": {"status": "ok", "value": 0.05}}},
    ]  # fmt: skip
    history = reports / MODEL / "history.jsonl"
    history.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"generated_at": "cut by a cra')
    state = SequentialState(MODEL, "region", 0.05, 0.5)
    state.add_chunk({"EMEA": (4.0, 9.0, 120, 30)}, "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00")
    (reports / MODEL / "sequential.json").write_text(json.dumps(state.to_dict()))
    return reports


def test_old_reports_are_imported_once_even_by_monitors_starting_together(
    db: Database, tmp_path: Path
) -> None:
    reports = _old_reports(tmp_path)
    outcomes: list[tuple[int, int] | None] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(import_reports(db, reports))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes, key=str) == [(2, 1), None]
    imported = runs.runs(db, MODEL)
    assert [r.generated_at for r in imported] == [
        "2026-01-02T00:00:05.000000+00:00", "2026-01-01T00:00:05.000000+00:00",
    ]  # fmt: skip
    older = runs.run(db, imported[1].run_id)
    assert older is not None and older.summary is not None and older.versions["reference_version"] == "3"
    assert older.mlflow_run_id is None and older.report_dir == str(reports / MODEL / "20260101T000000Z")
    assert runs.trend(db, MODEL)[0].override_rate == pytest.approx(0.12)
    newer = runs.run(db, imported[0].run_id)
    assert newer is not None and newer.summary is None
    assert newer.verdicts == [
        {"check": "override_rate", "status": "ok", "value": 0.05, "warn": None, "alert": None, "detail": ""}
    ]
    state = load_state(db, MODEL, "region", 0.05, 0.5)
    assert state.consumed_until == "2026-01-02T00:00:00+00:00" and state.values["EMEA"].n == 120
    # The files stay, but are not read again: a change to them changes nothing.
    (reports / MODEL / "history.jsonl").write_text("")
    (reports / MODEL / "sequential.json").unlink()
    assert import_reports(db, reports) is None
    assert len(runs.runs(db, MODEL)) == 2 and load_state(db, MODEL, "region", 0.05, 0.5).values


def test_a_0005_log_upgrades_to_the_monitoring_tables(tmp_path: Path) -> None:
    with fresh_postgres_database("keel_upgrade") as url:
        for database in (Database(f"sqlite:///{tmp_path / 'old.db'}"), Database(url)):
            upgrade(database.engine, database.is_postgres, to="0005")
            log = DecisionLog(database).open()  # opening brings it to head, rows kept
            try:
                log.append("decisions", [row(1)])
            finally:
                log.close()
            names = set(sa.inspect(database.engine).get_table_names())
            assert {"monitor_runs", "monitor_sequential", "monitor_imports"} <= names
            indexes = {
                i["name"]: i["column_names"] for i in sa.inspect(database.engine).get_indexes("monitor_runs")
            }
            assert indexes["monitor_runs_model_time"] == ["model", "generated_at"]
            with database.engine.connect() as conn:
                assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == HEAD
                assert conn.execute(sa.text("SELECT count(*) FROM decisions")).scalar_one() == 1
            database.dispose()
    assert HEAD >= "0006"  # 0006 or a later revision (0007: audit plans)
    check = sqlite3.connect(tmp_path / "old.db")
    assert check.execute("SELECT count(*) FROM monitor_runs").fetchone() == (0,)
    check.close()


def test_two_monitors_at_once_on_one_postgresql_log_share_one_state(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    """Two `keel monitor` processes on the same PostgreSQL log and registry, started together:
    both runs are recorded, and the sequential evidence holds the window's reviewed cases once."""
    with fresh_postgres_database("keel_monitors") as url:
        fill_log(store, None, MODEL, "segment_overrides", 1500, seed=31, url=url)
        env = cli_env(store, KEEL_DECISION_LOG_URL=url)
        done: dict[int, Any] = {}

        def monitor(i: int) -> None:
            args = ("monitor", MODEL, "--window", "2h", "--out", str(tmp_path / f"out{i}"))
            done[i] = run_keel(env, *args, timeout=600)

        threads = [threading.Thread(target=monitor, args=(i,)) for i in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=700)
        assert set(done) == {1, 2}
        for proc in done.values():
            assert proc.returncode in (1, 2), proc.stdout + proc.stderr
            assert "Traceback" not in proc.stderr
        db = Database(url)
        try:
            recorded = runs.runs(db, MODEL)
            assert {Path(str(r.report_dir)).parent.parent.name for r in recorded} == {"out1", "out2"}
            (state,) = runs.sequential_states(db, MODEL)
            assert state["revision"] == len(state["chunks"]) == 1, state["chunks"]
            chunk = state["chunks"][0]
            reviewed = LogReader(db).reviewed(
                MODEL,
                datetime.fromisoformat(chunk["start"]),
                datetime.fromisoformat(chunk["end"]),
                ["region"],
            )
            decided = decided_reviews(reviewed)
            assert sum(v["n"] for v in state["values"].values()) == len(decided) > 100
            assert datetime.fromisoformat(chunk["end"]) > datetime.now(UTC) - timedelta(hours=1)
        finally:
            db.dispose()
