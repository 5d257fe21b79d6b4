"""Verdicts: each check's value against its (warn, alert) thresholds, and the overall call."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Status = Literal["ok", "warn", "alert", "no_data"]
EXIT_CODES = {"ok": 0, "no_data": 0, "warn": 1, "alert": 2}
COULD_NOT_RUN = 3
"""Monitoring-plugin convention: 0 ok, 1 warning, 2 critical, 3 unknown."""

# Checks whose alert means the model no longer fits its data: retraining is the remedy.
MODEL_CHECKS = frozenset(
    {
        "feature_drift",
        "important_feature_drift",
        "explanation_drift",
        "outcome_shift",
        "abstention_rate",
        "reviewed_accuracy",
        "concept_drift",
    }
)


# What each check is called where people read it (reports, webhook, trend page).
TITLES = {
    "decisions_in_window": "Decisions in the window",
    "feature_drift": "Input drift",
    "important_feature_drift": "Drift in the most important inputs",
    "outcome_shift": "Outcome mix",
    "abstention_rate": "Abstention rate",
    "policy_interventions": "Policy rule interventions",
    "explanation_drift": "Explanation drift",
    "segment_mix": "Segment mix (how cases arrive)",
    "override_rate": "Human override rate",
    "reviewed_accuracy": "Accuracy on reviewed decided cases",
    "concept_drift": "Model wrong in a segment (concept drift)",
    "expected_error": "Expected error from confidences (early warning)",
    "process_drift": "Process drift in this window",
    "sequential_process_drift": "Process drift accumulated over windows",
}


def title(check: str) -> str:
    return TITLES.get(check, check.replace("_", " ").capitalize())


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: Status
    value: float | None
    warn: float | None
    alert: float | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(
    check: str,
    value: float | None,
    thresholds: tuple[float, float],
    detail: str,
    higher_is_worse: bool = True,
) -> CheckResult:
    warn, alert = thresholds
    if value is None:
        return CheckResult(check, "no_data", None, warn, alert, detail)
    if higher_is_worse:
        status: Status = "alert" if value >= alert else "warn" if value >= warn else "ok"
    else:
        status = "alert" if value <= alert else "warn" if value <= warn else "ok"
    return CheckResult(check, status, round(float(value), 6), warn, alert, detail)


def recommendation(results: list[CheckResult]) -> str:
    """no action / investigate / retrain, with the reason in a few words."""
    alerts = [r.check for r in results if r.status == "alert"]
    warns = [r.check for r in results if r.status == "warn"]
    if any(a in MODEL_CHECKS for a in alerts):
        return "retrain: " + ", ".join(title(a).lower() for a in alerts if a in MODEL_CHECKS)
    if alerts or warns:
        return "investigate: " + ", ".join(title(a).lower() for a in alerts + warns)
    return "no action"


def exit_code(results: list[CheckResult]) -> int:
    return max((EXIT_CODES[r.status] for r in results), default=0)
