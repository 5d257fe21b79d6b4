"""`keel monitor`: one model, one window -> checks, verdicts, Evidently + Keel report, JSON.

What can be aggregated is aggregated in the database (counts, reviewed cases, decided cases
per segment and score band); only the Evidently parts read raw rows, as a systematic sample
whose size the report states.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from keel.errors import InvalidInput, NotFound
from keel.feature_defs.contract import Contract
from keel.models import registry
from keel.models.frames import SHAP_PREFIX
from keel.monitoring import checks
from keel.monitoring.challenger_compare import compare as compare_challengers
from keel.monitoring.checks import CheckResult, judge
from keel.monitoring.drift import (
    DriftConfig,
    DriftResult,
    PredictionDriftResult,
    explanation_drift,
    feature_drift,
    prediction_drift,
)
from keel.monitoring.log_reader import LogReader
from keel.monitoring.overrides import OverrideReport, decided_reviews, override_report
from keel.monitoring.process_drift import ProcessDriftReport, process_drift
from keel.monitoring.quality import QualityReport, quality_report
from keel.monitoring.reference import sealed_reference
from keel.monitoring.report import ReportPaths, ReportSections, write_report
from keel.monitoring.segments import (
    ConceptReport,
    ExpectedQuality,
    MixReport,
    concept_by_segment,
    expected_quality,
    segment_mix,
)
from keel.monitoring.sequential import SequentialState, chunk_statistics, state_path
from keel.monitoring.settings import MonitorSettings

_SPAN = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_window(text: str, now: datetime | None = None) -> tuple[datetime, datetime]:
    """`7d`, `24h`, `30m`, `2w` back from now, or `START..END` in ISO 8601 (UTC if no zone)."""
    now = now or datetime.now(UTC)
    match = _SPAN.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))}), now
    if ".." in text:
        start_text, end_text = text.split("..", 1)
        try:
            start, end = (_aware(datetime.fromisoformat(t.strip())) for t in (start_text, end_text))
        except ValueError as exc:
            raise InvalidInput(f"cannot read window {text!r}: {exc}") from exc
        if start >= end:
            raise InvalidInput(f"window {text!r} ends before it starts")
        return start, end
    raise InvalidInput(f"cannot read window {text!r}; use e.g. 7d, 24h or 2026-11-01..2026-11-08")


def model_names(target: str) -> list[str]:
    """`all`: every model in the registry; otherwise `target`, which must be registered there."""
    names = sorted(registry.keel_model_names())
    if target == "all":
        return names
    if target not in names:
        raise NotFound(f"unknown model {target!r}; registered: {', '.join(names) or 'none'}")
    return [target]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class MonitorResult:
    model: str
    status: str
    exit_code: int
    recommendation: str
    verdicts: list[CheckResult]
    paths: ReportPaths | None
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evidence:
    """Every check's computed result for one window, before thresholds turn them into verdicts."""

    feature: DriftResult | None
    """None (with prediction and explanation) when the Evidently parts were not run."""
    prediction: PredictionDriftResult | None
    explanation: DriftResult | None
    overrides: OverrideReport
    quality: QualityReport
    process: ProcessDriftReport
    mix: MixReport
    concept: ConceptReport
    expected: ExpectedQuality
    sequential: SequentialState | None = None


def primary_segment(segments: list[str], settings: MonitorSettings) -> str | None:
    if settings.primary_segment in segments:
        return settings.primary_segment
    return segments[0] if segments else None


def assess(
    contract: Contract,
    alpha: float | None,
    reference: pd.DataFrame,
    sample: pd.DataFrame,
    reviewed: pd.DataFrame,
    settings: MonitorSettings,
    cfg: DriftConfig,
    decided_by_segment: pd.DataFrame | None = None,
    drift: bool = True,
) -> Evidence:
    """All checks on frames already read: `monitor_model` and `bench.drift_power` share this.
    `drift=False` skips the Evidently parts (seconds per window), for the benchmark's label-only runs."""
    segments = contract.segment_fields
    quality = quality_report(reviewed, segments, alpha=alpha)
    return Evidence(
        feature=feature_drift(reference, sample, contract, cfg) if drift else None,
        prediction=prediction_drift(reference, sample, contract.classes, cfg) if drift else None,
        explanation=explanation_drift(reference, sample, contract, cfg) if drift else None,
        overrides=override_report(reviewed, segments),
        quality=quality,
        process=process_drift(
            reviewed, segments, settings.score_bands, decided_by_segment, alpha=settings.process_drift_p,
            primary=primary_segment(segments, settings), primary_share=settings.primary_share,
        ),
        mix=segment_mix(reference, sample, segments, settings.segment_mix_p),
        concept=concept_by_segment(
            reviewed, segments, alpha, settings.concept_tolerance, settings.min_reviewed, settings.concept_p
        ),
        expected=expected_quality(sample, reference, segments, alpha),
    )  # fmt: skip


def could_not_run(name: str, reason: str, window: dict[str, str]) -> MonitorResult:
    verdict = CheckResult("decisions_in_window", "no_data", None, None, None, reason)
    return MonitorResult(
        name, "no_data", checks.COULD_NOT_RUN, f"could not run: {reason}", [verdict], None, {"window": window}
    )


def monitor_model(
    name: str,
    reader: LogReader,
    start: datetime,
    end: datetime,
    out_root: Path,
    settings: MonitorSettings,
    cache_dir: Path,
    drift_cfg: DriftConfig | None = None,
) -> MonitorResult:
    # Evidently's own pages then call dataset drift where our alert threshold does.
    cfg = drift_cfg or DriftConfig(drift_share=settings.feature_drift_share[1])
    summary = reader.summary(name, start, end)
    window = {"start": start.isoformat(), "end": end.isoformat()}
    if summary.n_decisions < settings.min_decisions:
        return could_not_run(
            name,
            f"{summary.n_decisions} decisions of {name} logged in the window; need at least "
            f"{settings.min_decisions}",
            window,
        )
    # The version that served most of the window provides the reference sample and contract.
    version = max(summary.model_versions.items(), key=lambda kv: kv[1])[0]
    loaded = registry.load(registry.get_version(name, version), cache_dir)
    contract = loaded.model.contract  # the version's sealed contract, not the packaged file
    reference = sealed_reference(loaded.model, version, settings.reference_rows)
    sample, total = reader.sample(name, start, end, contract, settings.sample_rows)
    reviewed = reader.reviewed(name, start, end, contract.segment_fields)
    decided = reader.decided_by_segment(name, start, end, contract.segment_fields, settings.score_bands)
    alpha = loaded.model.alpha
    evidence = assess(contract, alpha, reference, sample, reviewed, settings, cfg, decided)
    assert evidence.feature is not None  # assess ran the drift parts (drift=True)
    evidence.quality = quality_report(reviewed, contract.segment_fields, summary, alpha=alpha)
    evidence.sequential = _sequential(name, reader, start, end, out_root, settings, contract.segment_fields)

    verdicts = _verdicts(settings, evidence)
    recommendation = checks.recommendation(verdicts)
    step = max(1, -(-total // max(len(sample), 1)))
    notes = [
        f"Drift checks compared {len(sample)} of the window's {total} decisions"
        + (f" (one in every {step}, evenly spread over the window)" if step > 1 else "")
        + f" with {len(reference)} reference cases; override rates, accuracy and process drift use all "
        f"{total} decisions and {len(reviewed)} reviewed cases."
    ]
    sections = ReportSections.from_results(
        feature=evidence.feature,
        prediction=evidence.prediction,
        explanation=evidence.explanation,
        verdicts=verdicts,
        window=window,
        versions={"reference_version": version, "served": summary.model_versions},
        counts={
            "decisions": total,
            "sampled": len(sample),
            "reference_rows": len(reference),
            "reviewed": len(reviewed),
            **summary.to_dict(),
        },
        thresholds=settings.model_dump(mode="json"),
        recommendation=recommendation,
        overrides=evidence.overrides.to_dict(),
        quality=evidence.quality.to_dict(),
        process_drift=evidence.process.to_dict(),
        segment_mix=evidence.mix.to_dict(),
        concept_drift=evidence.concept.to_dict(),
        expected_quality=evidence.expected.to_dict(),
        sequential=evidence.sequential.to_dict() if evidence.sequential else None,
        notes=notes,
    )
    sections.challengers = compare_challengers(reader.db, name, start, end)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    paths = write_report(out_root / name / stamp, name, sections)
    status = sections.status
    return MonitorResult(
        name,
        status,
        checks.exit_code(verdicts),
        recommendation,
        verdicts,
        paths,
        {
            "model": name,
            "status": status,
            "recommendation": recommendation,
            "window": window,
            "decisions": total,
            "sample_rows": len(sample),
            "reviewed": len(reviewed),
            "report": str(paths.index_html),
            "summary_json": str(paths.summary_json),
            "feature_drift": {
                "drifted_columns": evidence.feature.drifted_columns,
                "share": evidence.feature.drifted_share,
            },
            "verdicts": [v.to_dict() for v in verdicts],
        },
    )


def _sequential(
    name: str,
    reader: LogReader,
    start: datetime,
    end: datetime,
    out_root: Path,
    s: MonitorSettings,
    segments: list[str],
) -> SequentialState | None:
    """Fold the decisions no earlier run consumed into the stored evidence, and save it."""
    primary = primary_segment(segments, s)
    if primary is None:
        return None
    path = state_path(out_root, name)
    state = SequentialState.load(path, name, primary, s.sequential_alpha, s.sequential_rho)
    chunk_start = start
    if state.consumed_until:
        chunk_start = max(start, datetime.fromisoformat(state.consumed_until))
    chunk_end = min(end, datetime.now(UTC) - timedelta(hours=s.sequential_settle_hours))
    if chunk_end <= chunk_start:
        return state
    chunk = reader.reviewed(name, chunk_start, chunk_end, [primary])
    # Too little feedback yet: leave the chunk for a later run rather than waste it.
    if len(decided_reviews(chunk)) >= s.min_reviewed:
        stats = chunk_statistics(chunk, primary, s.score_bands)
        state.add_chunk(stats, chunk_start.isoformat(), chunk_end.isoformat())
        state.save(path)
    return state


def _verdicts(s: MonitorSettings, ev: Evidence) -> list[CheckResult]:
    out = _drift_verdicts(s, ev.feature, ev.prediction, ev.explanation)
    out.append(_mix_verdict(s, ev.mix))
    enough = ev.overrides.n_reviewed_decided >= s.min_reviewed
    ov = ev.overrides.overall
    out.append(
        judge(
            "override_rate",
            ov.low if enough else None,
            s.override_rate,
            f"{ov.count} overrides in {ov.n} reviewed decided cases ({_pct(ov.rate)}, 95% CI "
            f"{_pct(ov.low)}–{_pct(ov.high)}); judged on the lower bound",
        )
    )
    # Decided cases only: abstentions are the hard cases by design, judged in the concept check.
    acc = ev.quality.accuracy_decided
    out.append(
        judge(
            "reviewed_accuracy",
            acc.rate if acc.n >= s.min_reviewed else None,
            s.reviewed_accuracy,
            f"accuracy {_pct(acc.rate)} on {acc.n} reviewed cases the model decided (not a random sample)",
            higher_is_worse=False,
        )
    )
    process_flagged = {(f.field, f.value) for f in ev.process.findings if f.significant}
    out.append(_concept_verdict(s, ev.concept, process_flagged))
    out.append(_expected_verdict(s, ev.expected))
    # Overrides are where reviewers disagree; intervention rates differ by segment by design
    # (rules on amounts), so only override findings drive the verdict; all are in the report.
    flagged = [f for f in ev.process.findings if f.significant and f.metric == "override_rate"]
    worst = max((max(f.rate_ratio, 1 / f.rate_ratio) for f in flagged if f.rate_ratio), default=0.0)
    out.append(
        judge(
            "process_drift",
            worst if flagged else 0.0,
            s.process_drift_ratio,
            "; ".join(f.sentence for f in flagged[:3])
            or "no segment's reviewers differ in the same score bands",
        )
    )
    if ev.sequential is not None:
        out.append(_sequential_verdict(ev.sequential))
    return out


def _drift_verdicts(
    s: MonitorSettings,
    feature: DriftResult | None,
    prediction: PredictionDriftResult | None,
    explanation: DriftResult | None,
) -> list[CheckResult]:
    if feature is None or prediction is None or explanation is None:
        return []
    ranked = sorted(explanation.importance, key=lambda i: i.reference_rank)
    top = [i.feature for i in ranked][: s.important_features]
    moved = [f for f in top if f in feature.drifted_columns]
    return [
        judge(
            "feature_drift",
            feature.drifted_share,
            s.feature_drift_share,
            f"{feature.drifted_count} of {len(feature.columns)} features drifted: "
            f"{', '.join(feature.drifted_columns) or 'none'}",
        ),
        judge(
            "important_feature_drift",
            float(len(moved)),
            (1.0, 1.0),
            f"drifted among the {len(top)} most important features (reference mean |SHAP|): "
            f"{', '.join(moved) or 'none'}",
        ),
        judge(
            "outcome_shift",
            prediction.max_share_change,
            s.outcome_shift,
            "largest change of one outcome's share versus the reference: " + _largest_shift(prediction),
        ),
        judge(
            "abstention_rate",
            prediction.abstention.difference,
            s.abstention_increase,
            f"abstention {_pct(prediction.abstention.current)} vs "
            f"reference {_pct(prediction.abstention.reference)}",
        ),
        judge(
            "policy_interventions",
            prediction.policy_intervention.difference,
            s.intervention_increase,
            f"rules fired on {_pct(prediction.policy_intervention.current)} vs reference "
            f"{_pct(prediction.policy_intervention.reference)}",
        ),
        judge(
            "explanation_drift",
            explanation.drifted_share,
            s.explanation_drift_share,
            (
                f"SHAP distributions moved for {', '.join(_feature(c) for c in explanation.drifted_columns)} "
                f"({explanation.drifted_count} of {len(explanation.columns)}; "
                f"a share of {s.explanation_drift_share[0]:.0%} warns)"
                if explanation.drifted_columns
                else "no feature's SHAP distribution moved"
            )
            + ("; the most important feature changed" if explanation.top_feature_changed else ""),
        ),
    ]


def _mix_verdict(s: MonitorSettings, mix: MixReport) -> CheckResult:
    flagged = mix.flagged
    worst = max(flagged, key=lambda f: f.ratio, default=None)
    detail = (
        "; ".join(
            f"{f.field} {f.value}: {_pct(f.current_share)} of cases vs {_pct(f.reference_share)} in the "
            f"reference (Holm p={f.p_holm:.2g})"
            for f in flagged[:3]
        )
        or "every segment's mix matches the reference"
    )
    return judge("segment_mix", worst.ratio if worst else 0.0, s.segment_mix_ratio, detail)


def _concept_verdict(
    s: MonitorSettings, concept: ConceptReport, process_flagged: set[tuple[str, str]]
) -> CheckResult:
    flagged = concept.flagged
    alert = concept.tolerated + 2 * s.concept_tolerance
    detail = (
        "; ".join(
            f"{f.field} {f.value}: {_pct(f.rate)} of {f.n} reviewed decided cases overturned "
            f"(95% CI {_pct(f.low)}–{_pct(f.high)}) vs {_pct(concept.tolerated)} tolerated"
            for f in flagged[:3]
        )
        or f"no segment's reviewed error is above {_pct(concept.tolerated)}"
    )
    value = max((f.rate for f in flagged), default=0.0)
    verdict = judge("concept_drift", value, (concept.tolerated, alert), detail)
    if flagged and all((f.field, f.value) in process_flagged for f in flagged) and verdict.status == "alert":
        # Overrides alone cannot tell a changed outcome rule from a local review practice: both
        # raise one segment's overrides in the same score bands. Say so, and do not say retrain.
        detail += (
            "; the same segments' reviewers also differ in the same score bands, so this may be a "
            "local review practice rather than a changed rule: read the override reasons first"
        )
        verdict = replace(verdict, status="warn", detail=detail)
    return verdict


def _expected_verdict(s: MonitorSettings, exp: ExpectedQuality) -> CheckResult:
    if exp.alpha is None or not exp.alpha or exp.expected_error is None:
        return judge("expected_error", None, s.expected_error_ratio, "no certified alpha or no decided cases")
    worst = exp.segments[0] if exp.segments else None
    ratio = max(exp.expected_error, worst.expected_error if worst else 0.0) / exp.alpha
    where = f"; worst {worst.field} {worst.value} {_pct(worst.expected_error)}" if worst else ""
    return judge(
        "expected_error",
        ratio,
        s.expected_error_ratio,
        f"confidences expect {_pct(exp.expected_error)} errors among decided cases vs certified "
        f"{_pct(exp.alpha)}{where} (no feedback needed)",
    )


def _sequential_verdict(state: SequentialState) -> CheckResult:
    best = max(state.values.items(), key=lambda kv: kv[1].max_e, default=None)
    if best is None:
        return judge("sequential_process_drift", None, (1.0, 1.0), "no window consumed yet")
    value, ev = best
    rate = ev.events / ev.n if ev.n else 0.0
    detail = (
        f"{state.field} {value}: evidence {ev.max_e:.3g} of the {state.bar:.3g} needed over "
        f"{len(state.chunks)} consecutive windows ({ev.events} overrides in {ev.n} reviewed decided "
        f"cases, {_pct(rate)}; false-alarm rate ≤ {state.alpha:.0%} however often this runs)"
    )
    return judge("sequential_process_drift", ev.max_e / state.bar, (1.0, 1.0), detail)


def _feature(column: str) -> str:
    return column.removeprefix(SHAP_PREFIX)


def _largest_shift(prediction: Any) -> str:
    if not prediction.outcome_shares:
        return "n/a"
    name, share = max(prediction.outcome_shares.items(), key=lambda kv: abs(kv[1]["difference"]))
    return f"{name} {_pct(share['current'])} vs {_pct(share['reference'])}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
