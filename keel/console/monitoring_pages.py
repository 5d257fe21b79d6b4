"""The Monitoring pages: runs per model, one model's runs and trend charts, one run's report.

Everything is read from the runs `keel monitor` records in the decision log's database (a few
rows per model and run, never the decisions themselves) and drawn here with console templates;
Starlette runs these sync handlers in its thread pool, off the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from keel.console.charts import Series, line_chart
from keel.console.monitoring_source import limits_words, recommendation_words, value_words
from keel.monitoring import checks
from keel.monitoring.checks import Unit
from keel.monitoring.runs import TrendPoint

if TYPE_CHECKING:
    from keel.console.app import Console

__all__ = ["monitoring", "monitoring_model", "run_page", "trend_charts"]

LIST_RUNS = 10
"""Runs per model on the Monitoring page; a model's own page lists MODEL_RUNS."""
MODEL_RUNS = 50
CHART_RUNS = 100
TOP_FINDINGS = 12


def _not_recorded(console: Console, request: Request) -> Response:
    return console.render(
        request,
        "error.j2",
        404,
        title="No monitoring runs",
        message="No monitoring runs are recorded: this console has no run store.",
    )


def monitoring(console: Console, request: Request) -> Response:
    source = console.monitoring
    if source is None:
        return _not_recorded(console, request)
    served = set(console.rt.models.snapshot.models)
    names = sorted(set(source.models()) | served)
    models = [{"name": n, "runs": source.runs(n, LIST_RUNS)} for n in names]
    return console.render(
        request, "monitoring.j2", models=models, words=recommendation_words, limit=LIST_RUNS
    )


def monitoring_model(console: Console, request: Request) -> Response:
    source = console.monitoring
    if source is None:
        return _not_recorded(console, request)
    model = request.path_params["model"]
    listed = source.runs(model, MODEL_RUNS)
    if not listed and model not in console.rt.models.snapshot.models:
        return console.render(
            request, "error.j2", 404, title="No such model", message=f"No runs of {model} are recorded."
        )
    points = source.trend(model, CHART_RUNS)
    return console.render(
        request,
        "monitoring_model.j2",
        model=model,
        runs=listed,
        limit=MODEL_RUNS,
        charts=trend_charts(model, points),
        points=points,
        words=recommendation_words,
    )


def trend_charts(model: str, points: list[TrendPoint]) -> list[dict[str, Any]]:
    """The five trend charts over runs, each with the numbers its table alternative shows."""
    labels = [p.generated_at[5:16].replace("T", " ") for p in points]
    slug = "".join(ch if ch.isalnum() else "-" for ch in model)

    def chart(
        key: str,
        title: str,
        y_label: str,
        series: Series,
        percent: bool,
        reference: float | None = None,
        reference_label: str = "",
    ) -> dict[str, Any]:
        svg: Markup = line_chart(
            f"chart-{slug}-{key}",
            title,
            labels,
            series,
            y_label,
            percent=percent,
            reference=reference,
            reference_label=reference_label,
        )
        return {"key": key, "title": title, "svg": svg, "percent": percent}

    return [
        chart(
            "override",
            f"Override rate of {model} with its 95% interval",
            "override rate",
            Series(
                "override rate",
                [p.override_rate for p in points],
                [p.override_low for p in points],
                [p.override_high for p in points],
            ),
            True,
        ),
        chart(
            "abstention",
            f"Abstention rate of {model}",
            "abstention rate",
            Series("abstention rate", [p.abstention_rate for p in points]),
            True,
        ),
        chart(
            "drift",
            f"Share of drifted input features of {model}",
            "drifted share",
            Series("drift share", [p.drift_share for p in points]),
            True,
        ),
        chart(
            "process",
            f"Process drift of {model}: worst segment's override-rate ratio",
            "rate ratio",
            Series("process-drift ratio", [p.process_drift_ratio for p in points]),
            False,
        ),
        chart(
            "sequential",
            f"Sequential evidence of {model} (share of what an alarm needs)",
            "evidence",
            Series("sequential evidence", [p.sequential_evidence for p in points]),
            False,
            reference=1.0,
            reference_label="alarm",
        ),
    ]


def run_page(console: Console, request: Request) -> Response:
    source = console.monitoring
    if source is None:
        return _not_recorded(console, request)
    run_id = request.path_params["run_id"]
    found = source.run(run_id)
    if found is None:
        return console.render(
            request, "error.j2", 404, title="No such run", message=f"No monitoring run {run_id} is recorded."
        )
    summary: Mapping[str, Any] = found.summary or {}
    order = {c.name: i for i, c in enumerate(checks.registered())}
    verdicts = sorted(
        found.verdicts, key=lambda v: (order.get(v["check"], len(order)), found.verdicts.index(v))
    )
    rows = []
    for v in verdicts:
        check = checks.get(v["check"])
        unit: Unit = check.unit if check else "number"
        rows.append(
            {
                "check": v["check"],
                "title": checks.title(v["check"]),
                "status": v["status"],
                "value": value_words(unit, v["value"]),
                "limits": limits_words(unit, v.get("warn"), v.get("alert")),
                "detail": v.get("detail", ""),
                "remedy": check.remedy if check else "",
            }
        )
    process = sorted(
        _dicts((summary.get("process_drift") or {}).get("findings")),
        key=lambda f: (not _flagged(f), _float(f.get("p_holm"), 1.0)),
    )
    overrides = summary.get("overrides") or {}
    concept = summary.get("concept_drift") or {}
    return console.render(
        request,
        "run.j2",
        run=found,
        has_summary=found.summary is not None,
        verdicts=rows,
        recommendation=recommendation_words(found.recommendation),
        counts=summary.get("counts") or {},
        process=process[:TOP_FINDINGS],
        process_total=len(process),
        pairs=sorted(
            _dicts(overrides.get("top_pairs", overrides.get("pairs"))),
            key=lambda p: -_float(p.get("count"), 0.0),
        )[:20],
        reasons=_dicts(overrides.get("top_reasons", overrides.get("reasons")))[:10],
        by_segment=_segment_rates(overrides.get("by_segment")),
        overall=overrides.get("overall") if isinstance(overrides.get("overall"), dict) else None,
        concept=concept if isinstance(concept, dict) else {},
        concept_findings=_dicts(concept.get("findings") if isinstance(concept, dict) else None)[
            :TOP_FINDINGS
        ],
        caveat=summary.get("reviewed_caveat"),
        notes=[str(n) for n in summary.get("notes") or []],
        flagged=_flagged,
        reviewers=_reviewer_rows(summary),
    )


def _reviewer_rows(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """Reviewer agreement from the run's decision-consistency section: per segment value with a
    kappa, those whose reviewers agree less than elsewhere first (None: not in this run)."""
    consistency = summary.get("consistency")
    reviewers = consistency.get("reviewers") if isinstance(consistency, dict) else None
    if not isinstance(reviewers, dict) or not isinstance(reviewers.get("by_segment"), dict):
        return None
    rows = [
        {
            "field": f,
            "value": v.get("value"),
            "here": v["kappa"],
            "rest": v.get("rest") or {},
            "agrees_less": bool(v.get("agrees_less")),
            "explained_by": [str(x) for x in v.get("explained_by") or []],
            # Runs stored before p_lower existed compared every value they show.
            "compared": v.get("p_lower", 0.0) is not None,
        }
        for f, values in reviewers["by_segment"].items()
        for v in _dicts(values)
        if isinstance(v.get("kappa"), dict) and v["kappa"].get("kappa") is not None
    ]
    rows.sort(key=lambda r: (not r["agrees_less"], _float(r["here"].get("kappa"), 1.0)))
    return {
        "overall": reviewers.get("overall") or {},
        "n_pairs": reviewers.get("n_pairs", 0),
        "sources": reviewers.get("sources") or {},
        "sentences": [str(x) for x in reviewers.get("sentences") or []],
        "rows": rows[:TOP_FINDINGS],
        "total": len(rows),
    }


def _segment_rates(by_segment: Any, top: int = 30) -> list[dict[str, Any]]:
    """Override rate per segment value ({field: {value: {count, n, rate, low, high}}}), the
    highest first, at most `top`."""
    rows = [
        {"field": f, "value": v, **r}
        for f, values in (by_segment.items() if isinstance(by_segment, dict) else ())
        if isinstance(values, dict)
        for v, r in values.items()
        if isinstance(r, dict) and isinstance(r.get("rate"), int | float)
    ]
    return sorted(rows, key=lambda r: (-float(r["rate"]), -_float(r.get("n"), 0.0)))[:top]


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The mappings of a list in a stored summary (anything else in it is left out)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _flagged(finding: Mapping[str, Any]) -> bool:
    return bool(finding.get("flagged", finding.get("significant")))


def _float(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
