"""Checks on audited cases: the certified guarantee against the unbiased (inverse-probability
weighted) selective error, and local against cross reviewers (a review practice, or a wrong model)."""

from __future__ import annotations

from keel.monitoring.audit import INVESTIGATE, PRACTICE, RULE, PracticeFinding
from keel.monitoring.checks.registry import Check, Measurement
from keel.monitoring.checks.words import pct
from keel.monitoring.evidence import Evidence
from keel.monitoring.settings import MonitorSettings

__all__ = ["AUDITED_ERROR", "PRACTICE_VS_RULE", "SEVERITY", "separates"]

Limits = tuple[float, float] | None
SEVERITY = {RULE: 2.0, PRACTICE: 1.0, INVESTIGATE: 1.0}
"""The practice-vs-rule value: 2 the model is wrong somewhere (alert), 1 a review practice or a
question the audits cannot answer yet (warn), 0 nothing stands out."""


def _audited_error(ev: Evidence, s: MonitorSettings, limits: Limits) -> Measurement:
    audit = ev.audit
    alpha = audit.alpha if audit is not None and audit.alpha else 0.0
    warn, alert = (alpha + x for x in s.audited_error_excess)
    if audit is None or audit.selective_error.value is None or not alpha:
        return Measurement(
            None,
            "no audit-selected decided cases with a review, or no certified alpha",
            thresholds=(warn, alert),
        )
    e = audit.selective_error
    return Measurement(
        e.low,
        f"selective error {pct(e.value)} (95% CI {pct(e.low)}–{pct(e.high)}) estimated from {e.n} audited "
        f"decided cases (inverse-probability weighted; effective n {e.effective_n:.0f}) vs certified "
        f"{pct(alpha)}; judged on the lower bound. {audit.n_discretionary} discretionary reviews apart "
        f"(override rate {pct(audit.discretionary_override_rate.rate)}, not a random sample)",
        thresholds=(warn, alert),
    )


def _practice_vs_rule(ev: Evidence, s: MonitorSettings, limits: Limits) -> Measurement:
    audit = ev.audit
    if audit is None or audit.n_audited == 0:
        return Measurement(None, "no audit-selected decided cases with a review in the window")
    findings = audit.findings
    if not findings:
        return Measurement(
            0.0,
            f"no segment's audited overturns stand out ({audit.n_audited} audited, "
            f"{audit.n_audited_cross} by cross reviewers)",
        )
    return Measurement(
        max(SEVERITY[f.reading] for f in findings), "; ".join(f.sentence for f in findings[:3])
    )


def separates(ev: Evidence, keys: set[tuple[str, str]]) -> str | None:
    """None when cross-review evidence says the model is wrong in one of `keys` (or in the coarser
    value holding it): a retrain is then supported. Otherwise the sentence saying why not."""
    audit = ev.audit
    found: list[PracticeFinding] = []
    for key in keys:
        for k in (key, ev.parents.get(key)):
            found += [
                f for f in (audit.findings if audit else []) if k is not None and (f.field, f.value) == k
            ]
    if any(f.reading == RULE for f in found):
        return None
    if found and all(f.reading == PRACTICE for f in found):
        return (
            "cross reviewers agree with the model there as often as elsewhere, so this is a local "
            "review practice (process drift), not a changed rule: talk to that team"
        )
    asks = [f"{f.more_cross_audits} in {f.field} {f.value}" for f in found if f.more_cross_audits]
    return (
        "every label here comes from the segment's own reviewers, so a local review practice and a "
        "changed rule look the same: investigate"
        + (f"; cross audits that would decide it: {', '.join(asks)}" if asks else "; send cross audits there")
    )


AUDITED_ERROR = Check(
    "audited_error", "Selective error on audited cases vs the certified alpha", "higher_is_worse", None,
    "share",
    "the guarantee does not hold on a random sample: read practice vs rule before retraining.",
    _audited_error, settings=("audited_error_excess",),
)  # fmt: skip
PRACTICE_VS_RULE = Check(
    "practice_vs_rule", "Review practice or wrong model (cross review)", "higher_is_worse", (1.0, 2.0),
    "number",
    "model wrong there: retrain from reviewed cases; review practice: talk to that team; "
    "investigate: send the cross audits named.",
    _practice_vs_rule, retrain=True, settings=("practice_p", "practice_reading_p", "min_reviewed"),
)  # fmt: skip
