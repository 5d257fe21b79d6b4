"""Checks on what people did with the model's decisions: overrides, accuracy on reviewed cases,
and process drift (segments whose reviewers treat the same cases differently), per window and
accumulated over windows."""

from __future__ import annotations

from keel.monitoring.checks.audits import separates
from keel.monitoring.checks.registry import Check, Measurement
from keel.monitoring.checks.words import nest, pct, stated_limits
from keel.monitoring.evidence import Evidence
from keel.monitoring.process_drift import Finding
from keel.monitoring.settings import MonitorSettings

__all__ = ["OVERRIDE_RATE", "PROCESS_DRIFT", "REVIEWED_ACCURACY", "SEQUENTIAL_PROCESS_DRIFT"]

Limits = tuple[float, float] | None


def _override_rate(ev: Evidence, s: MonitorSettings, limits: Limits) -> Measurement:
    enough = ev.overrides.n_reviewed_decided >= s.min_reviewed
    ov = ev.overrides.overall
    return Measurement(
        ov.low if enough else None,
        f"{ov.count} overrides in {ov.n} reviewed decided cases ({pct(ov.rate)}, 95% CI "
        f"{pct(ov.low)}–{pct(ov.high)}); judged on the lower bound"
        + stated_limits(ev.limits, "override_rate", s.primary_segment),
    )


def _reviewed_accuracy(ev: Evidence, s: MonitorSettings, limits: Limits) -> Measurement:
    # Decided cases only: abstentions are the hard cases by design, judged in the concept check.
    acc = ev.quality.accuracy_decided
    # Every label here comes from the segments' own reviewers, and reviewed cases are not a random
    # sample: a local review practice pulls this accuracy down as much as a wrong model does, and
    # the process-drift test that would point at that segment may lack the power to in one window
    # (the newcomer segment_overrides run headlined retrain through it now and then). So it says
    # retrain only when cross review finds the model wrong somewhere, where segments' reviewers
    # differ, or anywhere when none is found to differ; otherwise its alert is a warning saying so.
    differing = {
        (f.field, f.value)
        for f in ev.process.findings
        if f.significant and f.metric == "override_rate" and (f.rate_ratio or 0.0) >= s.process_drift_ratio[0]
    }
    return Measurement(
        acc.rate if acc.n >= s.min_reviewed else None,
        f"accuracy {pct(acc.rate)} on {acc.n} reviewed cases the model decided (not a random sample)",
        alert_caveat=separates(ev, differing) if differing else separates(ev, _all_findings(ev)),
    )


def _all_findings(ev: Evidence) -> set[tuple[str, str]]:
    """Every value the cross-review audit judged: any "model wrong there" among them supports a retrain."""
    return {(f.field, f.value) for f in (ev.audit.findings if ev.audit else [])}


def _process_drift(ev: Evidence, s: MonitorSettings, limits: Limits) -> Measurement:
    # Overrides are where reviewers disagree; intervention rates differ by segment by design
    # (rules on amounts), so only override findings drive the verdict; all are in the report.
    flagged = [f for f in ev.process.findings if f.significant and f.metric == "override_rate"]
    worst = max((max(f.rate_ratio, 1 / f.rate_ratio) for f in flagged if f.rate_ratio), default=0.0)
    detail = nest(flagged, ev.parents, lambda f: f.sentence, _ratio_words)
    return Measurement(
        worst if flagged else 0.0,
        (detail or "no segment's reviewers differ in the same score bands")
        + stated_limits(ev.limits, "process_drift", s.primary_segment),
    )


def _ratio_words(f: Finding) -> str:
    return "n/a" if f.rate_ratio is None else f"{f.rate_ratio:.1f}× the rest"


def _sequential_process_drift(ev: Evidence, s: MonitorSettings, limits: Limits) -> Measurement | None:
    state = ev.sequential
    if state is None:
        return None
    best = max(state.values.items(), key=lambda kv: kv[1].max_e, default=None)
    if best is None:
        return Measurement(None, "no window consumed yet")
    value, e = best
    rate = e.events / e.n if e.n else 0.0
    return Measurement(
        e.max_e / state.bar,
        f"{state.field} {value}: evidence {e.max_e:.3g} of the {state.bar:.3g} needed over "
        f"{len(state.chunks)} consecutive windows ({e.events} overrides in {e.n} reviewed decided "
        f"cases, {pct(rate)}; false-alarm rate ≤ {state.alpha:.0%} however often this runs"
        f"{'; ' + state.tuned_to if state.tuned_to else ''})",
    )


OVERRIDE_RATE = Check(
    "override_rate", "Human override rate", "higher_is_worse", "override_rate", "share",
    "read the most common override pairs and reasons in the details below.",
    _override_rate, settings=("min_reviewed", "primary_segment"),
)  # fmt: skip
REVIEWED_ACCURACY = Check(
    "reviewed_accuracy", "Accuracy on reviewed decided cases", "lower_is_worse", "reviewed_accuracy", "share",
    "read the override pairs; if they agree on a pattern, retrain from the log.",
    _reviewed_accuracy, retrain=True, settings=("min_reviewed", "process_drift_ratio"),
)  # fmt: skip
PROCESS_DRIFT = Check(
    "process_drift", "Process drift in this window", "higher_is_worse", "process_drift_ratio", "ratio",
    "ask that segment's review lead why the same cases are overridden more often.",
    _process_drift, settings=("process_drift_p", "primary_segment", "primary_share", "score_bands"),
)  # fmt: skip
SEQUENTIAL_PROCESS_DRIFT = Check(
    "sequential_process_drift", "Process drift accumulated over windows", "higher_is_worse", (1.0, 1.0),
    "evidence", "a lasting difference, not a one-off: raise it with that segment's owner.",
    _sequential_process_drift,
    settings=(
        "sequential_alpha", "sequential_rho", "sequential_detect_ratio", "sequential_settle_hours",
        "primary_segment",
    ),
)  # fmt: skip
