"""Policy rules: versioned, declarative data per model, applied after the model on every decided case.

A rule can only make a route more conservative (ROUTES order) or add parties to notify, so a bad
rule can cost review effort but never let a case through that the model alone would have stopped.
Conditions are validated against the model's contract and compiled to closures at load time,
because `apply` runs on the request path for every case.

Condition language: a leaf `{field: NAME, op: OP, value: V}` where NAME is a contract input field
or `outcome` (None when the model abstained) or `confidence`; combinators `{all: [...]}`,
`{any: [...]}`, `{not: {...}}`. A null/NaN/missing value fails gt/ge/lt/le, eq and in, passes ne
and not_in, and is what is_null (no `value`) tests for.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

from keel.feature_defs.contract import MODEL_NAMES, Contract, load_contract

ROUTES = ("auto", "finance_approval", "human_review")
"""Least to most conservative; "auto" means the workflow proceeds with the model's outcome."""
ABSTAINED = "ABSTAINED_LOW_CONFIDENCE"
OPS = ("eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "is_null")
MODEL_OUTPUTS = ("outcome", "confidence")
"""Names a leaf's `field` may use besides the contract's input fields."""
_RANK = {r: i for i, r in enumerate(ROUTES)}
_NUMERIC_OPS = frozenset({"gt", "ge", "lt", "le"})
_TOP_KEYS = frozenset({"model", "description", "rules"})
_RULE_KEYS = frozenset({"id", "description", "when", "route", "notify", "reason_code"})
_LEAF_KEYS = frozenset({"field", "op", "value"})
_CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_PARTY = re.compile(r"^[a-z][a-z0-9_]*$")

Predicate = Callable[[Mapping[str, Any], str | None, float], bool]
"""(case, outcome, confidence) -> whether the condition holds."""


@dataclass(frozen=True)
class PolicyResult:
    route: str
    reason_codes: tuple[str, ...]
    notify: tuple[str, ...]
    rules_fired: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "reason_codes": list(self.reason_codes),
            "notify": list(self.notify),
            "rules_fired": list(self.rules_fired),
        }


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    route: str | None  # None: a notify-only rule that leaves the route alone
    notify: tuple[str, ...]
    reason_code: str
    condition: Mapping[str, Any]
    test: Predicate = field(repr=False, compare=False)
    rank: int = field(default=-1, repr=False, compare=False)  # -1 never raises the route

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "description": self.description,
            "route": self.route,
            "notify": list(self.notify),
            "reason_code": self.reason_code,
            "condition": copy.deepcopy(dict(self.condition)),
        }


@dataclass(frozen=True)
class Policy:
    model: str
    version: str
    description: str
    rules: tuple[Rule, ...]
    source: str = field(default="", repr=False, compare=False)

    def apply(
        self, case: Mapping[str, Any], outcome: str | None, confidence: float, abstained: bool
    ) -> PolicyResult:
        """Route one (contract-valid) case; `outcome` is forced to None when the model abstained."""
        if abstained:
            outcome, rank, codes = None, _RANK["human_review"], [ABSTAINED]
        else:
            rank, codes = 0, []
        fired: list[str] = []
        notify: set[str] = set()
        for rule in self.rules:
            if rule.test(case, outcome, confidence):
                fired.append(rule.id)
                codes.append(rule.reason_code)
                notify.update(rule.notify)
                rank = max(rank, rule.rank)  # max over ranks: a rule can never loosen the route
        return PolicyResult(ROUTES[rank], tuple(codes), tuple(sorted(notify)), tuple(fired))

    def public(self) -> dict[str, Any]:
        """What GET /v1/models shows about the policy."""
        return {
            "model": self.model,
            "version": self.version,
            "description": self.description,
            "routes": list(ROUTES),
            "rules": [r.public() for r in self.rules],
        }


def packaged_policy_text(model_name: str) -> str | None:
    """The policy shipped beside the code for a model, if any (the default sealed at registration)."""
    path = resources.files("keel.feature_defs") / "policies" / f"{model_name}.yaml"
    return path.read_text() if path.is_file() else None


@cache
def load_policy(model_name: str) -> Policy:
    """The packaged policy of one of the three models (cached: policies change with a release).

    Serving never uses it directly: a version decides with the policy sealed in its bundle."""
    text = packaged_policy_text(model_name) if model_name in MODEL_NAMES else None
    if text is None:
        raise ValueError(f"unknown model {model_name!r}; known: {', '.join(MODEL_NAMES)}")
    policy = load_policy_text(text)
    if policy.model != model_name:
        raise ValueError(f"policies/{model_name}.yaml declares model {policy.model!r}")
    return policy


def load_policy_text(text: str, contract: Contract | None = None) -> Policy:
    raw = yaml.safe_load(text)
    if not isinstance(raw, Mapping):
        raise ValueError("not a Keel policy: expected a mapping with model and rules")
    _no_unknown_keys(raw, _TOP_KEYS, "policy")
    model = raw.get("model")
    if not isinstance(model, str):
        raise ValueError("policy: `model` is required and must be a model name")
    contract = contract or load_contract(model)
    if contract.name != model:
        raise ValueError(f"policy is for model {model!r} but the contract is {contract.name!r}")
    rules_raw = raw.get("rules")
    if not isinstance(rules_raw, list):
        raise ValueError(f"policy {model}: `rules` is required and must be a list")
    rules = tuple(_rule(r, i, contract) for i, r in enumerate(rules_raw))
    seen: set[str] = set()
    for r in rules:
        if r.id in seen:
            raise ValueError(f"policy {model}: duplicate rule id {r.id!r}")
        seen.add(r.id)
    # The version hashes parsed content, so comments and formatting never produce a new version.
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    version = hashlib.sha256(canonical.encode()).hexdigest()
    return Policy(model, version, str(raw.get("description", "")).strip(), rules, text)


def _no_unknown_keys(node: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in node if k not in allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _rule(raw: Any, index: int, contract: Contract) -> Rule:
    where = f"policy {contract.name} rule #{index + 1}"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: a rule must be a mapping")
    rid = raw.get("id")
    if not isinstance(rid, str) or not rid:
        raise ValueError(f"{where}: `id` is required and must be a non-empty string")
    where = f"policy {contract.name} rule {rid!r}"
    _no_unknown_keys(raw, _RULE_KEYS, where)
    code = raw.get("reason_code")
    if not isinstance(code, str) or not _CODE.match(code):
        raise ValueError(f"{where}: `reason_code` is required, UPPER_SNAKE_CASE (got {code!r})")
    route = raw.get("route")
    if route is not None and route not in ROUTES[1:]:
        raise ValueError(
            f"{where}: unknown route {route!r}; a rule may route to {list(ROUTES[1:])} "
            "(omit `route` for a notify-only rule)"
        )
    notify = raw.get("notify", [])
    if not isinstance(notify, list) or not all(isinstance(p, str) and _PARTY.match(p) for p in notify):
        raise ValueError(f"{where}: `notify` must be a list of lower_snake_case party names")
    if route is None and not notify:
        raise ValueError(f"{where}: a rule needs a `route`, a `notify` list or both")
    if "when" not in raw:
        raise ValueError(f"{where}: `when` (the condition) is required")
    test = _compile(raw["when"], contract, where)
    rank = _RANK[route] if route else -1
    return Rule(rid, str(raw.get("description", "")), route, tuple(notify), code, raw["when"], test, rank)


def _compile(node: Any, contract: Contract, where: str) -> Predicate:
    """Validate one condition node and turn it into a closure (no interpretation at request time)."""
    if not isinstance(node, Mapping) or not node:
        raise ValueError(f"{where}: a condition must be a non-empty mapping, got {node!r}")
    combinators = node.keys() & {"all", "any", "not"}
    if combinators and len(node) != 1:
        raise ValueError(f"{where}: `{min(combinators)}` must be the only key of its condition node")
    if node.keys() <= {"all", "any"}:
        key, children = next(iter(node.items()))
        if not isinstance(children, list) or not children:
            raise ValueError(f"{where}: `{key}` needs a non-empty list of conditions")
        parts = tuple(_compile(c, contract, where) for c in children)
        if key == "all":
            return lambda c, o, k: all(p(c, o, k) for p in parts)
        return lambda c, o, k: any(p(c, o, k) for p in parts)
    if node.keys() == {"not"}:
        inner = _compile(node["not"], contract, where)
        return lambda c, o, k: not inner(c, o, k)
    _no_unknown_keys(node, _LEAF_KEYS, f"{where} condition {dict(node)}")
    return _leaf(node, contract, where)


def _leaf(node: Mapping[str, Any], contract: Contract, where: str) -> Predicate:
    name, op = node.get("field"), node.get("op")
    if name is None:
        raise ValueError(f"{where}: condition {dict(node)} names no `field` (nor all/any/not)")
    if name not in MODEL_OUTPUTS and name not in contract.field_names:
        raise ValueError(
            f"{where}: field {name!r} is not in the {contract.name} contract "
            f"(nor one of {list(MODEL_OUTPUTS)}); fields: {contract.field_names}"
        )
    if op not in OPS:
        raise ValueError(f"{where}: unknown op {op!r} on {name}; ops: {list(OPS)}")
    kind, nullable, allowed = _subject(name, contract)
    if op == "is_null":
        if "value" in node or not nullable:
            raise ValueError(f"{where}: is_null takes no value and needs a nullable field; {name} is not")
    elif "value" not in node:
        raise ValueError(f"{where}: op {op} on {name} needs a `value`")
    elif op in _NUMERIC_OPS and kind != "number":
        raise ValueError(f"{where}: numeric op {op} needs a numeric field; {name} is {kind}")
    value: Any = node.get("value")
    if op in ("in", "not_in") and (not isinstance(value, list) or not value):
        raise ValueError(f"{where}: op {op} on {name} needs a non-empty list value")
    for v in [] if op == "is_null" else value if op in ("in", "not_in") else [value]:
        _check_value(name, kind, allowed, v, where)
    return _closure(_getter(name), op, value)


def _subject(name: str, contract: Contract) -> tuple[str, bool, tuple[str, ...]]:
    """(kind, nullable, allowed strings) of what a leaf compares."""
    if name == "outcome":
        return "outcome", True, contract.classes  # None when the model abstained
    if name == "confidence":
        return "number", False, ()
    spec = contract.spec(name)
    kind = "number" if spec.type in ("int", "float") else spec.type
    return kind, spec.nullable, spec.categories


def _check_value(name: str, kind: str, allowed: tuple[str, ...], v: Any, where: str) -> None:
    if kind == "number" and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
        raise ValueError(f"{where}: {name} is numeric; {v!r} is not a finite number")
    if name == "confidence" and not 0.0 <= v <= 1.0:
        raise ValueError(f"{where}: confidence is between 0 and 1; {v!r} is not")
    if kind == "bool" and not isinstance(v, bool):
        raise ValueError(f"{where}: {name} is boolean; {v!r} is not true/false")
    if kind == "outcome" and v not in allowed:
        raise ValueError(f"{where}: outcome {v!r} is not a class of the model; classes: {list(allowed)}")
    if kind == "category" and v not in allowed:
        raise ValueError(f"{where}: {v!r} is not a category of {name}; categories: {list(allowed)}")


def _getter(name: str) -> Callable[[Mapping[str, Any], str | None, float], Any]:
    if name == "outcome":
        return lambda c, o, k: o
    if name == "confidence":
        return lambda c, o, k: k
    return lambda c, o, k: c.get(name)  # a missing or null field reads as None


def _closure(get: Callable[[Mapping[str, Any], str | None, float], Any], op: str, v: Any) -> Predicate:
    # None (null field, abstained outcome) and NaN compare false for gt/ge/lt/le, equal to nothing,
    # and are in no list; `x == x` is the cheap NaN test.
    if op == "eq":
        return lambda c, o, k: get(c, o, k) == v
    if op == "ne":
        return lambda c, o, k: get(c, o, k) != v
    if op in ("in", "not_in"):
        members = frozenset(v)
        if op == "in":
            return lambda c, o, k: get(c, o, k) in members
        return lambda c, o, k: get(c, o, k) not in members
    if op == "is_null":
        return lambda c, o, k: (x := get(c, o, k)) is None or x != x
    compare = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}[op]
    return lambda c, o, k: (x := get(c, o, k)) is not None and compare(x, v)
