"""Operational exceptions waiting for a team queue (model ``routing``).

Generative story
----------------
An exception is raised on an account (region -> entity) by a source system
that mostly follows the exception type (credit holds from the ERP, pricing
exceptions from CPQ, provisioning failures from support, disputes from
billing).  The money at stake is log-normal per type, scaled by the customer
segment (strategic accounts carry ~6x a mid-market amount).  Larger accounts
more often have contract redlines and earlier escalations.  System-raised
exceptions (``system_alert``) carry no customer message, hence no sentiment;
otherwise sentiment is negative for disputes, refunds and outages.

Label rule (uses model features only)
-------------------------------------
* ``billing_dispute``: ``legal`` when the account is strategic with contract
  redlines; else ``finance_credit`` when >= 25,000 USD at stake or the account
  had >= 3 escalations (a collections problem); else ``finance_ap``;
* ``credit_hold`` -> ``finance_credit``; ``contract_clause`` -> ``legal``;
* ``pricing_exception`` -> ``legal`` with redlines and >= 100,000 USD at
  stake, else ``sales_ops``;
* ``provisioning_failure`` -> ``support_tier2``; ``vendor_onboarding`` ->
  ``procurement``; ``tax_setup`` -> ``finance_ap``;
* ``refund_request`` -> ``finance_ap`` from 1,000 USD, else ``support_tier2``.

Scenarios: ``concept_shift`` sends every non-legal billing dispute to
``finance_credit``; ``region_process_change`` gives EMEA a finance shared
service: all EMEA refunds go to ``finance_ap`` and every EMEA pricing exception
with redlines to ``legal``, while EMEA raises more tax-setup and
contract-clause exceptions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .common import (
    Domain,
    Inputs,
    LabelNoise,
    bernoulli,
    cat,
    choice,
    conditional_choice,
    flag,
    lognormal,
    lookup,
    num,
    process_changed,
    sample_region_entity,
)

CLASSES = ("finance_ap", "finance_credit", "legal", "sales_ops", "support_tier2", "procurement")

REGIONS = {"NA": 0.4, "EMEA": 0.3, "APAC": 0.18, "LATAM": 0.12}
TYPES = {
    "billing_dispute": 0.22,
    "credit_hold": 0.12,
    "contract_clause": 0.1,
    "pricing_exception": 0.12,
    "provisioning_failure": 0.16,
    "vendor_onboarding": 0.08,
    "tax_setup": 0.07,
    "refund_request": 0.13,
}
TYPES_SHIFTED = {**TYPES, "billing_dispute": 0.3, "vendor_onboarding": 0.16, "tax_setup": 0.1}
TYPES_EMEA_CHANGE = {**TYPES, "tax_setup": 0.16, "contract_clause": 0.16}
SEGMENTS = {"smb": 0.35, "mid_market": 0.3, "enterprise": 0.25, "strategic": 0.1}
AMOUNT_MEDIAN = {
    "billing_dispute": 8000,
    "credit_hold": 40_000,
    "contract_clause": 100_000,
    "pricing_exception": 50_000,
    "provisioning_failure": 5000,
    "vendor_onboarding": 20_000,
    "tax_setup": 10_000,
    "refund_request": 900,
}
SEGMENT_SCALE = {"smb": 0.4, "mid_market": 1.0, "enterprise": 2.5, "strategic": 6.0}
SOURCES = {
    "billing_dispute": {"billing": 0.6, "crm": 0.2, "support": 0.2},
    "credit_hold": {"erp": 0.7, "billing": 0.3},
    "contract_clause": {"crm": 0.5, "cpq": 0.4, "support": 0.1},
    "pricing_exception": {"cpq": 0.7, "crm": 0.3},
    "provisioning_failure": {"support": 0.55, "erp": 0.2, "crm": 0.15, "billing": 0.1},
    "vendor_onboarding": {"erp": 0.9, "crm": 0.1},
    "tax_setup": {"erp": 0.6, "billing": 0.4},
    "refund_request": {"billing": 0.5, "support": 0.4, "crm": 0.1},
}
CHANNELS = {
    "billing": {"system_alert": 0.5, "email": 0.3, "web_form": 0.2},
    "erp": {"system_alert": 0.7, "email": 0.3},
    "crm": {"email": 0.5, "phone": 0.3, "web_form": 0.2},
    "cpq": {"web_form": 0.6, "email": 0.4},
    "support": {"chat": 0.35, "phone": 0.25, "web_form": 0.2, "email": 0.2},
}
CHANNELS_SHIFTED = {s: {**d, "chat": d.get("chat", 0.0) + 0.8} for s, d in CHANNELS.items()}
SENTIMENT_MEAN = {
    "billing_dispute": -0.6,
    "refund_request": -0.4,
    "provisioning_failure": -0.5,
    "credit_hold": -0.2,
}
REDLINE_RATE = {"smb": 0.05, "mid_market": 0.15, "enterprise": 0.35, "strategic": 0.6}
ESCALATION_MEAN = {"smb": 0.4, "mid_market": 0.6, "enterprise": 0.9, "strategic": 1.4}
PRODUCTS = {"core": 0.45, "analytics": 0.2, "security": 0.2, "platform": 0.15}

FIXED_QUEUE = {
    "credit_hold": "finance_credit",
    "contract_clause": "legal",
    "provisioning_failure": "support_tier2",
    "vendor_onboarding": "procurement",
    "tax_setup": "finance_ap",
}
DISPUTE_CREDIT_USD, PRICING_LEGAL_USD, REFUND_AP_USD = 25_000.0, 100_000.0, 1_000.0
AMOUNT_NOISE = 0.1  # log-scale judgement around a money threshold (~10 %)


def inputs(rng: np.random.Generator, n: int, scenario: str) -> Inputs:
    shifted = scenario == "covariate_shift"
    region, entity = sample_region_entity(rng, n, REGIONS)
    types = {r: TYPES_SHIFTED if shifted else TYPES for r in REGIONS}
    if scenario == "region_process_change":
        types["EMEA"] = TYPES_EMEA_CHANGE
    etype = conditional_choice(rng, region, types)
    segment = choice(rng, n, SEGMENTS)
    median = lookup(etype, AMOUNT_MEDIAN) * lookup(segment, SEGMENT_SCALE)
    amount = lognormal(rng, median * (1.5 if shifted else 1.0), 1.1, n)
    source = conditional_choice(rng, etype, SOURCES)
    channel = conditional_choice(rng, source, CHANNELS_SHIFTED if shifted else CHANNELS)
    mood = lookup(etype, SENTIMENT_MEAN, default=0.1) + 0.5 * rng.standard_normal(n)
    silent = (channel == "system_alert") | (rng.random(n) < 0.15)
    escalations = rng.standard_exponential(n) * lookup(segment, ESCALATION_MEAN)
    days = rng.standard_exponential(n) * np.where(etype == "contract_clause", 12.0, 4.0)
    return {
        "exception_type": etype,
        "amount_at_stake": np.round(np.clip(amount, 0, 1e8), 2),
        "customer_segment": segment,
        "days_open": np.clip(np.floor(days), 0, 365).astype(np.int64),
        "prior_escalations": np.clip(np.floor(escalations), 0, 50).astype(np.int64),
        "source_system": source,
        "sentiment_score": np.where(silent, np.nan, np.round(np.tanh(mood), 3)),
        "contract_redlines_present": bernoulli(rng, lookup(segment, REDLINE_RATE), n),
        "channel": channel,
        "product_line": choice(rng, n, PRODUCTS),
        "region": region,
        "entity": entity,
    }


def rule(frame: pd.DataFrame, scenario: str, noise: LabelNoise) -> np.ndarray:
    """Queue codes (index into CLASSES) from exception type and its modifiers."""
    q = {name: code for code, name in enumerate(CLASSES)}
    etype = cat(frame, "exception_type")
    changed = process_changed(scenario, frame)
    log_amount = np.log(np.maximum(num(frame, "amount_at_stake"), 0.01))

    def at_least(usd: float, k: int) -> np.ndarray:  # "amount >= usd", judged with jitter k
        return noise.exceeds((log_amount - np.log(usd)) / AMOUNT_NOISE, k)

    redlines = flag(frame, "contract_redlines_present")
    strategic = cat(frame, "customer_segment") == "strategic"
    to_credit = at_least(DISPUTE_CREDIT_USD, 0) | (num(frame, "prior_escalations") >= 3)
    to_credit = to_credit | (scenario == "concept_shift")
    dispute = np.select([redlines & strategic, to_credit], [q["legal"], q["finance_credit"]], q["finance_ap"])
    pricing = np.where(redlines & (at_least(PRICING_LEGAL_USD, 1) | changed), q["legal"], q["sales_ops"])
    refund = np.where(at_least(REFUND_AP_USD, 2) | changed, q["finance_ap"], q["support_tier2"])
    fixed = {kind: q[queue] for kind, queue in FIXED_QUEUE.items()}
    codes = np.select(
        [etype == "billing_dispute", etype == "pricing_exception", etype == "refund_request"],
        [dispute, pricing, refund],
        lookup(etype, fixed, default=-1),
    ).astype(np.int64)
    if (codes < 0).any():
        raise ValueError("unknown exception_type")
    return codes


DOMAIN = Domain("routing", "queue", CLASSES, "EXC", inputs, rule)
