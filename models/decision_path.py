"""The decision of validated cases without its record: model, calibration, per-segment threshold,
then the policy. The online path (keel.serving.decision_record) predicts with `predict_cases`
and routes with the same sealed policy; counterfactual audits (keel.models.counterfactual)
decide whole arrays of altered cases with `decide_outcomes`, which builds no records, ids or
explanations, so re-deciding many variants of each case costs a fraction of deciding it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from keel.feature_defs.policy import Policy
from keel.models.decision_model import BatchDecision, DecisionModel

__all__ = ["Outcomes", "decide_outcomes", "predict_cases"]


def predict_cases(
    model: DecisionModel, cases: Sequence[Mapping[str, Any]], matrix: np.ndarray, explain: bool = False
) -> BatchDecision:
    """The model's part of the decision; a per-segment-certified model reads each case's segment."""
    seg = model.threshold_rule.field
    return model.predict_matrix(matrix, explain, [c.get(seg) for c in cases] if seg else None)


@dataclass(frozen=True)
class Outcomes:
    """Per case: the arg-max class index, whether the model abstained, outcome (None when it
    abstained) and the route the policy gave."""

    predicted: np.ndarray
    abstained: np.ndarray
    outcome: list[str | None]
    route: list[str]


def decide_outcomes(
    model: DecisionModel, policy: Policy, cases: Sequence[Mapping[str, Any]], matrix: np.ndarray
) -> Outcomes:
    batch = predict_cases(model, cases, matrix)
    outcome = [batch.outcome(i) for i in range(len(batch))]
    conf, abstained = batch.confidence.tolist(), batch.abstained.tolist()
    route = [policy.apply(case, outcome[i], conf[i], abstained[i]).route for i, case in enumerate(cases)]
    return Outcomes(batch.predicted, batch.abstained.astype(bool), outcome, route)
