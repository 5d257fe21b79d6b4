"""Pure decision-record building: a validated matrix -> decision records -> decision-log rows.

Shared by the online decide path (serving/decider.py) and batch scoring, so that a batch
decision is built by the same code as an online one. Nothing here does I/O.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from keel.decision_log.audit_plans import AuditPlan
from keel.models.decision_model import BatchDecision
from keel.models.decision_path import predict_cases
from keel.serving.metrics import Metrics
from keel.serving.model_set import Served

if TYPE_CHECKING:
    from keel.decision_log.records import Audit, DecisionRecord

__all__ = ["MODEL_ERROR", "NOT_AUDITED", "PRIVATE_FIELDS", "decide_valid", "public", "record", "with_audit"]

log = logging.getLogger("keel.decide")

MODEL_ERROR = "MODEL_ERROR"
PRIVATE_FIELDS = ("inputs", "explanation_full")
"""Logged with each decision but not echoed back in decide responses."""


NOT_AUDITED: dict[str, Any] = {"selected": False, "probability": 0.0, "pool": None}
"""The audit object of an abstention: every abstention goes to human review anyway."""


def with_audit(records: list[DecisionRecord], plan: AuditPlan) -> list[DecisionRecord]:
    """Give each served decision its `audit` selection under `plan` (keel.decision_log.audit_plans).

    Called on the online path and by batch runs that log, before the rows are built, so the
    selection is part of the chained record; never for shadow decisions, which nobody reviews.
    """
    for r in records:
        if r["abstained"]:
            # cast: NOT_AUDITED plus the plan's version is a whole Audit.
            r["audit"] = cast("Audit", {**NOT_AUDITED, "plan": plan.version})
        else:
            # cast: AuditPlan.select builds the Audit keys (it returns a plain dict).
            r["audit"] = cast("Audit", plan.select(r["decision_id"], r["inputs"]))
    return records


def public(record: DecisionRecord) -> DecisionRecord:
    # cast: the same record without its optional private keys.
    return cast("DecisionRecord", {k: v for k, v in record.items() if k not in PRIVATE_FIELDS})


def decide_valid(
    served: Served, cases: list[Any], matrix: np.ndarray, top_k: int, metrics: Metrics | None = None
) -> list[DecisionRecord]:
    """Decision records for validated cases (`matrix` is the contract's encoding of `cases`).

    A failing model routes its cases to human review and a failing explanation is marked
    unavailable; neither raises.
    """
    model = served.loaded.model
    now = datetime.now(UTC).isoformat()
    try:
        # A model with per-segment thresholds needs each case's segment value (models/thresholds.py).
        batch: BatchDecision | None = predict_cases(model, cases, matrix)
    except Exception:
        log.exception("model %s failed; routing %d cases to human review", model.name, len(cases))
        if metrics is not None:
            metrics.model_failures.labels(model.name).inc()
        batch = None
    explanation_ok = False
    if batch is not None:
        try:
            batch.contributions = model.tree.contributions(matrix, batch.predicted)
            explanation_ok = True
        except Exception:
            log.exception("explanation failed for model %s", model.name)
            if metrics is not None:
                metrics.explanation_failures.labels(model.name).inc()
    return [record(served, batch, explanation_ok, i, case, now, top_k) for i, case in enumerate(cases)]


def record(
    served: Served,
    batch: BatchDecision | None,
    explained: bool,
    i: int,
    case: dict[str, Any],
    now: str,
    top_k: int,
) -> DecisionRecord:
    """The decision record of case `i` of a batch (`batch` None: the model failed on it)."""
    model = served.loaded.model
    base = {
        "decision_id": str(uuid.uuid4()),
        "case_id": case.get("case_id"),
        "model": model.name,
        "created_at": now,
        "versions": served.versions,
    }
    # cast: `base` (a plain dict) holds the identifying keys; with the rest it is a whole record.
    if batch is None:
        return cast(
            "DecisionRecord",
            {
                **base,
                "outcome": None,
                "abstained": True,
                "route": "human_review",
                "reason_codes": [MODEL_ERROR],
                "notify": [],
                "rules_fired": [],
                "confidence": None,
                "probabilities": None,
                "explanation": None,
                "explanation_status": "unavailable",
                "inputs": case,
                "explanation_full": None,
            },
        )
    outcome, abstained, confidence = (
        batch.outcome(i),
        bool(batch.abstained[i]),
        float(batch.confidence[i]),
    )
    policy = served.policy.apply(case, outcome, confidence, abstained)
    full = batch.explanation(i, model.contract) if explained else None
    top = dict(full, contributions=full["contributions"][:top_k]) if full else None
    return cast(
        "DecisionRecord",
        {
            **base,
            "outcome": outcome,
            "abstained": abstained,
            "route": policy.route,
            "reason_codes": list(policy.reason_codes),
            "notify": list(policy.notify),
            "rules_fired": list(policy.rules_fired),
            "confidence": confidence,
            "threshold": batch.applied_threshold(i),
            "probabilities": batch.probability_map(i),
            "explanation": top,
            "explanation_status": "exact" if explained else "unavailable",
            "inputs": case,
            "explanation_full": full,
        },
    )
