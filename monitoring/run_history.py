"""The history of monitor runs in the decision log (`monitor_runs`), and the one-time import of the
files older releases kept per machine (`reports/<model>/history.jsonl` and `sequential.json`).

A run's row holds its verdicts, the full summary.json, the few numbers trend charts draw
(`trend_point`), where its report folder is (path on the host that ran it, and the MLflow run
holding it as artifacts) and that host, so every machine sees every run.
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.decision_log import monitor_runs as sql
from keel.decision_log.database import Database
from keel.decision_log.monitor_runs import RunRow, SequentialRow
from keel.monitoring.verdict import VerdictDict

if TYPE_CHECKING:
    from keel.monitoring.monitor import MonitorResult

__all__ = ["LEGACY_HISTORY", "LEGACY_SEQUENTIAL", "import_reports", "new_run_id", "run_row", "trend_point"]

LEGACY_HISTORY = "history.jsonl"
LEGACY_SEQUENTIAL = "sequential.json"
log = logging.getLogger("keel.monitor")


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(key)
    return d


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def trend_point(summary: Mapping[str, Any] | None, verdicts: list[VerdictDict]) -> dict[str, float | None]:
    """What the trend charts draw for one run: the override rate with its 95% interval, the
    abstention rate, the share of drifted inputs, the worst process-drift rate ratio, the
    sequential evidence (a share of what an alarm needs) and the review queue at the window's end
    (open cases, their age p50 and p90 in seconds), each None where the run had no data."""
    values = {v["check"]: _number(v["value"]) for v in verdicts}
    overall = _get(summary, "overrides", "overall") or {}
    abstention = _number(_get(summary, "prediction_drift", "abstention", "current"))
    if abstention is None:
        abstained, decided = _get(summary, "counts", "n_abstained"), _get(summary, "counts", "n_decisions")
        if _number(abstained) is not None and _number(decided):
            abstention = float(abstained) / float(decided)
    drift_share = _number(_get(summary, "feature_drift", "drifted_share"))
    queue = _get(summary, "workload", "queue")
    return {
        "override_rate": _number(overall.get("rate")),
        "override_low": _number(overall.get("low")) if overall.get("rate") is not None else None,
        "override_high": _number(overall.get("high")) if overall.get("rate") is not None else None,
        "abstention_rate": abstention,
        "drift_share": drift_share if drift_share is not None else values.get("feature_drift"),
        "process_drift_ratio": values.get("process_drift"),
        "sequential_evidence": values.get("sequential_process_drift"),
        "queue_open": _number(_get(queue, "open")),
        "queue_age_p50": _number(_get(queue, "age_seconds", "p50")),
        "queue_age_p90": _number(_get(queue, "age_seconds", "p90")),
    }


def _instant(text: str) -> str:
    """One spelling of a moment (UTC, microseconds), so text order is time order across sources."""
    moment = datetime.fromisoformat(text)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _host() -> str:
    return socket.gethostname()


def run_row(result: MonitorResult, run_id: str, mlflow_run_id: str | None) -> RunRow:
    """The `monitor_runs` row of one run, from its result and the summary.json it wrote."""
    written = result.paths.summary_json if result.paths else None
    summary_text = written.read_text(encoding="utf-8") if written and written.is_file() else None
    summary = json.loads(summary_text) if summary_text else {}
    window = result.summary.get("window") or summary.get("window") or {}
    verdicts = [v.to_dict() for v in result.verdicts]
    return RunRow(
        run_id=run_id,
        model=result.model,
        generated_at=_instant(str(summary.get("generated_at") or datetime.now(UTC).isoformat())),
        window_start=window.get("start"),
        window_end=window.get("end"),
        status=result.status,
        recommendation=result.recommendation,
        decisions=result.summary.get("decisions"),
        versions=json.dumps(summary.get("versions") or {}, default=str),
        verdicts=json.dumps(verdicts, default=str),
        trend=json.dumps(trend_point(summary, verdicts)),
        summary=summary_text,
        report_dir=str(result.paths.out_dir) if result.paths else None,
        mlflow_run_id=mlflow_run_id,
        host=_host(),
    )


def new_run_id() -> str:
    return str(uuid.uuid4())


# -- the one-time import of older releases' files ------------------------------------------------


def import_reports(db: Database, out_root: Path) -> tuple[int, int] | None:
    """Read every `<out_root>/<model>/history.jsonl` and `sequential.json` into the log once (per
    host and folder); returns (runs, states) imported, None when this folder was imported before.
    The files stay where they are; nothing reads them afterwards."""
    source = f"{_host()}:{out_root.resolve()}"
    if sql.was_imported(db, source):
        return None
    runs: list[RunRow] = []
    states: list[SequentialRow] = []
    now = datetime.now(UTC).isoformat()
    folders = sorted(p for p in out_root.iterdir() if p.is_dir()) if out_root.is_dir() else []
    for folder in folders:
        history = folder / LEGACY_HISTORY
        if history.is_file():
            runs += [_legacy_run(folder.name, entry) for entry in _history_lines(history)]
        state = folder / LEGACY_SEQUENTIAL
        if state.is_file():
            try:
                raw = json.loads(state.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                log.warning("not imported, unreadable: %s (%s)", state, exc)
                continue
            if isinstance(raw, dict) and raw.get("field"):
                states.append(SequentialRow(folder.name, str(raw["field"]), json.dumps(raw), 1, now))
    return sql.import_once(db, source, now, runs, states)


def _history_lines(path: Path) -> list[dict[str, Any]]:
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash was skipped before, and is now
            continue
        if isinstance(entry, dict) and entry.get("generated_at"):
            try:
                _instant(str(entry["generated_at"]))
            except ValueError:
                continue
            entries.append(entry)
    return entries


def _legacy_run(model: str, entry: dict[str, Any]) -> RunRow:
    """A history line as a run; its summary.json comes along when the report folder still has it."""
    report = entry.get("report")
    report_dir = Path(report).parent if report else None
    summary_text = None
    if report_dir is not None and (report_dir / "summary.json").is_file():
        try:
            summary_text = (report_dir / "summary.json").read_text(encoding="utf-8")
            json.loads(summary_text)
        except (OSError, ValueError):
            summary_text = None
    summary = json.loads(summary_text) if summary_text else {}
    verdicts: list[VerdictDict] = summary.get("verdicts") or [
        {"check": check, "status": v.get("status", "no_data"), "value": v.get("value"), "warn": None,
         "alert": None, "detail": v.get("detail", "")}
        for check, v in (entry.get("verdicts") or {}).items()
    ]  # fmt: skip
    window = entry.get("window") or {}
    return RunRow(
        run_id=new_run_id(),
        model=model,
        generated_at=_instant(str(entry["generated_at"])),
        window_start=window.get("start"),
        window_end=window.get("end"),
        status=str(entry.get("status") or "no_data"),
        recommendation=str(entry.get("recommendation") or ""),
        decisions=entry.get("decisions"),
        versions=json.dumps(summary.get("versions") or {}, default=str),
        verdicts=json.dumps(verdicts, default=str),
        trend=json.dumps(trend_point(summary, verdicts)),
        summary=summary_text,
        report_dir=str(report_dir) if report_dir is not None else None,
        mlflow_run_id=None,
        host=_host(),
    )
