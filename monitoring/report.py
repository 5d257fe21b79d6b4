"""The monitoring report: Evidently's own drift HTML, a reviewer's index.html and summary.json.

The index page is self-contained (inline CSS, plots as base64 PNG) and links Evidently's pages
instead of inlining them, because each one carries ~4 MB of JavaScript. Every value that can come
from users or logged data (segment names, override reasons, actors) goes through `esc`.
Sections with no data keep their heading and say so, so an empty window still reads as checked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keel.monitoring import checks
from keel.monitoring import widgets as h
from keel.monitoring.checks import Unit
from keel.monitoring.drift import json_safe
from keel.monitoring.pages import percent, render
from keel.monitoring.reviewer_agreement import Kappa, describe
from keel.monitoring.segments import SegmentParents
from keel.monitoring.verdict import STATUS_RANK, Verdict, worst_status

__all__ = [
    "EVIDENTLY_PAGES",
    "REVIEWED_CAVEAT",
    "SECTION_HEADINGS",
    "STATUS_WORDS",
    "ReportPaths",
    "ReportSections",
    "add_to_workspace",
    "recommendation_words",
    "write_report",
]

log = logging.getLogger("keel.monitor.report")

EVIDENTLY_PAGES = {
    "feature_drift": "Feature drift (Evidently)",
    "prediction_drift": "Prediction drift (Evidently)",
    "explanation_drift": "Explanation drift (Evidently)",
}
SECTION_HEADINGS = (
    "All checks", "Process drift", "Segment mix", "Concept drift by segment", "Early warning",
    "Evidently reports", "Feature drift", "Prediction drift", "Abstention and policy interventions",
    "Explanation drift", "Human overrides", "Quality on reviewed cases", "Audited estimates (random sample)",
    "What this window could detect", "Champion vs shadow and canary",
)  # fmt: skip
REVIEWED_CAVEAT = (
    "Reviewed cases are not a random sample: humans review abstentions, policy escalations and "
    "cases someone chose to check, so these figures describe that subset, not all decisions."
)


@dataclass
class ReportSections:
    """Already-computed plain data for one model's report; nothing here is recomputed.

    Expected shapes (extra keys are shown as they are):
    - verdicts: `Verdict` records, in the order of the check registry
    - feature/prediction/explanation_drift: `DriftResult.to_dict()` / `PredictionDriftResult.to_dict()`
    - overrides: {overall: {...}, per_class, per_version: [{...}] or {key: {...}},
      per_segment: {field: [{value, n, overrides, rate, ci_low, ci_high}] or {value: {...}}},
      pairs: [{model_outcome, final_outcome, count}], reasons: [{reason, count}]}
    - quality: {accuracy, ..., caveat?}; process_drift: {findings: [{sentence, p_value, flagged, ...}]}
    - snapshots: {"feature_drift" | "prediction_drift" | "explanation_drift": Evidently Snapshot}
    """

    window: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    recommendation: str = ""
    feature_drift: dict[str, Any] | None = None
    prediction_drift: dict[str, Any] | None = None
    explanation_drift: dict[str, Any] | None = None
    overrides: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    process_drift: dict[str, Any] | None = None
    segment_mix: dict[str, Any] | None = None
    concept_drift: dict[str, Any] | None = None
    expected_quality: dict[str, Any] | None = None
    sequential: dict[str, Any] | None = None
    challengers: dict[str, Any] | None = None
    """keel.monitoring.challenger_compare.compare: champion vs shadow / canary in the window."""
    workload: dict[str, Any] | None = None
    """keel.monitoring.workload.workload: the review queue, answer times and override pairs the
    console's aggregate pages read from the stored run."""
    audit: dict[str, Any] | None = None
    """keel.monitoring.audit.AuditReport.to_dict(): unbiased estimates from audited cases and the
    local-vs-cross readings."""
    detection_limits: list[dict[str, Any]] | None = None
    """keel.monitoring.detection.DetectionLimit.to_dict() per check and segment value."""
    consistency: dict[str, Any] | None = None
    """keel.models.consistency_report.ConsistencyReport.to_dict(): counterfactual flip rates."""
    notes: list[str] = field(default_factory=list)
    snapshots: dict[str, Any] = field(default_factory=dict, repr=False)
    segment_parents: SegmentParents = field(default_factory=dict)
    """Segment values inside another's (entity -> region): the page nests their findings; not in
    summary.json, whose shape readers depend on."""

    @classmethod
    def from_results(
        cls,
        feature: Any = None,
        prediction: Any = None,
        explanation: Any = None,
        verdicts: Sequence[Verdict] = (),
        **plain: Any,
    ) -> ReportSections:
        """Fill from drift result objects (anything with `to_dict()`) and verdicts."""
        drift = {"feature_drift": feature, "prediction_drift": prediction, "explanation_drift": explanation}
        return cls(
            **{k: r.to_dict() for k, r in drift.items() if r is not None},
            snapshots={k: r.snapshot for k, r in drift.items() if getattr(r, "snapshot", None) is not None},
            verdicts=list(verdicts),
            **plain,
        )

    @property
    def status(self) -> str:
        """The worst verdict; "no_data" only when no check had data."""
        return worst_status(self.verdicts)

    def summary(self, model: str, evidently_files: Mapping[str, str], notes: list[str]) -> dict[str, Any]:
        plain = {k: v for k, v in vars(self).items() if k not in ("snapshots", "notes", "segment_parents")}
        plain["verdicts"] = [v.to_dict() for v in self.verdicts]
        summary: dict[str, Any] = json_safe(
            {"model": model, "generated_at": datetime.now(UTC).isoformat(), "status": self.status}
            | plain
            | {"reviewed_caveat": REVIEWED_CAVEAT, "notes": notes, "evidently_reports": dict(evidently_files)}
        )
        return summary


@dataclass
class ReportPaths:
    out_dir: Path
    index_html: Path
    summary_json: Path
    evidently: dict[str, Path] = field(default_factory=dict)


def write_report(out_dir: Path, model: str, sections: ReportSections) -> ReportPaths:
    """Write the Evidently pages, index.html and summary.json for one model into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    notes, pages = list(sections.notes), dict[str, Path]()
    for name, snapshot in sections.snapshots.items():
        if snapshot is None:
            continue
        path = out_dir / f"{name}.html"
        try:
            snapshot.save_html(str(path))
            pages[name] = path
        except Exception as exc:  # the reviewer's page is still worth writing without this one
            log.exception("could not write Evidently page %s", name)
            notes.append(f"Evidently page {name} could not be written: {exc}")
    files = {name: p.name for name, p in pages.items()}
    summary = sections.summary(model, files, notes)
    index = out_dir / "index.html"
    index.write_text(_index_html(model, sections, summary, files), encoding="utf-8")
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return ReportPaths(out_dir, index, summary_path, pages)


def add_to_workspace(workspace_dir: Path, project_name: str, snapshots: Mapping[str, Any]) -> list[str]:
    """Add each snapshot as a run of an Evidently workspace project (created on first use)."""
    from evidently.ui.workspace import Workspace  # lazy: Evidently's import is slow and heavy

    workspace = Workspace(str(workspace_dir))
    found = workspace.search_project(project_name)
    project = found[0] if found else workspace.create_project(project_name, "Keel monitoring runs")
    refs = [workspace.add_run(project.id, s, include_data=False) for s in snapshots.values() if s is not None]
    return [str(r.id) for r in refs]


# -- index.html --------------------------------------------------------------------------------------


def _index_html(model: str, s: ReportSections, summary: dict[str, Any], files: Mapping[str, str]) -> str:
    status = str(summary["status"])
    verdicts = [_verdict_words(v) for v in s.verdicts]
    window = _window_words(s.window)
    findings = [
        {**v, "sentence": f"{v['detail']} (decisions from {window}).", "action": v["remedy"]}
        for v in sorted(verdicts, key=lambda v: -STATUS_RANK[v["status"]])
        if v["status"] in ("warn", "alert")
    ]
    counts = s.counts
    return render(
        "report.html.j2",
        model=model,
        status=status,
        status_words=STATUS_WORDS.get(status, status),
        recommendation_words=recommendation_words(s.recommendation),
        window_text=window,
        counts_text=(
            f"{counts.get('decisions', 0):,} decisions, {counts.get('n_abstained', 0):,} abstained, "
            f"{counts.get('reviewed', 0):,} reviewed by a person; reference version "
            f"{s.versions.get('reference_version', 'n/a')}"
        ),
        findings=findings,
        verdicts=verdicts,
        process_rows=_process_rows(s.process_drift, s.segment_parents),
        process_total=len((s.process_drift or {}).get("findings") or []),
        sequential=s.sequential,
        sequential_path="the decision log (monitor_sequential), shared by every machine running the monitor",
        mix=s.segment_mix,
        concept=s.concept_drift,
        expected=s.expected_quality,
        drift_share=(s.feature_drift or {}).get("drift_share_threshold", 0.4),
        evidently=[(EVIDENTLY_PAGES.get(k, k), f) for k, f in files.items()],
        details=[
            ("Feature drift", _drift_block(s.feature_drift)),
            ("Prediction drift", _prediction_block(s.prediction_drift)),
            ("Abstention and policy interventions", _rates_block(s.prediction_drift)),
            ("Explanation drift", _explanation_block(s.explanation_drift)),
            ("Human overrides", _overrides_block(s.overrides)),
            ("Quality on reviewed cases", _quality_block(s.quality)),
            ("Audited estimates (random sample)", _audit_block(s.audit)),
            ("What this window could detect", _limits_block(s.detection_limits)),
            ("Decision consistency (counterfactual)", _consistency_block(s.consistency)),
            ("Champion vs shadow and canary", render("challengers.html.j2", c=s.challengers)),
            ("Notes", "".join(f"<p class='note'>{h.esc(n)}</p>" for n in summary["notes"])),
        ],
        generated_at=summary["generated_at"],
    )


STATUS_WORDS = {
    "ok": "nothing wrong found",
    "warn": "something to look at",
    "alert": "something is wrong",
    "no_data": "not enough data to judge",
}
_UNIT_WORDS: dict[Unit, Callable[[float], str]] = {
    "share": percent,
    "ratio": lambda v: f"{v:.2f}×" if v else "none",
    "alpha_multiple": lambda v: f"{v:.2f}× certified",
    "evidence": lambda v: f"{v:.3g}× the evidence needed" if v >= 1 else f"{v:.0%} of the evidence needed",
    "count": lambda v: f"{int(v)} input(s)",
    "number": lambda v: f"{v:.4g}",
}


def _number_words(unit: Unit, value: float | None) -> str:
    return "n/a" if value is None else _UNIT_WORDS[unit](float(value))


def _verdict_words(v: Verdict) -> dict[str, Any]:
    check = checks.get(v.check)
    unit: Unit = check.unit if check else "number"
    if v.warn is None and v.alert is None:
        limits = "—"
    elif v.warn == v.alert:
        limits = f"alerts at {_number_words(unit, v.alert)}"
    else:
        limits = f"{_number_words(unit, v.warn)} / {_number_words(unit, v.alert)}"
    return {
        "check": v.check,
        "title": checks.title(v.check),
        "status": v.status,
        "value_words": _number_words(unit, v.value),
        "limits_words": limits,
        "detail": v.detail,
        "remedy": check.remedy if check else "",
    }


def recommendation_words(text: str) -> str:
    """A run's recommendation as the report words it ("Retrain the model: ...", "no action needed.")."""
    if not text or text == "no action":
        return "no action needed."
    head, _, rest = text.partition(": ")
    verb = {"retrain": "Retrain the model", "investigate": "Investigate"}.get(head, head.capitalize())
    return f"{verb}: {rest}." if rest else f"{verb}."


def _window_words(window: Mapping[str, Any]) -> str:
    try:
        start = datetime.fromisoformat(str(window["start"]))
        end = datetime.fromisoformat(str(window["end"]))
    except (KeyError, ValueError):
        return "the requested window"
    hours = (end - start).total_seconds() / 3600
    span = f"{hours:.1f} hours" if hours < 48 else f"{hours / 24:.1f} days"
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC ({span})"


def _process_rows(
    d: Mapping[str, Any] | None, parents: SegmentParents, top: int = 10
) -> list[dict[str, Any]]:
    """The `top` most significant tests, each followed by the tests of the values inside it (an
    entity under its region), so a finding that only repeats its region's reads as part of it."""
    findings = sorted((d or {}).get("findings") or [], key=lambda f: (not _flagged(f), f.get("p_holm", 1.0)))
    shown = findings[:top]
    keys = {(f.get("metric"), f.get("field"), f.get("value")) for f in shown}

    def parent(f: Mapping[str, Any]) -> tuple[Any, Any, Any] | None:
        up = parents.get((str(f.get("field")), str(f.get("value"))))
        return (f.get("metric"), *up) if up and (f.get("metric"), *up) in keys else None

    ordered: list[tuple[Mapping[str, Any], tuple[Any, Any, Any] | None]] = []

    def add(f: Mapping[str, Any], up: tuple[Any, Any, Any] | None) -> None:
        ordered.append((f, up))
        me = (f.get("metric"), f.get("field"), f.get("value"))
        for child in (c for c in shown if parent(c) == me):
            add(child, me)

    for f in shown:
        if parent(f) is None:
            add(f, None)
    rows = []
    for f, up in ordered:
        ratio = f.get("rate_ratio")
        rows.append(
            {
                "field": f.get("field"),
                "value": f.get("value"),
                "within": f"{up[1]} {up[2]}" if up else None,
                "metric": str(f.get("metric", "")).replace("_", " "),
                "rate": f.get("rate"),
                "expected_rate": f.get("expected_rate"),
                "ratio": "n/a" if ratio is None else f"{ratio:.2f}×",
                "n": f.get("n"),
                "p": f"{f.get('p_holm', 1.0):.2g}",
                "significant": _flagged(f),
            }
        )
    return rows


def _drift_block(d: Mapping[str, Any] | None) -> str:
    if not d:
        return h.empty()
    cols = d["columns"]
    lead = (
        f"<p><b>{d['drifted_count']}</b> of {len(cols)} columns drifted (share {h.fmt(d['drifted_share'])}; "
        f"Evidently's dataset-drift share {h.fmt(d['drift_share_threshold'])}). "
        f"Rows: reference {d['reference_rows']}, current {d['current_rows']}.</p>"
    )
    skipped = d.get("skipped") or {}
    return lead + h.table(cols, flag="drifted") + (h.kv_table(skipped, "Not tested") if skipped else "")


def _prediction_block(d: Mapping[str, Any] | None) -> str:
    if not d:
        return h.empty()
    rows = [{"class": c, **v} for c, v in d["outcome_shares"].items()]
    tests = [{"signal": n, **(d[n] or {})} for n in ("outcome", "confidence") if d.get(n)]
    series = {w: [r[w] for r in rows] for w in ("reference", "current")}
    plot = h.grouped_bars([r["class"] for r in rows], series, "Share of cases by most likely class", "share")
    mean = d["confidence_mean"]
    lead = (
        f"<p>Largest change of one class's share: <b>{h.fmt(d['max_share_change'])}</b>. Mean confidence: "
        f"reference {h.fmt(mean['reference'])}, current {h.fmt(mean['current'])}. "
        f"Rows: reference {d['reference_rows']}, current {d['current_rows']}.</p>"
    )
    return lead + plot + h.table(rows) + h.table(tests, flag="drifted")


def _rates_block(d: Mapping[str, Any] | None) -> str:
    if not d:
        return h.empty()
    names = {"abstention": "abstention rate", "policy_intervention": "policy-intervention rate"}
    return h.table([{"rate": label, **d[key]} for key, label in names.items()])


def _explanation_block(d: Mapping[str, Any] | None) -> str:
    if not d:
        return h.empty()
    imp = d.get("importance") or []
    moved = [r for r in imp if r["rank_change"]]
    top = "<b>changed</b>" if d.get("top_feature_changed") else "is unchanged"
    lead = (
        f"<p>The feature the model leans on most {top}. Importance shift (total variation of the "
        f"mean |SHAP| shares): <b>{h.fmt(d.get('importance_shift'))}</b>; {len(moved)} of the top "
        "features changed rank.</p>"
    )
    series = {w: [r[f"{w}_mean_abs"] for r in imp] for w in ("reference", "current")}
    labels = [r["feature"] for r in imp]
    plot = h.grouped_bars(labels, series, "Mean |SHAP| of the top features", "mean |SHAP|") if imp else ""
    return lead + plot + h.table(imp) + "<h3>SHAP distribution drift per feature</h3>" + _drift_block(d)


_OVERRIDE_PARTS = {  # the override module's key first, then the generic one
    ("by_class", "per_class"): "Per class (the model's decided outcome)",
    ("by_segment", "per_segment"): "Per segment",
    ("by_version", "per_version"): "Per model version",
    ("top_pairs", "pairs"): "Most common override pairs (model said, human said)",
    ("top_reasons", "reasons"): "Most common reasons",
}


def _overrides_block(d: Mapping[str, Any] | None) -> str:
    if not d:
        return h.empty()
    known = {k for keys in _OVERRIDE_PARTS for k in keys} | {"overall"}
    counts = {k: v for k, v in d.items() if k not in known}
    parts = [
        h.any_table(counts) if counts else "",
        "<h3>Overall override rate</h3>",
        h.any_table(d.get("overall")),
    ]
    per_segment = d.get("by_segment", d.get("per_segment"))
    segments = _segment_rows(per_segment)
    if segments:
        overall = (d.get("overall") or {}).get("rate")
        parts.append(h.rate_ci_plot(segments, "Override rate per segment (95% interval)", overall))
    for keys, title in _OVERRIDE_PARTS.items():
        parts += [f"<h3>{h.esc(title)}</h3>", h.any_table(next((d[k] for k in keys if k in d), None))]
    return "".join(parts)


def _quality_block(d: Mapping[str, Any] | None) -> str:
    caveat = f"<p class='caveat'>{h.esc((d or {}).get('caveat') or REVIEWED_CAVEAT)}</p>"
    return caveat + h.any_table({k: v for k, v in (d or {}).items() if k != "caveat"})


def _flagged(finding: Mapping[str, Any]) -> bool:
    return bool(finding.get("flagged", finding.get("significant")))


def _segment_rows(per_segment: Any) -> list[tuple[str, float, float, float]]:
    """(field=value, rate, low, high) from {field: {value: {rate, low, high, ...}}} (a
    `monitoring.stats.Proportion` per value) or {field: [{value, rate, ci_low, ci_high}]}."""
    out = []
    for field_name, group in per_segment.items() if isinstance(per_segment, Mapping) else []:
        rows = group.items() if isinstance(group, Mapping) else ((r.get("value"), r) for r in group or [])
        for label, r in rows:
            rate = r.get("rate") if isinstance(r, Mapping) else None
            if rate is None:  # no reviewed cases for this value: nothing to draw
                continue
            low, high = r.get("low", r.get("ci_low", rate)), r.get("high", r.get("ci_high", rate))
            out.append((f"{field_name}={label}", float(rate), float(low), float(high)))
    return out


def _audit_block(d: Mapping[str, Any] | None) -> str:
    if not d or not d.get("n_audited"):
        return "<p class='muted'>No audit-selected decided case has a review in this window.</p>"

    def est(e: Mapping[str, Any]) -> str:
        return f"{percent(e['value'])} (95% CI {percent(e['low'])}–{percent(e['high'])}, {e['n']} audited)"

    lines = [
        f"Selective error {est(d['selective_error'])}; override rate {est(d['override_rate'])}; "
        f"accuracy {est(d['accuracy'])}; certified alpha {percent(d.get('alpha'))}.",
        f"{d['n_audited_cross']} of {d['n_audited']} audits by cross reviewers; "
        f"{d['n_discretionary']} discretionary reviews reported apart (override rate "
        f"{percent(d['discretionary_override_rate']['rate'])}, not a random sample). Method: {d['method']}.",
        *(f["sentence"] for f in d.get("findings") or []),
    ]
    return "".join(f"<p>{h.esc(line)}</p>" for line in lines)


def _consistency_block(d: Mapping[str, Any] | None) -> str:
    if not d:
        return "<p class='muted'>No counterfactual audit in this run.</p>"
    rows = []
    for f in d["fields"]:
        if f["status"] != "measured":
            rows.append(
                f"<li>{h.esc(f['field'])}: invariant by construction (nothing in the decision reads it)</li>"
            )
            continue
        flips = f["flips"]
        rates = ", ".join(
            f"{k} {percent(p['rate'])} ({percent(p['low'])}–{percent(p['high'])})"
            for k, p in ((k, flips[k]) for k in ("decision", "outcome", "route", "abstention"))
        )
        through = ", ".join(x["feature"] for x in f["features"][:3]) or "none found"
        gate = f["gate"]
        declared = (
            f"; declared invariant: lower bound {percent(gate['lower_bound'])} vs tolerance "
            f"{percent(gate['tolerance'])} — {'within' if gate['passed'] else 'EXCEEDED'}"
            if gate
            else ""
        )
        rows.append(
            f"<li>{h.esc(f['field'])} ({f['cases']} cases): {h.esc(rates)}; acts through {h.esc(through)}"
            f"{h.esc(declared)}</li>"
        )
    return (
        f"<p>{h.esc(d['note'])}. Share of cases decided differently with another value of each segment "
        f"field, {percent(d['level'])} exact intervals; `keel consistency` lists value pairs and examples."
        f"</p><ul>{''.join(rows)}</ul>{_reviewers_block(d.get('reviewers'))}"
    )


def _reviewers_block(d: Mapping[str, Any] | None) -> str:
    """Agreement between two reviewers of the same case, per segment value."""
    if d is None:
        return ""
    overall = describe(Kappa(**d["overall"]))
    head = f"Reviewer agreement (Cohen's kappa, two reviewers of the same case): {overall}"
    if not d["n_pairs"]:
        return f"<p>{h.esc(head)}.</p>"
    sources = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in d["sources"].items() if n)
    rows = "".join(
        f"<li>{h.esc(name)}: "
        + h.esc(
            "; ".join(
                f"{v['value']} {describe(Kappa(**v['kappa']))}"
                + (" — agrees less" if v["agrees_less"] else "")
                + (f" — explained by {', '.join(v['explained_by'])}" if v.get("explained_by") else "")
                for v in values
            )
        )
        + "</li>"
        for name, values in d["by_segment"].items()
    )
    lower = "".join(f"<p><strong>{h.esc(x)}</strong></p>" for x in d["sentences"])
    return f"<p>{h.esc(head)}; pairs: {h.esc(sources)}. {h.esc(d['method'])}.</p>{lower}<ul>{rows}</ul>"


def _limits_block(limits: Sequence[Mapping[str, Any]] | None) -> str:
    if not limits:
        return "<p class='muted'>No review check had cases to state a limit on.</p>"
    rows = "".join(
        f"<li>{h.esc(str(lim['check']))}: {h.esc(str(lim['sentence']))} ({lim['n']} cases)</li>"
        for lim in limits
    )
    return (
        "<p>The smallest effect each check would catch in this window with 90% power, for the test it "
        f"runs; smaller ones cannot be ruled out.</p><ul>{rows}</ul>"
    )
