"""The console's pages: each reads a bounded slice of the runtime, registry or log and renders it.

Starlette runs these (sync) functions in its thread pool: registry and database reads never
hold the event loop.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from keel.console.charts import status_marks
from keel.console.comparison import COMPARE_DAYS, comparisons
from keel.console.filters import TEXT_FIELDS, decision_query, link, window
from keel.console.waterfall import waterfall
from keel.decision_log import reads, search
from keel.decision_log.search import SEGMENT_FIELDS
from keel.models import registry
from keel.models.history import history_json, shared_history
from keel.monitoring.challenger_compare import compare

if TYPE_CHECKING:
    from keel.console.app import Console

__all__ = ["changes", "decision", "decisions", "decisions_csv", "overrides", "overview", "queue"]

ALIASES = (registry.CHAMPION, registry.CHALLENGER, registry.SHADOW, registry.CANARY)
CSV_ROWS = 10_000
"""Most rows one CSV export holds (newest first); narrow the search for more."""
QUEUE_DAYS = 30
AGE_BUCKETS = (
    ("under 1 hour", timedelta(hours=1)),
    ("1 to 24 hours", timedelta(days=1)),
    ("1 to 7 days", timedelta(days=7)),
)
CSV_COLUMNS = (
    "decision_id", "created_at", "model", "model_version", "case_id", "caller", "outcome", "abstained",
    "route", "confidence", "final_outcome", "feedback_kind", "origin", *SEGMENT_FIELDS,
)  # fmt: skip


def _params(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items()}


# -- Overview ---------------------------------------------------------------------------------
def overview(console: Console, request: Request) -> Response:
    snap = console.rt.models.snapshot
    problem = None
    try:
        registered: dict[str, registry.RegisteredAliases] | None = registry.keel_models()
    except Exception as exc:  # the registry may be away; what is served is still known
        registered, problem = None, f"the model registry could not be read ({type(exc).__name__})"
    monitored = console.monitoring.overview() if console.monitoring is not None else {}
    models = []
    for name, served in sorted(snap.models.items()):
        loaded = {registry.CHAMPION: served.loaded.ref}
        extra = snap.challengers.get(name)
        if extra is not None:
            for alias, beside in ((registry.SHADOW, extra.shadow), (registry.CANARY, extra.canary)):
                if beside is not None:
                    loaded[alias] = beside.loaded.ref
        aliases = dict(registered[name].aliases) if registered and name in registered else {}
        rows = []
        for alias in ALIASES:
            ref = loaded.get(alias)
            version = ref.version if ref is not None else aliases.get(alias)
            if version is None:
                continue
            tags = ref.tags if ref is not None else _tags(name, version)
            rows.append(
                {
                    "alias": alias,
                    "version": version,
                    "served": ref is not None,
                    "alpha": tags.get("keel.alpha"),
                    "coverage": tags.get("keel.coverage"),
                    "accuracy": tags.get("keel.test_accuracy"),
                    "certified": tags.get("keel.certified"),
                    "share": extra.share if alias == registry.CANARY and extra else None,
                }
            )
        models.append({"name": name, "versions": rows, "monitoring": monitored.get(name)})
    return console.render(
        request,
        "overview.j2",
        models=models,
        problem=problem,
        monitoring_wired=console.monitoring is not None,
        any_runs=bool(monitored),
        marks=status_marks,
        ready=console.rt.models.ready,
    )


def _tags(name: str, version: str) -> dict[str, str]:
    try:
        return registry.get_version(name, version).tags
    except Exception:
        return {}


# -- Decisions --------------------------------------------------------------------------------
def decisions(console: Console, request: Request) -> Response:
    query, form, problems = decision_query(_params(request))
    rows, next_seq = search.search(console.db, query)
    path = console.paths["console_decisions"]
    return console.render(
        request,
        "decisions.j2",
        form=form,
        rows=rows,
        problems=problems,
        models=sorted(console.rt.models.snapshot.models),
        segment_fields=SEGMENT_FIELDS,
        text_fields=TEXT_FIELDS,
        next_link=link(path, {**form, "before": next_seq}) if next_seq is not None else None,
        first_link=link(path, form) if query.before_seq is not None else None,
        csv_link=link(console.paths["console_decisions_csv"], form),
        decision_path=console.paths["console_decision"],
    )


def decisions_csv(console: Console, request: Request) -> Response:
    query, _, _ = decision_query(_params(request))

    def lines() -> Iterator[str]:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for n, row in enumerate(search.stream(console.db, query, CSV_ROWS)):
            segments = row["segments"]
            writer.writerow(
                [
                    *(row[c] for c in CSV_COLUMNS[: -len(SEGMENT_FIELDS)]),
                    *(segments.get(f) for f in SEGMENT_FIELDS),
                ]
            )
            if n % 200 == 0:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
        yield out.getvalue()

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="decisions.csv"', "cache-control": "no-store"},
    )


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: caller-sent text starting like a formula (=, +,
    -, @, tab, CR) gets a leading apostrophe, so opening an export never runs a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def decision(console: Console, request: Request) -> Response:
    decision_id = request.path_params["decision_id"]
    row = reads.decision(console.db, decision_id)
    if row is None:
        return console.render(
            request,
            "error.j2",
            404,
            title="No such decision",
            message=f"No decision {decision_id} is logged.",
        )
    record = row["record"]
    revisions = [f["record"] for f in reads.feedback_for(console.db, decision_id)]
    place = search.chain_place(console.db, console.rt.decisions.keys, decision_id)
    explanation = record.get("explanation_full") or record.get("explanation")
    probabilities = sorted((record.get("probabilities") or {}).items(), key=lambda kv: -float(kv[1]))
    return console.render(
        request,
        "decision.j2",
        row=row,
        record=record,
        inputs=sorted((record.get("inputs") or {}).items()),
        probabilities=probabilities,
        chart=waterfall(explanation),
        revisions=revisions,
        place=place,
        search_path=console.paths["console_decisions"],
    )


# -- Review queue -----------------------------------------------------------------------------
def queue(console: Console, request: Request) -> Response:
    since, until, form, problems = window(_params(request), QUEUE_DAYS)
    now = datetime.now(UTC)
    edges = tuple((now - age).isoformat() for _, age in AGE_BUCKETS)
    groups, oldest = search.open_reviews(console.db, since, until, edges)
    labels = [label for label, _ in AGE_BUCKETS] + ["over 7 days"]
    by_age = Counter[str]()
    by_segment: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    by_route = Counter[tuple[str, str]]()
    first: dict[tuple[str, str], str] = {}
    for g in groups:
        by_age[labels[int(g["age"])]] += int(g["n"])
        by_route[(str(g["model"]), str(g["route"]))] += int(g["n"])
        for f in SEGMENT_FIELDS:
            value = g["segments"].get(f)
            if value is not None:
                key = (f, str(value))
                by_segment[key][labels[int(g["age"])]] += int(g["n"])
                first[key] = min(first.get(key, g["oldest"]), g["oldest"])
    search_path = console.paths["console_decisions"]
    waiting = {**form, "answered": "no", "to_review": "yes", "origin": "live"}
    times, cut = search.outcome_times(console.db, since, until)
    durations: dict[tuple[str, str], list[float]] = defaultdict(list)
    for model, route, segments, decided, answered in times:
        seconds = (datetime.fromisoformat(answered) - datetime.fromisoformat(decided)).total_seconds()
        durations[("route", f"{model} / {route}")].append(seconds)
        for f in SEGMENT_FIELDS:
            if segments.get(f) is not None:
                durations[(f, str(segments[f]))].append(seconds)
    return console.render(
        request,
        "queue.j2",
        form=form,
        problems=problems,
        total=sum(by_age.values()),
        labels=labels,
        by_age=by_age,
        by_route=[
            (f"{model} / {route}", n, link(search_path, {**waiting, "model": model, "route": route}))
            for (model, route), n in sorted(by_route.items(), key=lambda kv: -kv[1])
        ],
        by_segment=[
            (key, ages, link(search_path, {**waiting, key[0]: key[1]}))
            for key, ages in sorted(by_segment.items(), key=lambda kv: (kv[0][0], -sum(kv[1].values())))
        ],
        all_link=link(search_path, waiting),
        first=first,
        oldest=oldest,
        times=sorted((k, len(v), _pct(v, 0.5), _pct(v, 0.9)) for k, v in durations.items()),
        cut=cut,
        decision_path=console.paths["console_decision"],
    )


def _pct(values: list[float], p: float) -> str:
    ordered = sorted(values)
    seconds = ordered[max(0, math.ceil(p * len(ordered)) - 1)]
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


# -- Overrides --------------------------------------------------------------------------------
def overrides(console: Console, request: Request) -> Response:
    since, until, form, problems = window(_params(request))
    rows, cut = search.override_rows(console.db, since, until)
    pairs: Counter[tuple[str, str, str, str, str]] = Counter()
    reasons: dict[tuple[str, str, str, str, str], Counter[str]] = defaultdict(Counter)
    for r in rows:
        for f in SEGMENT_FIELDS:
            value = r["segments"].get(f)
            if value is None:
                continue
            key = (r["model"], f, str(value), str(r["outcome"]), str(r["final_outcome"]))
            pairs[key] += 1
            if r["reason"]:
                reasons[key][str(r["reason"])[:120]] += 1
    path = console.paths["console_decisions"]
    table = [
        {
            "model": model,
            "field": f,
            "value": value,
            "decided": decided,
            "final": final,
            "count": n,
            "reasons": reasons[(model, f, value, decided, final)].most_common(3),
            "link": link(
                path,
                {
                    **form,
                    "model": model,
                    f: value,
                    "outcome": decided,
                    "final_outcome": final,
                    "overridden": "yes",
                },
            ),
        }
        for (model, f, value, decided, final), n in sorted(
            pairs.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[1])
        )
    ]
    return console.render(
        request, "overrides.j2", form=form, problems=problems, table=table, total=len(rows), cut=cut
    )


# -- Changes ----------------------------------------------------------------------------------
def changes(console: Console, request: Request) -> Response:
    history = shared_history(console.rt.state.log_url)
    snap = console.rt.models.snapshot
    end = datetime.now(UTC)
    start = end - timedelta(days=COMPARE_DAYS)
    models: list[dict[str, Any]] = []
    for name in sorted(snap.models):
        body = history_json(history, name)
        body["moves"] = list(reversed(body["moves"]))[:200]  # newest first, bounded
        extra = snap.challengers.get(name)
        # Only a model serving a shadow or canary is compared: the comparison reads the window's
        # decisions, which for a model without one would be work for an empty table.
        if extra is not None and (extra.shadow is not None or extra.canary is not None):
            body["comparison"] = comparisons(compare(console.db, name, start, end))
        else:
            body["comparison"] = None
        models.append(body)
    return console.render(
        request,
        "changes.j2",
        models=models,
        compare_since=start.isoformat(timespec="minutes"),
        compare_until=end.isoformat(timespec="minutes"),
        compare_days=COMPARE_DAYS,
    )
