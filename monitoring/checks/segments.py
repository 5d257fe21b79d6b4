"""Checks by segment: how cases arrive (mix), where the model is wrong on reviewed cases (concept
drift) and, before any feedback, where its confidences expect errors."""

from __future__ import annotations

from keel.monitoring.checks.audits import separates
from keel.monitoring.checks.registry import Check, Measurement
from keel.monitoring.checks.words import nest, pct, stated_limits
from keel.monitoring.evidence import Evidence
from keel.monitoring.settings import MonitorSettings

__all__ = ["CONCEPT_DRIFT", "EXPECTED_ERROR", "SEGMENT_MIX"]

Limits = tuple[float, float] | None


def _segment_mix(ev: Evidence, s: MonitorSettings, limits: Limits) -> Measurement:
    flagged = ev.mix.flagged
    worst = max(flagged, key=lambda f: f.ratio, default=None)
    detail = (
        "; ".join(
            f"{f.field} {f.value}: {pct(f.current_share)} of cases vs {pct(f.reference_share)} in the "
            f"reference (Holm p={f.p_holm:.2g})"
            for f in flagged[:3]
        )
        or "every segment's mix matches the reference"
    )
    return Measurement(worst.ratio if worst else 0.0, detail)


def _concept_drift(ev: Evidence, s: MonitorSettings, limits: Limits) -> Measurement:
    concept = ev.concept
    flagged = concept.flagged
    detail = nest(
        flagged,
        ev.parents,
        lambda f: (
            f"{f.field} {f.value}: {pct(f.rate)} of {f.n} reviewed decided cases overturned "
            f"(95% CI {pct(f.low)}–{pct(f.high)}) vs {pct(concept.tolerated)} tolerated"
        ),
        lambda f: f"{pct(f.rate)} overturned",
    )
    # Overrides alone cannot tell a changed outcome rule from a local review practice: both raise
    # one segment's overrides in the same score bands. Only cross reviewers can: without their
    # evidence that the model is wrong in a flagged segment, the alert reads "investigate".
    caveat = separates(ev, {(f.field, f.value) for f in flagged}) if flagged else None
    return Measurement(
        max((f.rate for f in flagged), default=0.0),
        (detail or f"no segment's reviewed error is above {pct(concept.tolerated)}")
        + stated_limits(ev.limits, "concept_drift", s.primary_segment),
        thresholds=(concept.tolerated, concept.tolerated + 2 * s.concept_tolerance),
        alert_caveat=caveat,
    )


def _expected_error(ev: Evidence, s: MonitorSettings, limits: Limits) -> Measurement:
    exp = ev.expected
    if exp.alpha is None or not exp.alpha or exp.expected_error is None:
        return Measurement(None, "no certified alpha or no decided cases")
    worst = exp.segments[0] if exp.segments else None
    ratio = max(exp.expected_error, worst.expected_error if worst else 0.0) / exp.alpha
    where = f"; worst {worst.field} {worst.value} {pct(worst.expected_error)}" if worst else ""
    return Measurement(
        ratio,
        f"confidences expect {pct(exp.expected_error)} errors among decided cases vs certified "
        f"{pct(exp.alpha)}{where} (no feedback needed)",
    )


SEGMENT_MIX = Check(
    "segment_mix", "Segment mix (how cases arrive)", "higher_is_worse", "segment_mix_ratio", "ratio",
    "ask the process owner why cases arrive differently; the model may still be fine.",
    _segment_mix, settings=("segment_mix_p",),
)  # fmt: skip
CONCEPT_DRIFT = Check(
    "concept_drift", "Model wrong in a segment (concept drift)", "higher_is_worse", None, "share",
    "the outcome rule changed there: retrain from reviewed cases (keel train --from-log).",
    _concept_drift, retrain=True,
    settings=("concept_tolerance", "concept_p", "min_reviewed", "primary_segment"),
)  # fmt: skip
EXPECTED_ERROR = Check(
    "expected_error", "Expected error from confidences (early warning)", "higher_is_worse",
    "expected_error_ratio", "alpha_multiple",
    "the model is unsure on more cases than certified: expect errors; check input drift.",
    _expected_error,
)  # fmt: skip
