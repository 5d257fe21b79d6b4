from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
from typing import Any

import pytest
import yaml

from keel.feature_defs.contract import MODEL_NAMES, Contract, load_contract
from keel.feature_defs.policy import ABSTAINED, ROUTES, Policy, load_policy, load_policy_text

RANK = {r: i for i, r in enumerate(ROUTES)}


def make(model: str, rules: list[dict[str, Any]], **top: Any) -> Policy:
    return load_policy_text(yaml.safe_dump({"model": model, "rules": rules, **top}))


def rule(when: dict[str, Any], route: str | None = "human_review", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": extra.pop("id", "r1"), "when": when, "reason_code": "TEST_RULE", **extra}
    if route is not None:
        out["route"] = route
    return out


def case(model: str, **overrides: Any) -> dict[str, Any]:
    built = {**load_contract(model).example_case, **overrides}
    assert load_contract(model).validate_records([built]).ok, built
    return built


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_packaged_policy_loads(model: str) -> None:
    policy = load_policy(model)
    assert policy.model == model
    assert len(policy.version) == 64 and int(policy.version, 16) >= 0
    assert policy.rules and policy.source.startswith("#")
    assert load_policy(model) is policy, "packaged policies are cached"
    public = json.loads(json.dumps(policy.public()))
    assert public["version"] == policy.version
    for shown, r in zip(public["rules"], policy.rules, strict=True):
        assert set(shown) == {"id", "description", "route", "notify", "reason_code", "condition"}
        assert shown["id"] == r.id and shown["description"]
        assert shown["route"] in (None, "finance_approval", "human_review")


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="unknown model 'pricing'"):
        load_policy("pricing")


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_version_ignores_comments_and_layout_but_not_content(model: str) -> None:
    policy = load_policy(model)
    parsed = yaml.safe_load(policy.source)
    relaid = "# a new comment\n\n" + yaml.safe_dump(parsed, default_flow_style=True, width=60)
    assert load_policy_text(relaid).version == policy.version
    changed = copy.deepcopy(parsed)
    changed["rules"][0]["reason_code"] += "_V2"
    assert load_policy_text(yaml.safe_dump(changed)).version != policy.version
    changed = copy.deepcopy(parsed)
    changed["rules"] = changed["rules"][1:]
    assert load_policy_text(yaml.safe_dump(changed)).version != policy.version


NEUTRAL_OUTCOME = {"invoice_classification": "clean", "discount_band": "band_10_20", "routing": "finance_ap"}


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_base_routes(model: str) -> None:
    policy, example = load_policy(model), load_contract(model).example_case
    assert policy.apply(example, NEUTRAL_OUTCOME[model], 0.95, False).to_dict() == {
        "route": "auto",
        "reason_codes": [],
        "notify": [],
        "rules_fired": [],
    }
    abstained = policy.apply(example, None, 0.41, True)
    assert abstained.route == "human_review"
    assert abstained.reason_codes == (ABSTAINED,)


# (model, rule id, outcome, overrides that make it fire, [(outcome, overrides) that must not])
TRIGGERS: list[tuple[str, str, str, dict[str, Any], list[tuple[str, dict[str, Any]]]]] = [
    (
        "invoice_classification",
        "large_invoice_review",
        "price_variance",
        {"amount": 50000.01},
        [("price_variance", {"amount": 50000.0})],
    ),
    (
        "invoice_classification",
        "material_duplicate_review",
        "duplicate_suspect",
        {"amount": 10000.5, "similar_amount_match": True},
        [("duplicate_suspect", {"amount": 10000.0}), ("tax_issue", {"amount": 20000.0})],
    ),
    (
        "invoice_classification",
        "new_vendor_auto_post_approval",
        "clean",
        {"vendor_tenure_months": 2},
        [("clean", {"vendor_tenure_months": 3}), ("missing_po", {"vendor_tenure_months": 0})],
    ),
    ("discount_band", "deep_discount_finance_approval", "band_20_30", {}, [("band_10_20", {})]),
    (
        "discount_band",
        "band_30_plus_non_strategic_review",
        "band_30_plus",
        {"customer_segment": "mid_market"},
        [("band_30_plus", {"customer_segment": "strategic"}), ("band_20_30", {})],
    ),
    (
        "discount_band",
        "large_deal_finance_approval",
        "band_0_5",
        {"list_price_arr": 2_000_001.0},
        [("band_0_5", {"list_price_arr": 2_000_000.0})],
    ),
    (
        "routing",
        "strategic_dispute_notify_legal",
        "finance_ap",
        {"customer_segment": "strategic"},
        [("finance_ap", {"customer_segment": "strategic", "exception_type": "credit_hold"})],
    ),
    (
        "routing",
        "high_stakes_review",
        "finance_credit",
        {"amount_at_stake": 250_000.5},
        [("finance_credit", {"amount_at_stake": 250_000.0})],
    ),
    (
        "routing",
        "repeat_escalation_review",
        "support_tier2",
        {"prior_escalations": 5},
        [("support_tier2", {"prior_escalations": 4})],
    ),
]


def test_every_packaged_rule_has_a_trigger_test() -> None:
    covered = {(m, rid) for m, rid, *_ in TRIGGERS}
    assert covered == {(m, r.id) for m in MODEL_NAMES for r in load_policy(m).rules}


@pytest.mark.parametrize(("model", "rule_id", "outcome", "overrides", "misses"), TRIGGERS)
def test_packaged_rule_fires_only_when_it_should(
    model: str,
    rule_id: str,
    outcome: str,
    overrides: dict[str, Any],
    misses: list[tuple[str, dict[str, Any]]],
) -> None:
    policy = load_policy(model)
    target = next(r for r in policy.rules if r.id == rule_id)
    result = policy.apply(case(model, **overrides), outcome, 0.93, False)
    assert rule_id in result.rules_fired
    assert target.reason_code in result.reason_codes
    assert set(target.notify) <= set(result.notify)
    assert RANK[result.route] >= RANK[target.route or "auto"]
    for miss_outcome, miss_overrides in misses:
        missed = policy.apply(case(model, **miss_overrides), miss_outcome, 0.93, False)
        assert rule_id not in missed.rules_fired, (miss_outcome, miss_overrides)
        assert target.reason_code not in missed.reason_codes


def test_rules_fire_in_order_and_combine() -> None:
    policy = load_policy("discount_band")
    result = policy.apply(case("discount_band", list_price_arr=3_000_000.0), "band_30_plus", 0.9, False)
    assert result.rules_fired == (
        "deep_discount_finance_approval",
        "band_30_plus_non_strategic_review",
        "large_deal_finance_approval",
    )
    assert result.reason_codes == (
        "POLICY_DISCOUNT_20_PLUS",
        "POLICY_DISCOUNT_30_PLUS_NON_STRATEGIC",
        "POLICY_ARR_OVER_2M",
    )
    assert result.route == "human_review"
    strategic = case("discount_band", customer_segment="strategic")
    assert policy.apply(strategic, "band_30_plus", 0.9, False).route == "finance_approval"


def test_notify_only_rule_leaves_route() -> None:
    policy = load_policy("routing")
    dispute = case("routing", customer_segment="strategic")
    decided = policy.apply(dispute, "legal", 0.9, False)
    assert (decided.route, decided.notify) == ("auto", ("legal",))
    assert decided.reason_codes == ("POLICY_STRATEGIC_DISPUTE_NOTIFY_LEGAL",)
    abstained = policy.apply(dispute, None, 0.3, True)
    assert abstained.route == "human_review"
    assert abstained.reason_codes == (ABSTAINED, "POLICY_STRATEGIC_DISPUTE_NOTIFY_LEGAL")
    both = policy.apply({**dispute, "amount_at_stake": 900_000.0}, "legal", 0.9, False)
    assert (both.route, both.notify) == ("human_review", ("legal",))


def test_notify_is_sorted_and_unique() -> None:
    policy = make(
        "routing",
        [
            rule({"field": "days_open", "op": "ge", "value": 0}, None, id="a", notify=["legal", "cfo"]),
            rule({"field": "days_open", "op": "ge", "value": 0}, None, id="b", notify=["legal"]),
        ],
    )
    result = policy.apply(case("routing"), "legal", 0.9, False)
    assert result.notify == ("cfo", "legal") and result.route == "auto"


def random_case(contract: Contract, rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in contract.fields:
        if spec.nullable and rng.random() < 0.2:
            out[spec.name] = None
        elif spec.type == "category":
            out[spec.name] = rng.choice(spec.categories)
        elif spec.type == "bool":
            out[spec.name] = rng.random() < 0.5
        else:
            lo, hi = float(spec.minimum or 0.0), float(spec.maximum or 1e6)
            # Log-uniform from the bottom of the range so thresholds of every size get crossed.
            x = lo + (hi - lo) * 10 ** rng.uniform(-7, 0) if rng.random() < 0.8 else rng.uniform(lo, hi)
            out[spec.name] = round(x) if spec.type == "int" else x
    return out


EXTRA_RULES = [
    rule({"field": "confidence", "op": "lt", "value": 0.7}, "finance_approval", id="x_low_conf"),
    rule({"not": {"field": "region", "op": "in", "value": ["NA", "EMEA"]}}, None, id="x_n", notify=["risk"]),
    rule({"field": "outcome", "op": "is_null"}, "finance_approval", id="x_abstained"),
]


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_rules_never_loosen_the_route(model: str) -> None:
    contract, packaged = load_contract(model), load_policy(model)
    extended = make(model, [*yaml.safe_load(packaged.source)["rules"], *EXTRA_RULES])
    prefixes = [
        dataclasses.replace(extended, rules=extended.rules[:i]) for i in range(len(extended.rules) + 1)
    ]
    rng = random.Random(20260214)
    fired_any: set[str] = set()
    for _ in range(1500):
        subject = random_case(contract, rng)
        assert contract.validate_records([subject]).ok
        abstained = rng.random() < 0.3
        outcome = None if abstained else rng.choice(contract.classes)
        confidence = rng.random()
        base = RANK["human_review" if abstained else "auto"]
        ranks = []
        for policy in prefixes:
            result = policy.apply(subject, outcome, confidence, abstained)
            ranks.append(RANK[result.route])
            fired = [r for r in policy.rules if r.id in result.rules_fired]
            assert ranks[-1] == max([base] + [RANK[r.route] for r in fired if r.route])
            assert result.notify == tuple(sorted({p for r in fired for p in r.notify}))
            fired_any.update(result.rules_fired)
        assert ranks[0] == base
        assert ranks == sorted(ranks), "adding a rule lowered the route"
    assert fired_any == {r.id for r in extended.rules}, "the random cases exercise every rule"


def test_abstained_outcome_is_none_for_rules() -> None:
    policy = make(
        "invoice_classification",
        [
            rule({"field": "outcome", "op": "eq", "value": "clean"}, "finance_approval", id="clean"),
            rule({"field": "outcome", "op": "is_null"}, None, id="null", notify=["ap_lead"]),
            rule({"field": "outcome", "op": "in", "value": ["clean", "tax_issue"]}, id="in"),
            rule({"field": "outcome", "op": "ne", "value": "clean"}, None, id="ne", notify=["x"]),
            rule({"field": "outcome", "op": "not_in", "value": ["clean"]}, None, id="nin", notify=["x"]),
        ],
    )
    example = case("invoice_classification")
    # The caller passes the most likely class while abstaining: rules must still see None.
    assert policy.apply(example, "clean", 0.4, True).rules_fired == ("null", "ne", "nin")
    assert policy.apply(example, "clean", 0.9, False).rules_fired == ("clean", "in")


@pytest.mark.parametrize("null", [None, math.nan, "missing"])
def test_null_field_semantics(null: Any) -> None:
    field = "po_amount_delta_pct"
    checks: dict[str, tuple[dict[str, Any], bool]] = {
        "gt": ({"field": field, "op": "gt", "value": 5}, False),
        "le": ({"field": field, "op": "le", "value": 5}, False),
        "eq": ({"field": field, "op": "eq", "value": 0}, False),
        "in": ({"field": field, "op": "in", "value": [0, 1]}, False),
        "ne": ({"field": field, "op": "ne", "value": 0}, True),
        "not_in": ({"field": field, "op": "not_in", "value": [0]}, True),
        "is_null": ({"field": field, "op": "is_null"}, True),
        "not_null": ({"not": {"field": field, "op": "is_null"}}, False),
        "all": (
            {"all": [{"field": field, "op": "is_null"}, {"field": "po_present", "op": "eq", "value": False}]},
            True,
        ),
        "any": (
            {
                "any": [
                    {"field": field, "op": "gt", "value": 5},
                    {"field": "amount", "op": "gt", "value": 1e6},
                ]
            },
            False,
        ),
    }
    policy = make("invoice_classification", [rule(when, id=name) for name, (when, _) in checks.items()])
    subject = case("invoice_classification", po_present=False, po_amount_delta_pct=None)
    if null == "missing":
        del subject[field]
    else:
        subject[field] = null
    fired = set(policy.apply(subject, "missing_po", 0.9, False).rules_fired)
    assert fired == {name for name, (_, expected) in checks.items() if expected}
    present = policy.apply({**subject, field: 7.5}, "missing_po", 0.9, False).rules_fired
    assert set(present) == {"gt", "ne", "not_in", "not_null", "any"}


def test_confidence_and_bool_conditions() -> None:
    policy = make(
        "invoice_classification",
        [
            rule({"field": "confidence", "op": "lt", "value": 0.8}, "finance_approval", id="low"),
            rule({"field": "po_present", "op": "eq", "value": False}, id="no_po"),
        ],
    )
    assert policy.apply(case("invoice_classification"), "clean", 0.75, False).route == "finance_approval"
    assert policy.apply(case("invoice_classification"), "clean", 0.8, False).route == "auto"
    no_po = case("invoice_classification", po_present=False, po_amount_delta_pct=None)
    assert policy.apply(no_po, "missing_po", 0.99, False).rules_fired == ("no_po",)


def _mutated(mutate: Any) -> str:
    raw = yaml.safe_load(load_policy("invoice_classification").source)
    mutate(raw)
    return yaml.safe_dump(raw)


def _leaf(raw: dict[str, Any], **leaf: Any) -> None:
    raw["rules"][0]["when"] = leaf


def _set(key: str, value: Any) -> Any:
    return lambda raw: raw["rules"][0].__setitem__(key, value)


INVALID: dict[str, tuple[Any, str]] = {
    "unknown top-level key": (lambda raw: raw.update(owner="ap"), r"unknown key\(s\) \['owner'\]"),
    "unknown rule key": (
        _set("severity", "high"),
        r"rule 'large_invoice_review': unknown key\(s\) \['severity'\]",
    ),
    "unknown leaf key": (
        lambda raw: raw["rules"][0]["when"].update(unit="USD"),
        r"unknown key\(s\) \['unit'\]",
    ),
    "unknown op": (lambda raw: _leaf(raw, field="amount", op="between", value=1), "unknown op 'between'"),
    "unknown route": (_set("route", "escalate"), "unknown route 'escalate'"),
    "route auto": (_set("route", "auto"), "unknown route 'auto'.*notify-only"),
    "field not in contract": (
        lambda raw: _leaf(raw, field="amount_usd", op="gt", value=1),
        "field 'amount_usd' is not in the invoice_classification contract",
    ),
    "no field": (lambda raw: _leaf(raw, op="gt", value=1), "names no `field`"),
    "outcome not a class": (
        lambda raw: _leaf(raw, field="outcome", op="eq", value="fraud"),
        "outcome 'fraud' is not a class of the model",
    ),
    "outcome list not classes": (
        lambda raw: _leaf(raw, field="outcome", op="in", value=["clean", "fraud"]),
        "outcome 'fraud' is not a class",
    ),
    "category not allowed": (
        lambda raw: _leaf(raw, field="currency", op="eq", value="CHF"),
        "'CHF' is not a category of currency",
    ),
    "category list not allowed": (
        lambda raw: _leaf(raw, field="currency", op="not_in", value=["EUR", "CHF"]),
        "'CHF' is not a category of currency",
    ),
    "numeric op on category": (
        lambda raw: _leaf(raw, field="currency", op="gt", value="EUR"),
        "numeric op gt needs a numeric field; currency is category",
    ),
    "numeric op on bool": (
        lambda raw: _leaf(raw, field="po_present", op="lt", value=1),
        "numeric op lt needs a numeric field; po_present is bool",
    ),
    "numeric op on outcome": (
        lambda raw: _leaf(raw, field="outcome", op="ge", value="clean"),
        "numeric op ge needs a numeric field; outcome is outcome",
    ),
    "text for a number": (
        lambda raw: _leaf(raw, field="amount", op="gt", value="50k"),
        "'50k' is not a finite",
    ),
    "bool for a number": (
        lambda raw: _leaf(raw, field="amount", op="gt", value=True),
        "True is not a finite",
    ),
    "nan for a number": (
        lambda raw: _leaf(raw, field="amount", op="gt", value=math.nan),
        "nan is not a finite",
    ),
    "number for a bool": (
        lambda raw: _leaf(raw, field="po_present", op="eq", value=1),
        "1 is not true/false",
    ),
    "confidence out of range": (
        lambda raw: _leaf(raw, field="confidence", op="lt", value=80),
        "confidence is between 0 and 1",
    ),
    "is_null on non-nullable": (lambda raw: _leaf(raw, field="amount", op="is_null"), "amount is not"),
    "is_null with value": (
        lambda raw: _leaf(raw, field="po_amount_delta_pct", op="is_null", value=True),
        "is_null takes no value",
    ),
    "missing value": (lambda raw: _leaf(raw, field="amount", op="gt"), "op gt on amount needs a `value`"),
    "in without list": (
        lambda raw: _leaf(raw, field="currency", op="in", value="EUR"),
        "non-empty list value",
    ),
    "empty all": (
        lambda raw: raw["rules"][0].__setitem__("when", {"all": []}),
        "`all` needs a non-empty list",
    ),
    "combinator plus leaf": (
        lambda raw: raw["rules"][0]["when"].update({"any": [{"field": "amount", "op": "gt", "value": 1}]}),
        "`any` must be the only key",
    ),
    "condition not a mapping": (_set("when", ["amount > 5"]), "a condition must be a non-empty mapping"),
    "missing when": (lambda raw: raw["rules"][0].pop("when"), "`when` .* is required"),
    "duplicate rule ids": (
        lambda raw: raw["rules"][1].__setitem__("id", "large_invoice_review"),
        "duplicate rule id 'large_invoice_review'",
    ),
    "missing reason_code": (lambda raw: raw["rules"][0].pop("reason_code"), "`reason_code` is required"),
    "lower-case reason_code": (_set("reason_code", "big invoice"), "UPPER_SNAKE_CASE"),
    "missing id": (lambda raw: raw["rules"][0].pop("id"), r"rule #1: `id` is required"),
    "no route nor notify": (lambda raw: raw["rules"][0].pop("route"), "needs a `route`, a `notify` list"),
    "bad notify": (_set("notify", "legal"), "`notify` must be a list"),
    "rules not a list": (lambda raw: raw.update(rules={"a": 1}), "`rules` is required and must be a list"),
    "missing model": (lambda raw: raw.pop("model"), "`model` is required"),
    "unknown model": (lambda raw: raw.update(model="pricing"), "unknown model 'pricing'"),
}


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_policies_are_rejected_with_a_clear_message(name: str) -> None:
    mutate, message = INVALID[name]
    with pytest.raises(ValueError, match=message):
        load_policy_text(_mutated(mutate))


def test_policy_must_match_the_contract_given() -> None:
    source = load_policy("invoice_classification").source
    with pytest.raises(ValueError, match="contract is 'routing'"):
        load_policy_text(source, load_contract("routing"))
    with pytest.raises(ValueError, match="not a Keel policy"):
        load_policy_text("- just\n- a list\n")
    assert load_policy_text(source, load_contract("invoice_classification")).version == (
        load_policy("invoice_classification").version
    )
