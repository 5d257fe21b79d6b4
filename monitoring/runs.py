"""What the review console reads about monitoring: runs, the latest verdicts with their recent
trend, and the per-run series its charts draw, all from the decision log's `monitor_runs`.

Every read here is over the stored runs (a few rows per model and hour), never over decisions:
aggregate pages stay as fast at ten million decisions as at ten thousand. Listings leave out
each run's full summary; `run` returns it for the one run a page shows.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from keel.decision_log import monitor_runs as sql
from keel.decision_log.database import Database
from keel.decision_log.monitor_runs import RunRow
from keel.monitoring import checks
from keel.monitoring.checks import Unit
from keel.monitoring.verdict import Status, VerdictDict

__all__ = [
    "CheckPoint",
    "CheckTrend",
    "ModelChecks",
    "MonitorRun",
    "TrendPoint",
    "latest_checks",
    "models",
    "run",
    "runs",
    "sequential_states",
    "trend",
]


@dataclass(frozen=True)
class MonitorRun:
    """One `keel monitor` run of one model."""

    run_id: str
    model: str
    generated_at: str
    """ISO 8601, UTC, microseconds: text order is time order."""
    window_start: str | None
    window_end: str | None
    status: str
    """ok, warn, alert or no_data: the worst verdict."""
    recommendation: str
    decisions: int | None
    versions: dict[str, Any]
    """{"reference_version": "3", "served": {"3": 2900, "4": 100}} (empty for imported runs
    whose summary.json was gone)."""
    verdicts: list[VerdictDict]
    """In the order the run listed them (the check registry's)."""
    report_dir: str | None
    """The report folder on `host` (index.html, summary.json, Evidently pages)."""
    mlflow_run_id: str | None
    """The MLflow run holding the report folder as artifacts (under `report/`); None for runs
    imported from history.jsonl or when MLflow could not be reached."""
    host: str
    summary: dict[str, Any] | None = None
    """summary.json as the run wrote it: only from `run`, None in listings."""


@dataclass(frozen=True)
class CheckPoint:
    run_id: str
    generated_at: str
    status: Status
    """no_data also where that run did not have the check."""
    value: float | None


@dataclass(frozen=True)
class CheckTrend:
    """A check's latest verdict and its recent runs."""

    check: str
    title: str
    unit: Unit
    status: Status
    value: float | None
    warn: float | None
    alert: float | None
    detail: str
    recent: list[CheckPoint]
    """The model's last runs, oldest first, ending with the latest."""


@dataclass(frozen=True)
class ModelChecks:
    model: str
    latest: MonitorRun
    checks: list[CheckTrend]
    """Registered checks in registry order, then checks the registry no longer has."""


@dataclass(frozen=True)
class TrendPoint:
    """One run's point on the console's trend charts; None where the run had no data for it."""

    run_id: str
    generated_at: str
    window_start: str | None
    window_end: str | None
    status: str
    override_rate: float | None
    override_low: float | None
    """95% Wilson interval of the override rate (the band around its line)."""
    override_high: float | None
    abstention_rate: float | None
    drift_share: float | None
    """Share of input features that drifted."""
    process_drift_ratio: float | None
    """The worst segment's override-rate ratio in the same score bands (0: none flagged)."""
    sequential_evidence: float | None
    """Accumulated evidence as a share of what an alarm needs (>= 1: alarm)."""
    queue_open: float | None = None
    """Cases waiting for a person at the window's end (None: a run from before queue summaries)."""
    queue_age_p50: float | None = None
    """Seconds those cases had waited, median and 90th percentile."""
    queue_age_p90: float | None = None


def _run(row: RunRow) -> MonitorRun:
    return MonitorRun(
        run_id=row.run_id,
        model=row.model,
        generated_at=row.generated_at,
        window_start=row.window_start,
        window_end=row.window_end,
        status=row.status,
        recommendation=row.recommendation,
        decisions=row.decisions,
        versions=json.loads(row.versions),
        verdicts=json.loads(row.verdicts),
        report_dir=row.report_dir,
        mlflow_run_id=row.mlflow_run_id,
        host=row.host,
        summary=json.loads(row.summary) if row.summary else None,
    )


def models(db: Database) -> list[str]:
    """Every model with at least one recorded run, by name."""
    return sql.monitored_models(db)


def runs(db: Database, model: str, limit: int = 50) -> list[MonitorRun]:
    """The model's runs, newest first, at most `limit` (summaries left out)."""
    return [_run(r) for r in sql.recent_runs(db, model, limit)]


def run(db: Database, run_id: str) -> MonitorRun | None:
    """One run with its full summary; None when there is no such run."""
    row = sql.read_run(db, run_id)
    return _run(row) if row is not None else None


def _ordered(names: list[str]) -> list[str]:
    order = {c.name: i for i, c in enumerate(checks.registered())}
    return sorted(names, key=lambda n: (order.get(n, len(order)), names.index(n)))


def latest_checks(db: Database, last: int = 10) -> list[ModelChecks]:
    """Per monitored model (by name): its latest run and each of that run's checks with the
    statuses and values of the model's last `last` runs."""
    by_model: dict[str, list[MonitorRun]] = defaultdict(list)
    for row in sql.latest_runs(db, per_model=max(1, last)):
        by_model[row.model].append(_run(row))
    out = []
    for model in sorted(by_model):
        recent = list(reversed(by_model[model]))  # oldest first
        latest = recent[-1]
        found = {r.run_id: {v["check"]: v for v in r.verdicts} for r in recent}  # run -> check -> verdict
        trends = []
        for name in _ordered([v["check"] for v in latest.verdicts]):
            now = found[latest.run_id][name]
            check = checks.get(name)
            points = [
                CheckPoint(
                    r.run_id,
                    r.generated_at,
                    found[r.run_id][name]["status"] if name in found[r.run_id] else "no_data",
                    found[r.run_id][name]["value"] if name in found[r.run_id] else None,
                )
                for r in recent
            ]
            unit: Unit = check.unit if check else "number"
            trends.append(CheckTrend(
                name, checks.title(name), unit, now["status"], now["value"], now.get("warn"),
                now.get("alert"), now.get("detail", ""), points,
            ))  # fmt: skip
        out.append(ModelChecks(model, latest, trends))
    return out


def trend(db: Database, model: str, limit: int = 100) -> list[TrendPoint]:
    """The model's last `limit` runs as chart points, oldest first."""
    points = []
    for row in reversed(sql.recent_runs(db, model, limit)):
        t = json.loads(row.trend)
        points.append(TrendPoint(
            row.run_id, row.generated_at, row.window_start, row.window_end, row.status,
            t.get("override_rate"), t.get("override_low"), t.get("override_high"),
            t.get("abstention_rate"), t.get("drift_share"), t.get("process_drift_ratio"),
            t.get("sequential_evidence"), t.get("queue_open"), t.get("queue_age_p50"), t.get("queue_age_p90"),
        ))  # fmt: skip
    return points


def sequential_states(db: Database, model: str) -> list[dict[str, Any]]:
    """The model's stored sequential evidence, one per segment field tested: the state as the
    monitor keeps it (field, alpha, rho, consumed_until, chunks, values with s, v, n, events,
    e, max_e; bar; alarms) plus `revision` and `updated_at`."""
    return [
        {**json.loads(r.state), "revision": r.revision, "updated_at": r.updated_at}
        for r in sql.sequential_states(db, model)
    ]
