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

import pandas as pd

from keel.decision_log.audit_plans import latest_plans
from keel.errors import InvalidInput, NotFound
from keel.feature_defs.contract import Contract
from keel.models import registry
from keel.monitoring import checks
from keel.monitoring.audit import audit_report
from keel.monitoring.challenger_compare import compare as compare_challengers
from keel.monitoring.consistency import audit_window
from keel.monitoring.detection import detection_limits
from keel.monitoring.drift import DriftConfig, explanation_drift, feature_drift, prediction_drift
from keel.monitoring.evidence import Evidence
from keel.monitoring.log_reader import LogReader
from keel.monitoring.overrides import decided_reviews, override_report
from keel.monitoring.process_drift import process_drift
from keel.monitoring.quality import quality_report
from keel.monitoring.reference import sealed_reference
from keel.monitoring.report import ReportPaths, ReportSections, write_report
from keel.monitoring.segments import concept_by_segment, expected_quality, segment_mix, segment_parents
from keel.monitoring.sequential import Chunk, SequentialState, accumulate, chunk_statistics
from keel.monitoring.settings import MonitorSettings
from keel.monitoring.verdict import COULD_NOT_RUN, Verdict, exit_code
from keel.monitoring.workload import workload

__all__ = [
    "Evidence",
    "MonitorResult",
    "assess",
    "could_not_run",
    "model_names",
    "monitor_model",
    "parse_window",
    "primary_segment",
]

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
    verdicts: list[Verdict]
    paths: ReportPaths | None
    summary: dict[str, Any] = field(default_factory=dict)


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
    evidence = Evidence(
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
        parents=segment_parents(sample, segments),
    )  # fmt: skip
    primary = primary_segment(segments, settings)
    # Segments another check flags are read against cross reviewers too, so a concept or process
    # finding always gets the reading that decides between a local practice and a wrong model.
    flagged = {(f.field, f.value) for f in evidence.concept.flagged} | {
        (f.field, f.value)
        for f in evidence.process.flagged
        # What the process check alarms on: significant and at least its warning ratio.
        if f.metric == "override_rate" and (f.rate_ratio or 0.0) >= settings.process_drift_ratio[0]
    }
    evidence.audit = audit_report(
        reviewed, segments, alpha, settings.score_bands, settings.practice_p, flagged, settings.min_reviewed,
        settings.practice_reading_p, primary, settings.primary_share,
    )  # fmt: skip
    evidence.limits = detection_limits(
        evidence.process, evidence.concept, evidence.overrides, primary, settings.primary_share,
        settings.override_rate[0], settings.concept_p,
    )  # fmt: skip
    return evidence


def could_not_run(name: str, reason: str, window: dict[str, str]) -> MonitorResult:
    verdict = Verdict(checks.DECISIONS_IN_WINDOW.name, "no_data", None, None, None, reason)
    return MonitorResult(
        name, "no_data", COULD_NOT_RUN, f"could not run: {reason}", [verdict], None, {"window": window}
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
    evidence.sequential = _sequential(name, reader, start, end, settings, contract.segment_fields)
    try:
        evidence.consistency = audit_window(
            reader, name, start, end, settings.consistency_sample_rows, cache_dir
        )
    except Exception as exc:  # the other checks still run; decision_consistency says why it has no data
        evidence.consistency_problem = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"

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
        audit=evidence.audit.to_dict() if evidence.audit else None,
        detection_limits=[limit.to_dict() for limit in evidence.limits],
        consistency=evidence.consistency.to_dict() if evidence.consistency else None,
        notes=notes,
        segment_parents=evidence.parents,
    )
    sections.challengers = compare_challengers(reader.db, name, start, end)
    sections.workload = workload(reader, name, start, end, contract.segment_fields, reviewed)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    paths = write_report(out_root / name / stamp, name, sections)
    status = sections.status
    return MonitorResult(
        name,
        status,
        exit_code(verdicts),
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
    s: MonitorSettings,
    segments: list[str],
) -> SequentialState | None:
    """Fold the decisions no earlier run consumed into the shared evidence (the log's
    `monitor_sequential`), by compare-and-swap against monitors running at the same time."""
    primary = primary_segment(segments, s)
    if primary is None:
        return None

    def next_chunk(state: SequentialState) -> Chunk | None:
        chunk_start = start
        if state.consumed_until:
            chunk_start = max(start, datetime.fromisoformat(state.consumed_until))
        chunk_end = min(end, datetime.now(UTC) - timedelta(hours=s.sequential_settle_hours))
        if chunk_end <= chunk_start:
            return None
        chunk = reader.reviewed(name, chunk_start, chunk_end, [primary])
        # Too little feedback yet: leave the chunk for a later run rather than waste it.
        if len(decided_reviews(chunk)) < s.min_reviewed:
            return None
        return chunk_statistics(chunk, primary, s.score_bands), chunk_start.isoformat(), chunk_end.isoformat()

    # The mixture is tuned to the effect the audits were planned to catch (the active plan's
    # --detect), unless the operator set one; a plan with another target starts a new test.
    plan = latest_plans(reader.db).get(name)
    planned = plan.detect_ratio if plan is not None else None
    state = accumulate(reader.db, name, primary, s.sequential_alpha, s.mixture_rho(planned), next_chunk)
    if s.sequential_detect_ratio is not None:
        ratio = s.sequential_detect_ratio
        state.tuned_to = f"tuned to a {ratio:g}x increase (KEEL_MONITOR_SEQUENTIAL_DETECT_RATIO)"
    elif plan is not None and planned is not None:
        state.tuned_to = f"tuned to a {planned:g}x increase (audit plan v{plan.version}'s --detect)"
    return state


def _verdicts(s: MonitorSettings, ev: Evidence) -> list[Verdict]:
    """Every registered check's verdict (bench.drift_power calls this on its own evidence)."""
    return checks.evaluate(ev, s)
