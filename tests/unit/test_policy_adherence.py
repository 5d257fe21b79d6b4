"""Policy adherence across segments: rule fire and override rates per value, and the spread test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency
from statsmodels.stats.proportion import proportion_confint

from keel.feature_defs.contract import load_contract
from keel.feature_defs.policy import load_policy, load_policy_text
from keel.monitoring.policy_adherence import rule_usage, rules_alone
from keel.training.generators import generate

REGIONAL_RULE = """
model: invoice_classification
rules:
  - id: latam_review
    description: LATAM invoices over 5,000 USD are reviewed (a rule that reads a segment field).
    when:
      all:
        - {field: region, op: eq, value: LATAM}
        - {field: amount, op: gt, value: 5000}
    route: human_review
    reason_code: POLICY_LATAM_REVIEW
  - id: large_invoice_review
    when: {field: amount, op: gt, value: 50000}
    route: human_review
    reason_code: POLICY_AMOUNT_OVER_50K
"""


def _frame(n: int = 2000) -> pd.DataFrame:
    frame = generate("invoice_classification", n, seed=5)
    rng = np.random.default_rng(5)
    frame["model_version"] = "1"
    frame["abstained"] = rng.random(n) < 0.1
    frame["outcome"] = np.where(frame["abstained"], None, frame["exception_path"])
    frame["confidence"] = rng.uniform(0.5, 1.0, n)
    kinds = rng.choice(["override", "confirmation", None], n, p=[0.1, 0.3, 0.6])
    frame["feedback_kind"] = np.where(frame["abstained"] & (kinds != None), "label", kinds)  # noqa: E711
    return frame


def test_fire_and_override_rates_per_value_are_counted_with_exact_intervals() -> None:
    contract = load_contract("invoice_classification")
    frame = _frame()
    policy = load_policy_text(REGIONAL_RULE)
    (latam, large) = rule_usage(frame, {"1": policy}, contract.field_names, ["region", "channel"], 0.95)
    assert latam["rule"] == "latam_review" and latam["route"] == "human_review"

    fired = (frame["region"] == "LATAM") & (frame["amount"] > 5000)
    reviewed = frame["feedback_kind"].isin(["override", "confirmation"]) & ~frame["abstained"]
    by_value = {r["value"]: r for r in latam["by_field"]["region"]["values"]}
    for region, row in by_value.items():
        at = frame["region"] == region
        assert row["fired"]["k"] == int((fired & at).sum()) and row["fired"]["n"] == int(at.sum())
        low, high = proportion_confint(row["fired"]["k"], row["fired"]["n"], alpha=0.05, method="beta")
        assert abs(row["fired"]["low"] - low) < 1e-6 and abs(row["fired"]["high"] - high) < 1e-6  # 6 digits
        on = fired & at & reviewed
        assert row["overridden"]["n"] == int(on.sum())
        assert row["overridden"]["k"] == int((on & (frame["feedback_kind"] == "override")).sum())
    assert by_value["NA"]["fired"]["k"] == 0 and by_value["LATAM"]["fired"]["k"] > 0

    # The rule that reads region fires differently across regions; the amount rule, by chance only.
    assert latam["by_field"]["region"]["applied_differently"]
    table = pd.crosstab(frame["region"], fired)
    assert latam["by_field"]["region"]["p_value"] == chi2_contingency(table.to_numpy())[1]
    assert not large["by_field"]["channel"]["applied_differently"]
    assert latam["by_field"]["region"]["p_holm"] >= latam["by_field"]["region"]["p_value"]


def test_each_case_is_judged_by_its_own_versions_policy() -> None:
    contract = load_contract("invoice_classification")
    frame = _frame(600)
    frame.loc[300:, "model_version"] = "2"
    policies = {"1": load_policy_text(REGIONAL_RULE), "2": load_policy("invoice_classification")}
    rules = {r["rule"]: r for r in rule_usage(frame, policies, contract.field_names, ["region"], 0.95)}
    latam = rules["latam_review"]["fired"]
    expected = (
        (frame["region"] == "LATAM") & (frame["amount"] > 5000) & (frame["model_version"] == "1")
    ).sum()
    assert latam["k"] == expected and latam["n"] == 600
    assert {"new_vendor_auto_post_approval", "material_duplicate_review"} <= set(rules)


def test_rules_alone_reports_fields_no_rule_reads_as_invariant_by_construction() -> None:
    table = pd.DataFrame(
        {
            "field": "region",
            "from": "NA",
            "to": ["EMEA", "LATAM"] * 50,
            "case": np.repeat([f"c{i}" for i in range(50)], 2),
            "route": [False, True] * 25 + [False, False] * 25,
            "rules": [False, True] * 25 + [False, False] * 25,
        }
    )
    out = rules_alone(table, {"region": ["latam_review"]}, ["region", "channel"], 0.95)
    assert out[0]["status"] == "measured" and out[0]["route"]["k"] == 25 and out[0]["route"]["n"] == 50
    assert out[1] == {"field": "channel", "status": "invariant_by_construction", "rules": []}


def test_override_rates_of_a_rules_cases_are_weighted_by_audit_inclusion_probabilities() -> None:
    """Audited cases count 1 / probability each (Hajek), read from the record's audit; discretionary
    reviews are counted apart and never enter the estimate."""
    contract = load_contract("invoice_classification")
    frame = _frame(3000)
    rng = np.random.default_rng(9)
    decided = ~frame["abstained"]
    # LATAM audited at 40%, elsewhere at 5%: unweighted, LATAM would dominate the estimate.
    probability = np.where(frame["region"] == "LATAM", 0.4, 0.05)
    frame["audit_selected"] = decided & (rng.random(len(frame)) < probability)
    frame["audit_probability"] = np.where(frame["audit_selected"], probability, np.nan)
    reviewed_kinds = ["override", "confirmation"]
    # Every audited case gets a review; the region's overrides differ so the weights matter.
    kinds = np.where(rng.random(len(frame)) < np.where(frame["region"] == "LATAM", 0.5, 0.1), *reviewed_kinds)
    frame.loc[frame["audit_selected"], "feedback_kind"] = kinds[frame["audit_selected"].to_numpy()]
    (_, large) = rule_usage(
        frame, {"1": load_policy_text(REGIONAL_RULE)}, contract.field_names, ["channel"], 0.95
    )
    fired = (frame["amount"] > 50000).to_numpy()
    reviewed = frame["feedback_kind"].isin(reviewed_kinds).to_numpy() & decided.to_numpy()
    overridden = frame["feedback_kind"].eq("override").to_numpy()
    for row in large["by_field"]["channel"]["values"]:
        at = (frame["channel"] == row["value"]).to_numpy() & fired
        sel = at & frame["audit_selected"].to_numpy() & reviewed
        w = 1 / frame["audit_probability"].to_numpy()[sel]
        est = row["overridden_audited"]
        assert est["n"] == int(sel.sum())
        if sel.any():
            assert est["value"] == pytest.approx(float((w * overridden[sel]).sum() / w.sum()), abs=1e-12)
            assert est["low"] <= est["value"] <= est["high"]
        disc = at & reviewed & ~frame["audit_selected"].to_numpy()
        assert row["overridden_discretionary"]["n"] == int(disc.sum())
        assert row["overridden_discretionary"]["k"] == int((disc & overridden).sum())
        assert row["overridden"]["n"] == int((at & reviewed).sum())
    assert sum(r["overridden_audited"]["n"] for r in large["by_field"]["channel"]["values"]) >= 10
