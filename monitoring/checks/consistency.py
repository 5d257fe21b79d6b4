"""Decision consistency: would the window's decisions change with another value of a segment field?

Judged only on fields the contract declares invariant (for the others nobody has said whether
the dependence is intended; the detail still states their flip rates): the value is the worst
such field's flip-rate lower confidence bound as a multiple of its declared tolerance.
"""

from __future__ import annotations

from typing import Any

from keel.models.consistency_report import FieldConsistency
from keel.monitoring.checks.registry import Check, Measurement
from keel.monitoring.evidence import Evidence
from keel.monitoring.reviewer_agreement import Kappa, describe
from keel.monitoring.settings import MonitorSettings

__all__ = ["DECISION_CONSISTENCY"]

_FAR = 1e6
"""The multiple reported when a tolerance of zero is exceeded at all."""


def _multiple(f: FieldConsistency) -> float:
    assert f.gate is not None
    lower, tolerance = float(f.gate["lower_bound"]), float(f.gate["tolerance"])
    if tolerance <= 0:
        return _FAR if lower > 0 else 0.0
    return lower / tolerance


def _decision_consistency(
    ev: Evidence, s: MonitorSettings, limits: tuple[float, float] | None
) -> Measurement | None:
    report = ev.consistency
    if report is None:
        problem = ev.consistency_problem
        return Measurement(None, f"the counterfactual audit could not run: {problem}") if problem else None
    measured = [f for f in report.fields if f.status == "measured"]
    constructed = [f.field for f in report.fields if f.status != "measured"]
    said = [f.sentence() for f in measured]
    if constructed:
        said.append(f"{', '.join(constructed)} invariant by construction")
    if report.reviewers is not None:
        said.append(_reviewers(report.reviewers))
    gated = [f for f in measured if f.gate is not None]
    where = f" ({report.cases} cases of the {report.source.replace('_', ' ')})"
    if not gated:
        return Measurement(0.0, "no measured field is declared invariant; " + "; ".join(said) + where)
    worst = max(gated, key=_multiple)
    assert worst.gate is not None
    head = (
        f"{worst.field} is declared invariant: lower bound {worst.gate['lower_bound']:.2%} of cases decided "
        f"differently vs tolerance {worst.gate['tolerance']:.2%}"
    )
    return Measurement(_multiple(worst), "; ".join([head, *said]) + where)


def _reviewers(reviewers: dict[str, Any]) -> str:
    """Reviewer agreement in one clause: the values whose reviewers agree less, else the overall kappa.
    Stated, not judged: the verdict stays on the contract's invariances."""
    if reviewers["sentences"]:
        return "; ".join(reviewers["sentences"])
    return f"reviewers of the same case: {describe(Kappa(**reviewers['overall']))}"


DECISION_CONSISTENCY = Check(
    "decision_consistency", "Decision consistency across segments (counterfactual)", "higher_is_worse",
    "consistency_ratio", "ratio",
    "run keel consistency MODEL for the value pairs and the features through which the field acts; "
    "retrain without the field (or declare the dependence intended).",
    _decision_consistency, settings=("consistency_sample_rows",),
)  # fmt: skip
