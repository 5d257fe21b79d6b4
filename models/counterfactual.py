"""Counterfactual re-decisions: each case again with every other value of a segment field.

A case is altered in its encoded row (a category's code is its index in the contract, so the
altered row is what validating the altered case would give) and in its input mapping (which the
policy and a per-segment threshold read), then decided by `decide_outcomes` with the version
that decided the original: same booster, calibration, thresholds and sealed policy.

Related fields stay consistent: fields that nest in the data (entity inside region,
keel.models.nesting) move together. An entity moved to another region takes that region; a case
moved to another region takes one of that region's entities, drawn (seeded) in proportion to
how often each occurs in the data the nesting was read from. A value whose place in the nesting
is unknown (never seen) is skipped and reported.

Whether a field can change a decision at all is read from the version itself (`construction`):
a field the model does not read as a feature, no policy rule reads and no per-segment threshold
uses -- nor does any field that moves with it -- is invariant by construction and not re-decided.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from keel.feature_defs.policy import Policy
from keel.models.decision_model import DecisionModel
from keel.models.decision_path import Outcomes, decide_outcomes, predict_cases
from keel.models.nesting import SegmentParents

__all__ = [
    "KINDS",
    "Construction",
    "Flips",
    "Nesting",
    "audit_frame",
    "construction",
    "counterfactual_flips",
    "fields_read_by",
    "rule_flips",
]

KINDS = ("outcome", "route", "abstention")
"""What can change: the returned class (null when abstaining), the policy route, abstaining."""
CHUNK = 50_000
"""Altered cases decided per call: bounds memory (a case dict and a matrix row each)."""


def fields_read_by(policy: Policy) -> dict[str, list[str]]:
    """Input field -> ids of the rules whose condition reads it."""
    out: dict[str, list[str]] = {}

    def walk(node: Any, rule: str) -> None:
        if isinstance(node, Mapping):
            if isinstance(node.get("field"), str):
                out.setdefault(node["field"], []).append(rule)
            for child in node.values():
                walk(child, rule)
        elif isinstance(node, list):
            for child in node:
                walk(child, rule)

    for r in policy.rules:
        walk(r.condition, r.id)
    return {f: list(dict.fromkeys(ids)) for f, ids in out.items()}


@dataclass(frozen=True)
class Construction:
    """Whether a segment field is re-decided (`measured`) and why; else invariant by construction."""

    field: str
    measured: bool
    reasons: tuple[str, ...]
    moves_with: tuple[str, ...]
    tolerance: float | None
    """The contract's declared tolerance when the field is declared invariant."""


def _related(name: str, parents: SegmentParents) -> tuple[str | None, str | None]:
    """(the field `name` nests in, the field nesting in `name`), each None when there is none."""
    up = next((p for (c, _), (p, _) in parents.items() if c == name), None)
    down = next((c for (c, _), (p, _) in parents.items() if p == name), None)
    return up, down


def construction(model: DecisionModel, policy: Policy, parents: SegmentParents) -> list[Construction]:
    contract = model.contract
    read = fields_read_by(policy)
    features = set(contract.feature_names) | {a for d in contract.derived for a in d.args}
    out = []
    for name in contract.segment_fields:
        moves = tuple(f for f in _related(name, parents) if f is not None)
        reasons: list[str] = []
        for g in (name, *moves):
            why = "" if g == name else f" ({g} moves with {name})"
            if g in features:
                reasons.append(f"the model reads {g} as a feature{why}")
            reasons += [f"policy rule {rule} reads {g}{why}" for rule in read.get(g, [])]
            if model.threshold_rule.field == g:
                reasons.append(f"abstention thresholds are certified per {g}{why}")
        spec = contract.spec(name)
        tolerance = spec.invariant.tolerance if spec.invariant is not None else None
        out.append(Construction(name, bool(reasons), tuple(reasons), moves, tolerance))
    return out


@dataclass
class Flips:
    """One version's counterfactuals of one set of cases.

    `table`: one row per altered case: field, from, to, case (its id), and a bool column per KIND
    (changed against the same version's decision of the unaltered case).
    `shap`: for changed cases only, per field, value pair and model feature, the summed absolute
    change of its SHAP contribution to the originally decided class, and over how many cases.
    """

    version: str
    cases: int
    table: pd.DataFrame
    shap: pd.DataFrame
    skipped: dict[str, list[str]] = field(default_factory=dict)
    """Values not tried per field: their nesting (e.g. an entity's region) is unknown."""
    reproduced: int | None = None
    """Of cases with a logged decision, how many the re-decision of the unaltered case reproduced."""


@dataclass(frozen=True)
class _Variant:
    cases: list[dict[str, Any]]
    matrix: np.ndarray
    origin: np.ndarray
    """Index of the unaltered case of each variant."""
    start: np.ndarray
    target: np.ndarray


def _variants(
    model: DecisionModel,
    name: str,
    cases: Sequence[Mapping[str, Any]],
    matrix: np.ndarray,
    parents: SegmentParents,
    weights: Mapping[str, pd.Series],
    rng: np.random.Generator,
    skipped: list[str],
) -> _Variant:
    contract = model.contract
    column = {f: j for j, f in enumerate(contract.feature_names)}
    up, down = _related(name, parents)
    original = np.array([c.get(name) for c in cases], dtype=object)
    parts: list[tuple[list[dict[str, Any]], np.ndarray, np.ndarray, str]] = []
    for value in contract.spec(name).categories:
        rows = np.flatnonzero((original != value) & pd.notna(original))
        changes: dict[str, Any] = {name: value}
        if up is not None:
            if (name, value) not in parents:
                skipped.append(value)
                continue
            changes[up] = parents[(name, value)][1]
        children: np.ndarray | None = None
        if down is not None:
            own = weights[down][[parents.get((down, c)) == (name, value) for c in weights[down].index]]
            if own.empty:
                skipped.append(value)
                continue
            children = rng.choice(own.index.to_numpy(dtype=object), len(rows), p=(own / own.sum()).to_numpy())
        altered = [{**cases[int(i)], **changes} for i in rows]
        block = matrix[rows].copy()
        for g, v in changes.items():
            if g in column:
                block[:, column[g]] = contract.spec(g).codes[v]
        if children is not None and down is not None:
            for case, child in zip(altered, children, strict=True):
                case[down] = child
            if down in column:
                codes = contract.spec(down).codes
                block[:, column[down]] = [codes[c] for c in children]
        parts.append((altered, block, rows, value))
    if not parts:
        empty = np.empty(0, dtype=np.int64)
        return _Variant([], matrix[:0], empty, np.empty(0, dtype=object), np.empty(0, dtype=object))
    return _Variant(
        [c for p in parts for c in p[0]],
        np.vstack([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        np.concatenate([original[p[2]] for p in parts]),
        np.concatenate([np.full(len(p[2]), p[3], dtype=object) for p in parts]),
    )


def _decide(model: DecisionModel, policy: Policy, v: _Variant) -> Iterator[tuple[slice, Outcomes]]:
    for at in range(0, len(v.cases), CHUNK):
        part = slice(at, at + CHUNK)
        yield part, decide_outcomes(model, policy, v.cases[part], v.matrix[part])


def counterfactual_flips(
    model: DecisionModel,
    version: str,
    cases: Sequence[Mapping[str, Any]],
    matrix: np.ndarray,
    ids: Sequence[str],
    measured: Sequence[str],
    parents: SegmentParents,
    weights: Mapping[str, pd.Series],
    seed: int = 0,
    explain_cap: int = 500,
    logged: Mapping[str, Sequence[Any]] | None = None,
) -> Flips:
    """Re-decide `cases` (valid, encoded as `matrix`) with every other value of each `measured`
    field. `weights`: per segment field, how often each value occurs (for the entity a region
    takes); `explain_cap`: changed cases per field whose explanations are compared (a seeded
    sample beyond it); `logged`: the logged outcome, route and abstained per case, to check the
    unaltered re-decision reproduces them."""
    rng = np.random.default_rng(seed)
    policy = model.spec.policy
    base = decide_outcomes(model, policy, cases, matrix)
    base_outcome, base_route = np.array(base.outcome, dtype=object), np.array(base.route, dtype=object)
    reproduced = None
    if logged is not None:
        same = (
            (np.array(logged["outcome"], dtype=object) == base_outcome)
            & (np.array(logged["route"], dtype=object) == base_route)
            & (np.asarray(logged["abstained"], dtype=bool) == base.abstained)
        )
        reproduced = int(same.sum())
    id_array = np.asarray(ids, dtype=object)
    tables, shaps = [], []
    skipped: dict[str, list[str]] = {}
    for name in measured:
        skipped[name] = []
        v = _variants(model, name, cases, matrix, parents, weights, rng, skipped[name])
        changed = {k: np.zeros(len(v.cases), dtype=bool) for k in KINDS}
        for part, out in _decide(model, policy, v):
            at = v.origin[part]
            changed["outcome"][part] = np.array(out.outcome, dtype=object) != base_outcome[at]
            changed["route"][part] = np.array(out.route, dtype=object) != base_route[at]
            changed["abstention"][part] = out.abstained != base.abstained[at]
        tables.append(
            pd.DataFrame(
                {"field": name, "from": v.start, "to": v.target, "case": id_array[v.origin], **changed}
            )
        )
        shaps.append(_shap_change(model, matrix, v, base, changed, name, explain_cap, rng))
    skipped = {k: s for k, s in skipped.items() if s}
    table = pd.concat(tables, ignore_index=True) if tables else _empty_table()
    shap = pd.concat(shaps, ignore_index=True) if shaps else _empty_shap()
    return Flips(version, len(cases), table, shap, skipped, reproduced)


def _shap_change(
    model: DecisionModel,
    matrix: np.ndarray,
    v: _Variant,
    base: Outcomes,
    changed: Mapping[str, np.ndarray],
    name: str,
    cap: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Through which features the change acts: exact SHAP of the originally decided class, altered
    minus unaltered, for changed cases only (at most `cap`, a seeded sample)."""
    flipped = np.flatnonzero(np.logical_or.reduce([changed[k] for k in KINDS]))
    if len(flipped) == 0:
        return _empty_shap()
    if len(flipped) > cap:
        flipped = np.sort(rng.choice(flipped, cap, replace=False))
    at = v.origin[flipped]
    cls = base.predicted[at]
    delta = np.abs(
        model.tree.contributions(v.matrix[flipped], cls) - model.tree.contributions(matrix[at], cls)
    )
    frame = pd.DataFrame(delta[:, :-1], columns=model.contract.feature_names)
    frame["from"], frame["to"] = v.start[flipped], v.target[flipped]
    long = frame.melt(id_vars=["from", "to"], var_name="feature", value_name="abs_change")
    out = long.groupby(["from", "to", "feature"], as_index=False).agg(
        abs_change=("abs_change", "sum"), n=("abs_change", "size")
    )
    out.insert(0, "field", name)
    return out


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame(columns=["field", "from", "to", "case", *KINDS])


def _empty_shap() -> pd.DataFrame:
    return pd.DataFrame(columns=["field", "from", "to", "feature", "abs_change", "n"])


@dataclass(frozen=True)
class Nesting:
    """How a version's segment fields nest and how often each value occurs (read from its data)."""

    parents: SegmentParents
    weights: dict[str, pd.Series]

    @classmethod
    def read(cls, frame: pd.DataFrame, segments: Sequence[str]) -> Nesting:
        from keel.models.nesting import segment_parents

        present = [s for s in segments if s in frame.columns]
        return cls(segment_parents(frame, present), {s: frame[s].value_counts() for s in present})


def audit_frame(
    model: DecisionModel,
    version: str,
    frame: pd.DataFrame,
    ids: Sequence[str],
    nesting: Nesting,
    seed: int = 0,
    explain_cap: int = 500,
    logged: bool = False,
) -> tuple[Flips, list[Construction]]:
    """`counterfactual_flips` of a frame of contract-valid cases (its `outcome`, `route` and
    `abstained` columns are the logged decisions when `logged`)."""
    contract = model.contract
    found = construction(model, model.spec.policy, nesting.parents)
    inputs = frame[contract.field_names]
    checked = contract.validate_frame(inputs)
    if checked.matrix is None:
        raise ValueError(f"{len(checked.errors)} field error(s) in the audited cases: {checked.errors[:3]}")
    flips = counterfactual_flips(
        model,
        version,
        inputs.to_dict(orient="records"),
        checked.matrix,
        ids,
        [c.field for c in found if c.measured],
        nesting.parents,
        nesting.weights,
        seed,
        explain_cap,
        {k: frame[k].tolist() for k in ("outcome", "route", "abstained")} if logged else None,
    )
    return flips, found


def rule_flips(
    model: DecisionModel,
    cases: Sequence[Mapping[str, Any]],
    matrix: np.ndarray,
    ids: Sequence[str],
    nesting: Nesting,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """The counterfactual for the policy alone: each case's model outputs held as they are, the
    rules applied again with every other value of each segment field a rule reads (directly or
    through a field that moves with it). Returns one row per altered case (field, from, to, case,
    `route` and `rules` changed) and, per field so re-applied, the rules that read it."""
    policy = model.spec.policy
    read = fields_read_by(policy)
    batch = predict_cases(model, cases, matrix)
    outcome = [batch.outcome(i) for i in range(len(batch))]
    conf, abstained = batch.confidence.tolist(), batch.abstained.tolist()
    base = [policy.apply(c, outcome[i], conf[i], abstained[i]) for i, c in enumerate(cases)]
    rng = np.random.default_rng(seed)
    id_array = np.asarray(ids, dtype=object)
    rows, readers = [], {}
    for name in model.contract.segment_fields:
        rules = [
            r for g in (name, *(f for f in _related(name, nesting.parents) if f)) for r in read.get(g, [])
        ]
        if not rules:
            continue
        readers[name] = list(dict.fromkeys(rules))
        v = _variants(model, name, cases, matrix, nesting.parents, nesting.weights, rng, [])
        again = [
            policy.apply(c, outcome[o], conf[o], abstained[o]) for c, o in zip(v.cases, v.origin, strict=True)
        ]
        rows.append(
            pd.DataFrame(
                {
                    "field": name,
                    "from": v.start,
                    "to": v.target,
                    "case": id_array[v.origin],
                    "route": [a.route != base[o].route for a, o in zip(again, v.origin, strict=True)],
                    "rules": [
                        a.rules_fired != base[o].rules_fired for a, o in zip(again, v.origin, strict=True)
                    ],
                }
            )
        )
    table = (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=["field", "from", "to", "case", "route", "rules"])
    )
    return table, readers
