"""The Review queue and Overrides pages: what each model's latest monitor run stored about its
review workload (keel.monitoring.workload), and the queue's size and age over runs.

Neither page reads the decisions behind its numbers: a run's row holds them, so the pages cost
the same at ten million decisions as at ten thousand. Every count links to a Decisions search
for the run's exact window and the same filters, so the cases behind it are one click away.
The search runs against the log as it is now: a case answered since the run no longer shows
as open there. Only the Queue page's list of open cases searches the log (bounded, keyset).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from keel.console.charts import Series, line_chart
from keel.console.filters import link
from keel.decision_log import search
from keel.decision_log.search import SEGMENT_FIELDS, DecisionQuery
from keel.monitoring.runs import MonitorRun, TrendPoint
from keel.monitoring.workload import AGE_BUCKETS, AUDIT_ROUTE, OVER_LAST

if TYPE_CHECKING:
    from keel.console.app import Console

__all__ = ["duration", "latest_stored", "overrides", "queue"]

RUNS = 100
"""Runs the queue's charts draw (oldest left)."""
OPEN_DAYS = 30
"""How far back the Queue page's list of open cases searches."""
OPEN_ROWS = 50
AGES = [label for label, _ in AGE_BUCKETS] + [OVER_LAST]


def duration(seconds: float | None) -> str:
    """Seconds as a person reads a wait: 45 s, 12 min, 3.5 h, 2.1 d."""
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _models(console: Console) -> list[str]:
    served = set(console.rt.models.snapshot.models)
    return sorted(served | set(console.monitoring.models() if console.monitoring else ()))


def latest_stored(console: Console, model: str) -> tuple[MonitorRun | None, list[TrendPoint]]:
    """The model's newest run that stored a workload summary (None: no such run) and its last
    RUNS runs' chart points, oldest first."""
    if console.monitoring is None:
        return None, []
    points = console.monitoring.trend(model, RUNS)
    newest = next((p for p in reversed(points) if p.queue_open is not None), None)
    return (console.monitoring.run(newest.run_id) if newest else None), points


def _cases(console: Console, run: MonitorRun, workload: Mapping[str, Any], **filters: str) -> str:
    """The Decisions search for the run's window and model with `filters`."""
    window = workload.get("window") or {}
    base = {
        "since": window.get("start") or run.window_start,
        "until": window.get("end") or run.window_end,
        "model": run.model,
        "origin": "live" if workload.get("origins") == ["live"] else "",
    }
    return link(console.paths["console_decisions"], {**base, **filters})


def _segment_rows(
    console: Console,
    run: MonitorRun,
    workload: Mapping[str, Any],
    by_segment: Mapping[str, Any],
    **filters: str,
) -> list[dict[str, Any]]:
    rows = []
    for field, block in by_segment.items():
        for g in block.get("groups", []):
            href = (
                _cases(console, run, workload, **filters, **{field: g["value"]})
                if field in SEGMENT_FIELDS
                else None
            )
            rows.append({**g, "field": field, "link": href})
    return rows


def _route_filters(route: str) -> dict[str, str]:
    # An audited case keeps its route (auto); "queued" then means selected for audit.
    return {"route": "auto"} if route == AUDIT_ROUTE else {"route": route}


def _queue_view(console: Console, run: MonitorRun) -> dict[str, Any]:
    workload = (run.summary or {}).get("workload") or {}
    q, times = workload.get("queue") or {}, workload.get("answer_times") or {}
    waiting = {"queued": "yes", "answered": "no"}
    return {
        "run": run,
        "window": workload.get("window") or {},
        "open": q.get("open", 0),
        "open_link": _cases(console, run, workload, **waiting),
        "age": q.get("age_seconds") or {},
        "oldest": q.get("oldest"),
        "by_age": q.get("by_age") or {},
        "by_route": [
            {**g, "link": _cases(console, run, workload, **waiting, **_route_filters(g["value"]))}
            for g in q.get("by_route", [])
        ],
        "by_segment": _segment_rows(console, run, workload, q.get("by_segment") or {}, **waiting),
        "left_out": sum(int(b.get("left_out", 0)) for b in (q.get("by_segment") or {}).values()),
        "answered": times.get("answered", 0),
        "times_by_route": [
            {
                **g,
                "link": _cases(
                    console,
                    run,
                    workload,
                    answered="yes",
                    **_route_filters(g["value"]),
                    **({"queued": "yes"} if g["value"] == AUDIT_ROUTE else {}),
                ),
            }
            for g in times.get("by_route", [])
        ],
        "times_by_segment": _segment_rows(
            console, run, workload, times.get("by_segment") or {}, answered="yes"
        ),
    }


def _queue_charts(model: str, points: list[TrendPoint]) -> list[dict[str, Any]]:
    kept = [p for p in points if p.queue_open is not None]
    labels = [p.generated_at[5:16].replace("T", " ") for p in kept]
    slug = "".join(ch if ch.isalnum() else "-" for ch in model)
    hours = [None if p.queue_age_p90 is None else p.queue_age_p90 / 3600 for p in kept]
    return [
        {
            "title": f"Open review cases of {model} at each run's window end",
            "svg": line_chart(f"queue-{slug}-open", f"Open review cases of {model} at each run's window end",
                              labels, Series("open cases", [p.queue_open for p in kept]), "open cases"),
            "rows": [(p, str(int(p.queue_open or 0))) for p in kept],
        },
        {
            "title": f"Age of {model}'s open cases, 90th percentile (hours)",
            "svg": line_chart(f"queue-{slug}-age", f"Age of {model}'s open cases, 90th percentile (hours)",
                              labels, Series("age p90 in hours", hours), "hours"),
            "rows": [(p, duration(p.queue_age_p90)) for p in kept],
        },
    ]  # fmt: skip


def queue(console: Console, request: Request) -> Response:
    models = []
    for name in _models(console):
        run, points = latest_stored(console, name)
        models.append({
            "name": name,
            "view": _queue_view(console, run) if run is not None else None,
            "charts": _queue_charts(name, points) if run is not None else [],
        })  # fmt: skip
    now = datetime.now(UTC)
    live = DecisionQuery(
        since=(now - timedelta(days=OPEN_DAYS)).isoformat(),
        until=(now + timedelta(minutes=1)).isoformat(),
        origin="live",
        queued=True,
        answered=False,
    )
    rows, after = search.search(console.db, live, OPEN_ROWS)
    open_search = {
        "since": live.since,
        "until": live.until,
        "origin": "live",
        "queued": "yes",
        "answered": "no",
    }
    return console.render(
        request,
        "queue.j2",
        models=models,
        ages=AGES,
        duration=duration,
        rows=rows,
        more=after is not None,
        open_link=link(console.paths["console_decisions"], open_search),
        open_days=OPEN_DAYS,
        monitoring_wired=console.monitoring is not None,
        decision_path=console.paths["console_decision"],
    )


def _override_view(console: Console, run: MonitorRun) -> dict[str, Any]:
    workload = (run.summary or {}).get("workload") or {}
    found = workload.get("overrides") or {}
    pairs, left_out = [], 0
    for field, block in (found.get("by_segment") or {}).items():
        left_out += int(block.get("left_out", 0))
        for p in block.get("pairs", []):
            decided = {"outcome": p["decided"]} if p["decided"] else {"abstained": "yes"}
            filters = {**decided, "final_outcome": p["final"], "overridden": "yes", field: p["value"]}
            pairs.append({
                **p, "field": field,
                "link": _cases(console, run, workload, **filters) if field in SEGMENT_FIELDS else None,
            })  # fmt: skip
    return {
        "run": run,
        "window": workload.get("window") or {},
        "total": found.get("total", 0),
        "total_link": _cases(console, run, workload, overridden="yes"),
        "pairs": pairs,
        "left_out": left_out,
    }


def overrides(console: Console, request: Request) -> Response:
    models = []
    for name in _models(console):
        run, _ = latest_stored(console, name)
        models.append({"name": name, "view": _override_view(console, run) if run is not None else None})
    return console.render(
        request, "overrides.j2", models=models, monitoring_wired=console.monitoring is not None
    )
