"""Results reach people: run history and trend page, MLflow, Prometheus textfile, verdict events.

Each run is a row of the decision log's `monitor_runs` (keel.monitoring.run_history) and an MLflow
run in the model's `keel-monitor/<model>` experiment (keel.monitoring.experiments); `trend.html`
beside the reports shows each check's verdict over the runs, read from the table. Keel's own
page rather than Evidently's Workspace UI:
the workspace stores Evidently's drift metrics only, not Keel's verdicts (override, process,
concept, sequential), and it needs a UI server running; a static page opens from any file share.

Each run's verdict is an `io.keel.monitor.verdict` CloudEvent staged with its row, which the
event dispatcher delivers, signed and retried, to the sinks (KEEL_MONITOR_WEBHOOK_URL is one of
them, keel.events.sinks): monitoring itself never POSTs anywhere, so a slow receiver never
holds a run up and a receiver that was down still gets every verdict.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.decision_log import monitor_runs as sql
from keel.decision_log.database import Database
from keel.events.catalog import monitor_verdict
from keel.monitoring import checks
from keel.monitoring.experiments import log_run
from keel.monitoring.pages import render
from keel.monitoring.run_history import new_run_id, run_row
from keel.monitoring.verdict import Verdict

if TYPE_CHECKING:
    from keel.monitoring.monitor import MonitorResult
    from keel.monitoring.settings import MonitorSettings

__all__ = ["TREND_RUNS", "in_registry_order", "publish", "record_run", "write_prometheus", "write_trend"]

STATUS_VALUE = {"ok": 0, "warn": 1, "alert": 2, "no_data": -1}
TREND_RUNS = 200
"""Runs shown on trend.html, newest first."""


def record_run(db: Database, result: MonitorResult, artifact_location: str | None) -> tuple[str, str | None]:
    """The run as an MLflow run and a `monitor_runs` row with its verdict event (event outbox,
    same transaction); returns (run id, why MLflow has no copy or None). MLflow first, so the row
    can name its run; a run MLflow refused is still recorded."""
    run_id, problem, mlflow_id = new_run_id(), None, None
    row = run_row(result, run_id, None)
    try:
        mlflow_id = log_run(
            run_id, result.model, row.generated_at, result.summary.get("window") or {},
            json.loads(row.versions), result.status, result.recommendation,
            [v.to_dict() for v in result.verdicts], result.paths.out_dir if result.paths else None,
            row.host, artifact_location,
        )  # fmt: skip
    except Exception as exc:  # the run itself happened: say so in one line, keep the row
        words = " ".join(str(exc).split())[:300]
        problem = f"{result.model}: not recorded in MLflow: {type(exc).__name__}: {words}"
    event = monitor_verdict(
        run_id, result.model, row.generated_at, result.status, result.recommendation,
        result.summary.get("window"), row.decisions, json.loads(row.verdicts), row.report_dir,
    )  # fmt: skip
    sql.insert_run(db, replace(row, mlflow_run_id=mlflow_id), [event])
    return run_id, problem


def write_trend(db: Database, out_root: Path, model: str) -> Path:
    """One column per check in registry order; checks only old runs had (since removed) follow."""
    runs: list[dict[str, Any]] = []
    for r in sql.recent_runs(db, model, TREND_RUNS):
        verdicts = json.loads(r.verdicts)
        runs.append({
            "generated_at": r.generated_at,
            "window": {"start": r.window_start, "end": r.window_end} if r.window_start else None,
            "status": r.status,
            "decisions": r.decisions,
            "report": str(Path(r.report_dir) / "index.html") if r.report_dir else None,
            "verdicts": {v["check"]: {"status": v["status"], "value": v["value"]} for v in verdicts},
        })  # fmt: skip
    seen = {c for run in runs for c in run["verdicts"]}
    names = [c.name for c in checks.registered() if c.name in seen]
    for run in runs:
        names += [c for c in run["verdicts"] if c not in names]
    columns = [{"name": c, "title": checks.title(c)} for c in names]
    path = out_root / model / "trend.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render("trend.html.j2", model=model, runs=runs, checks=columns), encoding="utf-8")
    return path


def in_registry_order(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """Registered checks first, in registry order; verdicts of unregistered checks after them."""
    order = {c.name: i for i, c in enumerate(checks.registered())}
    return sorted(verdicts, key=lambda v: order.get(v.check, len(order)))


def write_prometheus(path: Path, results: Sequence[MonitorResult]) -> None:
    """Textfile-collector format, one gauge per model and check; written atomically."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    status = Gauge(
        "keel_monitor_check_status",
        "Monitoring verdict per model and check: 0 ok, 1 warn, 2 alert, -1 no data",
        ["model", "check"],
        registry=registry,
    )
    exit_code = Gauge(
        "keel_monitor_exit_code", "Exit status of the model's last run", ["model"], registry=registry
    )
    stamp = Gauge("keel_monitor_last_run_timestamp_seconds", "When the model was last monitored", ["model"],
                  registry=registry)  # fmt: skip
    now = datetime.now(UTC).timestamp()
    for r in results:
        for v in in_registry_order(r.verdicts):
            status.labels(r.model, v.check).set(STATUS_VALUE[v.status])
        exit_code.labels(r.model).set(r.exit_code)
        stamp.labels(r.model).set(now)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


def publish(
    results: Sequence[MonitorResult],
    out_root: Path,
    settings: MonitorSettings,
    db: Database,
    artifact_location: str | None,
) -> list[str]:
    """Record every model that ran (log table, MLflow) and rewrite its trend page, then the
    exports; returns delivery problems (the monitor itself ran, so these are reported but do not
    change the exit status). `artifact_location`: where a new MLflow experiment keeps artifacts."""
    problems = []
    for r in results:
        if r.paths is None:
            continue
        _, problem = record_run(db, r, artifact_location)
        if problem:
            problems.append(problem)
        write_trend(db, out_root, r.model)
    if settings.prometheus_file:
        try:
            write_prometheus(Path(os.path.expanduser(settings.prometheus_file)), results)
        except OSError as exc:
            problems.append(f"could not write {settings.prometheus_file}: {exc}")
    return problems
