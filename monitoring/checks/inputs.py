"""Checks on what the model sees and says, from Evidently's drift results: inputs, outcomes,
abstentions, policy interventions and explanations."""

from __future__ import annotations

from keel.models.frames import SHAP_PREFIX
from keel.monitoring.checks.registry import Check, Measurement
from keel.monitoring.checks.words import pct
from keel.monitoring.drift import PredictionDriftResult
from keel.monitoring.evidence import Evidence
from keel.monitoring.settings import MonitorSettings

__all__ = [
    "ABSTENTION_RATE",
    "EXPLANATION_DRIFT",
    "FEATURE_DRIFT",
    "IMPORTANT_FEATURE_DRIFT",
    "OUTCOME_SHIFT",
    "POLICY_INTERVENTIONS",
]

Limits = tuple[float, float] | None


def _feature_drift(ev: Evidence, s: MonitorSettings, limits: Limits) -> Measurement | None:
    if ev.feature is None:
        return None
    f = ev.feature
    return Measurement(
        f.drifted_share,
        f"{f.drifted_count} of {len(f.columns)} features drifted: {', '.join(f.drifted_columns) or 'none'}",
    )


def _important_feature_drift(ev: Evidence, s: MonitorSettings, limits: Limits) -> Measurement | None:
    if ev.feature is None or ev.explanation is None:
        return None
    ranked = sorted(ev.explanation.importance, key=lambda i: i.reference_rank)
    top = [i.feature for i in ranked][: s.important_features]
    moved = [f for f in top if f in ev.feature.drifted_columns]
    return Measurement(
        float(len(moved)),
        f"drifted among the {len(top)} most important features (reference mean |SHAP|): "
        f"{', '.join(moved) or 'none'}",
    )


def _outcome_shift(ev: Evidence, s: MonitorSettings, limits: Limits) -> Measurement | None:
    if ev.prediction is None:
        return None
    return Measurement(
        ev.prediction.max_share_change,
        "largest change of one outcome's share versus the reference: " + _largest_shift(ev.prediction),
    )


def _abstention_rate(ev: Evidence, s: MonitorSettings, limits: Limits) -> Measurement | None:
    if ev.prediction is None:
        return None
    a = ev.prediction.abstention
    return Measurement(a.difference, f"abstention {pct(a.current)} vs reference {pct(a.reference)}")


def _policy_interventions(ev: Evidence, s: MonitorSettings, limits: Limits) -> Measurement | None:
    if ev.prediction is None:
        return None
    p = ev.prediction.policy_intervention
    return Measurement(p.difference, f"rules fired on {pct(p.current)} vs reference {pct(p.reference)}")


def _explanation_drift(ev: Evidence, s: MonitorSettings, limits: Limits) -> Measurement | None:
    if ev.explanation is None:
        return None
    e = ev.explanation
    detail = (
        f"SHAP distributions moved for {', '.join(c.removeprefix(SHAP_PREFIX) for c in e.drifted_columns)} "
        f"({e.drifted_count} of {len(e.columns)}; a share of {s.explanation_drift_share[0]:.0%} warns)"
        if e.drifted_columns
        else "no feature's SHAP distribution moved"
    )
    return Measurement(
        e.drifted_share, detail + ("; the most important feature changed" if e.top_feature_changed else "")
    )


def _largest_shift(prediction: PredictionDriftResult) -> str:
    if not prediction.outcome_shares:
        return "n/a"
    name, share = max(prediction.outcome_shares.items(), key=lambda kv: abs(kv[1]["difference"]))
    return f"{name} {pct(share['current'])} vs {pct(share['reference'])}"


FEATURE_DRIFT = Check(
    "feature_drift", "Input drift", "higher_is_worse", "feature_drift_share", "share",
    "check the upstream systems feeding the moved inputs; retrain if the change is real.",
    _feature_drift, retrain=True,
)  # fmt: skip
IMPORTANT_FEATURE_DRIFT = Check(
    "important_feature_drift", "Drift in the most important inputs", "higher_is_worse", (1.0, 1.0), "count",
    "an input the model leans on moved: confirm with its owner, then retrain.",
    _important_feature_drift, retrain=True, settings=("important_features",),
)  # fmt: skip
OUTCOME_SHIFT = Check(
    "outcome_shift", "Outcome mix", "higher_is_worse", "outcome_shift", "share",
    "check whether the case mix or a policy changed before trusting the new outcome mix.",
    _outcome_shift, retrain=True,
)  # fmt: skip
ABSTENTION_RATE = Check(
    "abstention_rate", "Abstention rate", "higher_is_worse", "abstention_increase", "share",
    "more cases go to people: check staffing of the review queue and input drift.",
    _abstention_rate, retrain=True,
)  # fmt: skip
POLICY_INTERVENTIONS = Check(
    "policy_interventions", "Policy rule interventions", "higher_is_worse", "intervention_increase", "share",
    "a policy rule fires more often: check recent rule changes and amounts.",
    _policy_interventions,
)  # fmt: skip
EXPLANATION_DRIFT = Check(
    "explanation_drift", "Explanation drift", "higher_is_worse", "explanation_drift_share", "share",
    "the model decides for different reasons: read the feature drift details.",
    _explanation_drift, retrain=True,
)  # fmt: skip
