"""One frame shape for monitoring: logged decisions and the reference sample look alike.

Columns: `decision_id`, `created_at`, `model_version`, every contract field, `outcome` (None
when abstained), `most_likely`, `abstained`, `route`, `confidence`, `policy_intervened`,
`shap_base`, `shap__<feature>` per model feature (NaN when no explanation was logged), and for
logged decisions the latest feedback: `final_outcome`, `feedback_kind`, `feedback_reason`,
`feedback_actor` (None where there is none), and the audit evidence: `audit_selected` (bool),
`audit_probability`, `audit_pool` from the record's `audit` (False/None on records logged before
audit sampling, and on abstentions and the reference), `reviewer_pool`, `reviewer_segment` from
the feedback (None: unknown, read as local).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from keel.feature_defs.contract import Contract
from keel.models.decision_model import DecisionModel

SHAP_PREFIX = "shap__"
PREDICTION_COLUMNS = ("outcome", "most_likely", "abstained", "route", "confidence", "policy_intervened")
FEEDBACK_COLUMNS = ("final_outcome", "feedback_kind", "feedback_reason", "feedback_actor")
AUDIT_COLUMNS = ("audit_selected", "audit_probability", "audit_pool", "reviewer_pool", "reviewer_segment")


def audit_flag(value: Any) -> bool:
    """A JSON boolean as SQLite (1/0), PostgreSQL ('true'/'false') or Python give it; None: False."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value) if value is not None and value == value else False


def audit_values(record: Mapping[str, Any], feedback: Mapping[str, Any]) -> dict[str, Any]:
    """The audit columns of one decision record and its latest feedback (see the module doc)."""
    audit = record.get("audit") or {}
    probability = audit.get("probability")
    return {
        "audit_selected": audit_flag(audit.get("selected")),
        "audit_probability": float(probability) if probability is not None else np.nan,
        "audit_pool": audit.get("pool"),
        "reviewer_pool": feedback.get("reviewer_pool"),
        "reviewer_segment": feedback.get("reviewer_segment"),
    }


def shap_column(feature: str) -> str:
    return f"{SHAP_PREFIX}{feature}"


def shap_columns(contract: Contract) -> list[str]:
    return [shap_column(f) for f in contract.feature_names]


def typed(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Give contract fields stable dtypes (float for numbers, bool, object str for categories)."""
    out = frame.copy()
    for spec in contract.fields:
        if spec.name not in out:
            continue
        if spec.type in ("float", "int"):
            out[spec.name] = pd.to_numeric(out[spec.name], errors="coerce").astype("float64")
        elif spec.type == "bool":
            out[spec.name] = out[spec.name].astype(bool)
        else:
            out[spec.name] = out[spec.name].astype(object)
    return out


def records_to_frame(
    records: Iterable[Mapping[str, Any]],
    contract: Contract,
    feedback: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """Logged decision records (the JSON the decider writes) to the monitoring frame."""
    rows = []
    features = contract.feature_names
    feedback = feedback or {}
    for r in records:
        row: dict[str, Any] = {
            "decision_id": r["decision_id"],
            "created_at": r.get("created_at"),
            "model_version": (r.get("versions") or {}).get("model_version"),
            **{f: (r.get("inputs") or {}).get(f) for f in contract.field_names},
            "outcome": r.get("outcome"),
            "abstained": bool(r.get("abstained")),
            "route": r.get("route"),
            "confidence": r.get("confidence"),
            "policy_intervened": bool(r.get("rules_fired")),
        }
        full = r.get("explanation_full") or {}
        row["most_likely"] = full.get("class") or r.get("outcome")
        row["shap_base"] = full.get("base_value", np.nan)
        contributions = {c["feature"]: c["contribution"] for c in full.get("contributions", [])}
        row.update({shap_column(f): contributions.get(f, np.nan) for f in features})
        fb = feedback.get(r["decision_id"], {})
        row.update(
            {
                "final_outcome": fb.get("final_outcome"),
                "feedback_kind": fb.get("kind"),
                "feedback_reason": fb.get("reason"),
                "feedback_actor": fb.get("actor"),
                **audit_values(r, fb),
            }
        )
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601")
    frame["confidence"] = frame["confidence"].astype("float64")
    frame["audit_probability"] = frame["audit_probability"].astype("float64")
    return typed(frame, contract)


def reference_frame(
    model: DecisionModel, version: str, reference: pd.DataFrame, policy: Any | None = None
) -> pd.DataFrame:
    """The model's own decisions and explanations on its reference sample, in the same shape."""
    contract = model.contract
    batch = model.predict_frame(reference[contract.field_names], explain=True)
    assert batch.contributions is not None
    frame = typed(reference[contract.field_names].reset_index(drop=True), contract)
    frame.insert(0, "decision_id", [f"ref-{i}" for i in range(len(frame))])
    frame.insert(1, "created_at", pd.NaT)
    frame.insert(2, "model_version", version)
    outcomes = [batch.outcome(i) for i in range(len(batch))]
    frame["outcome"] = outcomes
    frame["most_likely"] = [batch.most_likely(i) for i in range(len(batch))]
    frame["abstained"] = batch.abstained.astype(bool)
    frame["confidence"] = batch.confidence
    routes, intervened = [], []
    records = reference[contract.field_names].to_dict(orient="records")
    for i, case in enumerate(records):
        if policy is None:
            routes.append("human_review" if batch.abstained[i] else "auto")
            intervened.append(False)
            continue
        result = policy.apply(case, outcomes[i], float(batch.confidence[i]), bool(batch.abstained[i]))
        routes.append(result.route)
        intervened.append(bool(result.rules_fired))
    frame["route"] = routes
    frame["policy_intervened"] = intervened
    frame["shap_base"] = batch.contributions[:, -1]
    for j, feature in enumerate(contract.feature_names):
        frame[shap_column(feature)] = batch.contributions[:, j]
    for col in FEEDBACK_COLUMNS:
        frame[col] = None
    frame["audit_selected"] = False
    frame["audit_probability"] = np.nan
    for col in AUDIT_COLUMNS[2:]:
        frame[col] = None
    return frame
