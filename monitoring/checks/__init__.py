"""Every monitoring check, registered in the order its verdict is listed.

A new check is one module (its calculation and its `Check`) plus one entry in `BUILT_IN`, or a
`register(...)` call from anywhere before the monitor runs (that is how tests add one).
"""

from __future__ import annotations

from keel.monitoring.checks import audits, consistency, inputs, reviews, segments
from keel.monitoring.checks.registry import (
    Check,
    Measure,
    Measurement,
    Unit,
    evaluate,
    get,
    recommendation,
    register,
    registered,
    title,
    unregister,
)

__all__ = [
    "BUILT_IN",
    "DECISIONS_IN_WINDOW",
    "Check",
    "Measure",
    "Measurement",
    "Unit",
    "evaluate",
    "get",
    "recommendation",
    "register",
    "registered",
    "title",
    "unregister",
]

DECISIONS_IN_WINDOW = Check(
    "decisions_in_window", "Decisions in the window", "lower_is_worse", None, "count",
    "check that the service logs decisions for this model, or widen the window (--window).",
    None, settings=("min_decisions",),
)  # fmt: skip
"""Judged by the monitor before any evidence: too few decisions and it could not run (exit 3)."""

BUILT_IN = (
    DECISIONS_IN_WINDOW,
    inputs.FEATURE_DRIFT,
    inputs.IMPORTANT_FEATURE_DRIFT,
    inputs.OUTCOME_SHIFT,
    inputs.ABSTENTION_RATE,
    inputs.POLICY_INTERVENTIONS,
    inputs.EXPLANATION_DRIFT,
    segments.SEGMENT_MIX,
    reviews.OVERRIDE_RATE,
    reviews.REVIEWED_ACCURACY,
    segments.CONCEPT_DRIFT,
    segments.EXPECTED_ERROR,
    reviews.PROCESS_DRIFT,
    reviews.SEQUENTIAL_PROCESS_DRIFT,
    audits.AUDITED_ERROR,
    audits.PRACTICE_VS_RULE,
    consistency.DECISION_CONSISTENCY,
)
for _check in BUILT_IN:
    register(_check)
