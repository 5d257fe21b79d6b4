"""Results reach people: run history and trend page, Prometheus textfile, optional webhook.

History is one JSON line per run in `<reports>/<model>/history.jsonl`, and `trend.html` beside it
shows each check's verdict over the runs. Keel's own page rather than Evidently's Workspace UI:
the workspace stores Evidently's drift metrics only, not Keel's verdicts (override, process,
concept, sequential), and it needs a UI server running; a static page opens from any file share.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.monitoring import checks
from keel.monitoring.pages import render
from keel.monitoring.verdict import EXIT_CODES, Verdict

if TYPE_CHECKING:
    from keel.monitoring.monitor import MonitorResult
    from keel.monitoring.settings import MonitorSettings

__all__ = ["HISTORY", "append_history", "in_registry_order", "publish", "read_history", "write_prometheus"]

HISTORY = "history.jsonl"
STATUS_VALUE = {"ok": 0, "warn": 1, "alert": 2, "no_data": -1}


def history_entry(result: MonitorResult) -> dict[str, Any]:
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "window": result.summary.get("window"),
        "status": result.status,
        "recommendation": result.recommendation,
        "decisions": result.summary.get("decisions"),
        "report": str(result.paths.index_html) if result.paths else None,
        "verdicts": {v.check: {"status": v.status, "value": v.value} for v in result.verdicts},
    }


def append_history(out_root: Path, result: MonitorResult) -> Path:
    path = out_root / result.model / HISTORY
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(history_entry(result), default=str) + "\n")
    return path


def read_history(path: Path, last: int = 200) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines()[-last:]:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash is skipped, not fatal
            continue
    return rows


def write_trend(out_root: Path, model: str) -> Path:
    """One column per check in registry order; checks only old runs had (since removed) follow."""
    runs = list(reversed(read_history(out_root / model / HISTORY)))
    seen = {c for run in runs for c in run.get("verdicts", {})}
    names = [c.name for c in checks.registered() if c.name in seen]
    for run in runs:
        names += [c for c in run.get("verdicts", {}) if c not in names]
    columns = [{"name": c, "title": checks.title(c)} for c in names]
    path = out_root / model / "trend.html"
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


def webhook_payload(results: Sequence[MonitorResult]) -> dict[str, Any]:
    return {
        "source": "keel monitor",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "worst_exit_code": max((r.exit_code for r in results), default=0),
        "models": [
            {
                "model": r.model,
                "status": r.status,
                "recommendation": r.recommendation,
                "window": r.summary.get("window"),
                "findings": [
                    {"check": v.check, "status": v.status, "detail": v.detail}
                    for v in r.verdicts
                    if EXIT_CODES.get(v.status, 0) > 0
                ],
                "report": str(r.paths.index_html) if r.paths else None,
            }
            for r in results
        ],
    }


def post_webhook(url: str, results: Sequence[MonitorResult], timeout: float = 10.0) -> None:
    import httpx

    response = httpx.post(url, json=webhook_payload(results), timeout=timeout)
    response.raise_for_status()


def publish(results: Sequence[MonitorResult], out_root: Path, settings: MonitorSettings) -> list[str]:
    """History and trend for every model that ran, then the exports; returns delivery problems
    (the monitor itself ran, so these are reported but do not change the exit status)."""
    problems = []
    for r in results:
        if r.paths is None:
            continue
        append_history(out_root, r)
        write_trend(out_root, r.model)
    if settings.prometheus_file:
        try:
            write_prometheus(Path(os.path.expanduser(settings.prometheus_file)), results)
        except OSError as exc:
            problems.append(f"could not write {settings.prometheus_file}: {exc}")
    if settings.webhook_url and results:
        try:
            post_webhook(settings.webhook_url, results)
        except Exception as exc:  # any transport or HTTP error: say so in one line
            problems.append(f"webhook not delivered: {type(exc).__name__}: {exc}")
    return problems
