"""A counterfactual audit's findings: flip rates with exact intervals, per field and value pair.

Rates are per case, so each is a binomial proportion of independent cases: for a value pair
(a -> b), of the cases with a, the share decided differently with b; for a field, of its cases,
the share decided differently with at least one other value ("decision" = outcome, route or
abstention changed). The gate of an invariant field compares the one-sided lower confidence
bound of that field rate with the declared tolerance, so estimation noise alone does not fail a
version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np
import pandas as pd

from keel.models.bundle import REFERENCE
from keel.models.counterfactual import KINDS, Construction, Flips, Nesting, audit_frame
from keel.models.decision_model import DecisionModel
from keel.models.proportions import Proportion, lower_bound, proportion

__all__ = [
    "DECISION",
    "ConsistencyReport",
    "FieldConsistency",
    "PairConsistency",
    "held_out_audit",
    "summarise",
]

DECISION = "decision"
"""Any of KINDS changed."""
EXAMPLES = 3
TOP_FEATURES = 3


@dataclass
class PairConsistency:
    start: str
    target: str
    flips: dict[str, Proportion]
    examples: list[str]
    features: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.start,
            "to": self.target,
            "n": self.flips[DECISION].n,
            "flips": {k: p.to_dict() for k, p in self.flips.items()},
            "examples": self.examples,
            "features": self.features,
        }


@dataclass
class FieldConsistency:
    field: str
    status: str
    """`measured` or `invariant_by_construction`."""
    reasons: list[str]
    moves_with: list[str]
    tolerance: float | None
    cases: int = 0
    flips: dict[str, Proportion] = dc_field(default_factory=dict)
    pairs: list[PairConsistency] = dc_field(default_factory=list)
    features: list[dict[str, Any]] = dc_field(default_factory=list)
    skipped_values: list[str] = dc_field(default_factory=list)
    gate: dict[str, Any] | None = None
    """For a field declared invariant: lower bound vs tolerance and whether it passes."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "status": self.status,
            "reasons": self.reasons,
            "moves_with": self.moves_with,
            "invariant": None if self.tolerance is None else {"tolerance": self.tolerance},
            "cases": self.cases,
            "flips": {k: p.to_dict() for k, p in self.flips.items()},
            "features": self.features,
            "pairs": [p.to_dict() for p in self.pairs],
            "skipped_values": self.skipped_values,
            "gate": self.gate,
        }

    def sentence(self) -> str:
        """One line: how often this field changes decisions, or why it cannot."""
        if self.status != "measured":
            return f"{self.field}: invariant by construction (nothing in the decision reads it)"
        d = self.flips[DECISION]
        return (
            f"{self.field}: {d.rate:.1%} of {d.n} cases decided differently with another value "
            f"({d.level:.0%} CI {d.low:.1%}-{d.high:.1%})"
        )


@dataclass
class ConsistencyReport:
    model: str
    source: str
    """`decision_log` (a window's logged decisions) or `test_split` (held-out cases sealed with
    the version)."""
    note: str
    versions: dict[str, int]
    cases: int
    level: float
    gate_confidence: float
    fields: list[FieldConsistency]
    reproduced: int | None = None
    seed: int = 0
    policy: dict[str, Any] | None = None
    """Policy adherence across segments (keel.monitoring.policy_adherence), when computed."""
    reviewers: dict[str, Any] | None = None
    """Agreement between reviewers of the same case per segment value
    (keel.monitoring.reviewer_agreement.AgreementReport), when computed."""

    @property
    def failed(self) -> list[FieldConsistency]:
        return [f for f in self.fields if f.gate is not None and not f.gate["passed"]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "source": self.source,
            "note": self.note,
            "versions": self.versions,
            "cases": self.cases,
            "reproduced": self.reproduced,
            "level": self.level,
            "gate_confidence": self.gate_confidence,
            "seed": self.seed,
            "fields": [f.to_dict() for f in self.fields],
            "policy": self.policy,
            "reviewers": self.reviewers,
        }


def _flip_counts(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    out[DECISION] = np.logical_or.reduce([out[k].astype(bool).to_numpy() for k in KINDS])
    return out


def _features(shap: pd.DataFrame, top: int) -> list[dict[str, Any]]:
    if shap.empty:
        return []
    total = shap.groupby("feature")[["abs_change", "n"]].sum()
    total = (total["abs_change"] / total["n"]).sort_values(ascending=False).head(top)
    return [
        {"feature": str(f), "mean_abs_shap_change": round(float(v), 6)} for f, v in total.items() if v > 0
    ]


def _measured(
    c: Construction, table: pd.DataFrame, shap: pd.DataFrame, level: float, confidence: float
) -> FieldConsistency:
    out = FieldConsistency(c.field, "measured", list(c.reasons), list(c.moves_with), c.tolerance)
    per_case = table.groupby("case")[[*KINDS, DECISION]].any()
    out.cases = len(per_case)
    out.flips = {k: proportion(int(per_case[k].sum()), len(per_case), level) for k in (*KINDS, DECISION)}
    out.features = _features(shap, 5)
    for (start, target), rows in table.groupby(["from", "to"], sort=True):
        flips = {k: proportion(int(rows[k].sum()), len(rows), level) for k in (*KINDS, DECISION)}
        examples = rows.loc[rows[DECISION], "case"].head(EXAMPLES).astype(str).tolist()
        pair_shap = shap[(shap["from"] == start) & (shap["to"] == target)]
        out.pairs.append(
            PairConsistency(str(start), str(target), flips, examples, _features(pair_shap, TOP_FEATURES))
        )
    if c.tolerance is not None:
        d = out.flips[DECISION]
        lower = float(lower_bound(d.k, d.n, confidence))
        out.gate = {
            "tolerance": c.tolerance,
            "lower_bound": round(lower, 6),
            "confidence": confidence,
            "passed": lower <= c.tolerance,
        }
    return out


def summarise(
    model: str,
    source: str,
    note: str,
    flips: Sequence[Flips],
    constructions: Sequence[Construction],
    level: float = 0.95,
    gate_confidence: float = 0.95,
    seed: int = 0,
) -> ConsistencyReport:
    """Pool the versions' counterfactuals (each case against the version that decided it)."""
    table = _flip_counts(pd.concat([f.table for f in flips], ignore_index=True)) if flips else None
    shap = pd.concat([f.shap for f in flips], ignore_index=True) if flips else None
    fields = []
    for c in constructions:
        if not c.measured:
            status = "invariant_by_construction"
            fc = FieldConsistency(c.field, status, list(c.reasons), list(c.moves_with), c.tolerance)
            if c.tolerance is not None:
                fc.gate = {"tolerance": c.tolerance, "lower_bound": 0.0, "confidence": None, "passed": True}
            fields.append(fc)
            continue
        assert table is not None and shap is not None
        fc = _measured(
            c, table[table["field"] == c.field], shap[shap["field"] == c.field], level, gate_confidence
        )
        fc.skipped_values = sorted({v for f in flips for v in f.skipped.get(c.field, [])})
        fields.append(fc)
    logged = [f.reproduced for f in flips if f.reproduced is not None]
    return ConsistencyReport(
        model,
        source,
        note,
        {f.version: f.cases for f in flips},
        sum(f.cases for f in flips),
        level,
        gate_confidence,
        fields,
        sum(logged) if logged else None,
        seed,
    )


def held_out_audit(
    model: DecisionModel,
    version: str,
    sample: int,
    seed: int = 0,
    level: float = 0.95,
    confidence: float = 0.95,
) -> ConsistencyReport:
    """The audit on the version's held-out test cases sealed in its bundle (at most `sample`)."""
    reference = pd.read_parquet(model.bundle.path / REFERENCE)
    nesting = Nesting.read(reference, model.contract.segment_fields)
    cases = (
        reference.sample(n=min(sample, len(reference)), random_state=seed)
        if sample < len(reference)
        else reference
    )
    ids = (
        cases["case_id"].astype(str).tolist()
        if "case_id" in cases
        else [f"test-{i}" for i in range(len(cases))]
    )
    flips, found = audit_frame(model, version, cases, ids, nesting, seed)
    note = f"{len(cases)} held-out test cases sealed with version {version} (the decision log was not read)"
    return summarise(model.name, "test_split", note, [flips], found, level, confidence, seed)
