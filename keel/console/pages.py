"""The console's pages: each reads a bounded slice of the runtime, registry or log and renders it.

Starlette runs these (sync) functions in its thread pool: registry and database reads never
hold the event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from keel.console.charts import status_marks
from keel.console.comparison import comparisons
from keel.console.filters import TEXT_FIELDS, decision_query, link
from keel.console.waterfall import waterfall
from keel.console.workload_pages import latest_stored
from keel.decision_log import export, reads, search
from keel.decision_log.search import SEGMENT_FIELDS
from keel.models import registry
from keel.models.history import history_json, shared_history

if TYPE_CHECKING:
    from keel.console.app import Console

__all__ = ["changes", "decision", "decisions", "decisions_csv", "overview"]

ALIASES = (registry.CHAMPION, registry.CHALLENGER, registry.SHADOW, registry.CANARY)
CSV_ROWS = 10_000
"""Most rows one CSV export holds (newest first); narrow the search for more."""


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
    return StreamingResponse(
        export.csv_pieces(console.db, query, CSV_ROWS),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="decisions.csv"', "cache-control": "no-store"},
    )


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
    revisions = [f["record"] for f in reads.feedback_for(console.db, decision_id, row)]
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


# -- Changes ----------------------------------------------------------------------------------
def changes(console: Console, request: Request) -> Response:
    history = shared_history(console.rt.state.log_url)
    snap = console.rt.models.snapshot
    models: list[dict[str, Any]] = []
    for name in sorted(snap.models):
        body = history_json(history, name)
        body["moves"] = list(reversed(body["moves"]))[:200]  # newest first, bounded
        extra = snap.challengers.get(name)
        body["serves_challenger"] = extra is not None and (
            extra.shadow is not None or extra.canary is not None
        )
        # The comparison the latest monitor run stored (keel monitor compares every window it
        # reads): the page reads one row, never the window's decisions.
        run, _ = latest_stored(console, name)
        stored = (run.summary or {}).get("challengers") if run is not None else None
        body["run"] = run
        body["comparison"] = comparisons(stored) if stored else None
        models.append(body)
    return console.render(
        request, "changes.j2", models=models, monitoring_wired=console.monitoring is not None
    )
