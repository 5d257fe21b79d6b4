"""`keel monitor`: one model, one window -> checks, verdicts, Evidently + Keel report, JSON.

What can be aggregated is aggregated in the database (counts, reviewed cases, decided cases
per segment and score band); only the Evidently parts read raw rows, as a systematic sample
whose size the report states.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from keel.models import registry
from keel.monitoring import checks
from keel.monitoring.checks import CheckResult, judge
from keel.monitoring.drift import DriftConfig, explanation_drift, feature_drift, prediction_drift
from keel.monitoring.log_reader import LogReader
from keel.monitoring.overrides import override_report
from keel.monitoring.process_drift import process_drift
from keel.monitoring.quality import quality_report
from keel.monitoring.reference import sealed_reference
from keel.monitoring.report import ReportPaths, ReportSections, write_report
from keel.monitoring.settings import MonitorSettings

from keel.errors import InvalidInput

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
    if summary.n_decisions == 0:
        verdict = CheckResult(
            "decisions_in_window", "no_data", 0, None, None, "no decisions logged in the window"
        )
        return MonitorResult(
            name,
            "no_data",
            checks.COULD_NOT_RUN,
            "could not run: no decisions in the window",
            [verdict],
            None,
            {"window": window},
        )
    # The version that served most of the window provides the reference sample.
    version = max(summary.model_versions.items(), key=lambda kv: kv[1])[0]
    loaded = registry.load(registry.get_version(name, version), cache_dir)
    contract = loaded.model.contract  # the version's sealed contract, not the packaged file
    reference = sealed_reference(loaded.model, version, settings.reference_rows)
    sample, total = reader.sample(name, start, end, contract, settings.sample_rows)

    feature = feature_drift(reference, sample, contract, cfg)
    prediction = prediction_drift(reference, sample, contract.classes, cfg)
    explanation = explanation_drift(reference, sample, contract, cfg)
    reviewed = reader.reviewed(name, start, end, contract.segment_fields)
    overrides = override_report(reviewed, contract.segment_fields)
    quality = quality_report(reviewed, contract.segment_fields, summary, alpha=loaded.model.alpha)
    decided = reader.decided_by_segment(name, start, end, contract.segment_fields, settings.score_bands)
    process = process_drift(
        reviewed, contract.segment_fields, settings.score_bands, decided, alpha=settings.process_drift_p
    )

    verdicts = _verdicts(settings, feature, prediction, explanation, overrides, quality, process)
    recommendation = checks.recommendation(verdicts)
    notes = [
        f"Evidently checks ran on a systematic sample of {len(sample)} of {total} decisions "
        f"(every {max(1, -(-total // max(len(sample), 1)))}-th); counts, override rates and process drift "
        f"use all {total} decisions and {len(reviewed)} reviewed cases."
    ]
    sections = ReportSections.from_results(
        feature=feature,
        prediction=prediction,
        explanation=explanation,
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
        overrides=overrides.to_dict(),
        quality=quality.to_dict(),
        process_drift=process.to_dict(),
        notes=notes,
    )
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
            "feature_drift": {"drifted_columns": feature.drifted_columns, "share": feature.drifted_share},
            "verdicts": [v.to_dict() for v in verdicts],
        },
    )


def _verdicts(
    s: MonitorSettings,
    feature: Any,
    prediction: Any,
    explanation: Any,
    overrides: Any,
    quality: Any,
    process: Any,
) -> list[CheckResult]:
    ranked = sorted(explanation.importance, key=lambda i: i.reference_rank)
    top = [i.feature for i in ranked][: s.important_features]
    moved = [f for f in top if f in feature.drifted_columns]
    out = [
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
            f"SHAP distributions moved for {', '.join(explanation.drifted_columns) or 'no feature'}"
            + ("; the most important feature changed" if explanation.top_feature_changed else ""),
        ),
    ]
    enough = overrides.n_reviewed_decided >= s.min_reviewed
    ov = overrides.overall
    out.append(
        judge(
            "override_rate",
            ov.low if enough else None,
            s.override_rate,
            f"{ov.count} overrides in {ov.n} reviewed decided cases ({_pct(ov.rate)}, 95% CI "
            f"{_pct(ov.low)}–{_pct(ov.high)}); judged on the lower bound",
        )
    )
    acc = quality.accuracy
    out.append(
        judge(
            "reviewed_accuracy",
            acc.rate if acc.n >= s.min_reviewed else None,
            s.reviewed_accuracy,
            f"accuracy {_pct(acc.rate)} on {acc.n} reviewed cases (not a random sample)",
            higher_is_worse=False,
        )
    )
    # Overrides are where reviewers disagree; intervention rates differ by segment by design
    # (rules on amounts), so only override findings drive the verdict; all are in the report.
    flagged = [f for f in process.findings if f.significant and f.metric == "override_rate"]
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
    return out


def _largest_shift(prediction: Any) -> str:
    if not prediction.outcome_shares:
        return "n/a"
    name, share = max(prediction.outcome_shares.items(), key=lambda kv: abs(kv[1]["difference"]))
    return f"{name} {_pct(share['current'])} vs {_pct(share['reference'])}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
