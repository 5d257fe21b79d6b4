"""Supplier invoices arriving in accounts payable (model ``invoice_classification``).

Generative story
----------------
An invoice is received by a legal entity (region -> entity).  Its spend
category sets the amount (log-normal per category, in USD) and how often the
buyer raised a purchase order (hardware almost always, travel rarely).  The
supplier bills in the entity's currency, sometimes in USD.  The channel mix
depends on the region (EDI in EMEA, e-mailed PDFs in LATAM).  The tax engine
expects the entity's rate for the category (DE 19 / 7 travel, GB 20 / 0
travel, FR 20 / 10 travel, US 0-8 sales tax on goods, CA 5 or 13, JP 10, SG 9,
AU 10, BR 17 / 5 services, MX 16, EU cross-border services reverse-charged at
0).  Suppliers mis-bill tax now and then, far more often in LATAM (BR most).
Re-sent e-mailed PDFs create duplicates; new vendors bill off-contract prices;
logistics and hardware deliveries are short or over-shipped; recurring monthly
invoices repeat the same amount ~30 days apart (not duplicates).

Label rule (precedence, first match wins; uses model features only)
-------------------------------------------------------------------
1. ``missing_po``: no PO, except travel/facilities invoices under 300 USD;
2. ``duplicate_suspect``: a similar invoice with the same amount <= 14 days ago;
3. ``price_variance``: ``|po_amount_delta_pct| > 3`` (concept_shift: 1);
4. ``quantity_mismatch``: ``|gr_quantity_delta_pct| > 2``;
5. ``tax_issue``: ``|billed - expected tax| > 0.5`` pp;
6. ``clean`` otherwise.

``region_process_change``: EMEA moved to a stricter AP process - more EMEA
invoices arrive without a PO reference, the small-travel exemption is gone and
tax gaps above 0.1 pp are tax issues (e-invoicing mandates); EMEA also sees
more small rounding gaps in billed tax.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .common import (
    ENTITY_CURRENCY,
    Domain,
    Inputs,
    LabelNoise,
    bernoulli,
    cat,
    choice,
    column,
    conditional_choice,
    first_firing,
    flag,
    lognormal,
    lookup,
    num,
    process_changed,
    sample_region_entity,
)

CLASSES = ("clean", "price_variance", "quantity_mismatch", "missing_po", "duplicate_suspect", "tax_issue")

REGIONS = {"NA": 0.35, "EMEA": 0.30, "APAC": 0.20, "LATAM": 0.15}
# spend category: (share, median amount USD, log-sd, share with a PO, quantity-mismatch rate)
CATEGORY_PROFILE = {
    "software": (0.18, 8000, 1.2, 0.95, 0.06),
    "hardware": (0.15, 12000, 1.1, 0.98, 0.12),
    "services": (0.22, 15000, 1.0, 0.92, 0.06),
    "logistics": (0.13, 3000, 0.9, 0.93, 0.18),
    "facilities": (0.10, 1500, 1.0, 0.78, 0.06),
    "marketing": (0.10, 6000, 1.1, 0.88, 0.06),
    "travel": (0.12, 600, 0.9, 0.55, 0.06),
}
# receiving entity: (standard tax rate %, supplier tax-error rate)
ENTITY_TAX = {
    "US01": (0.0, 0.05),
    "CA01": (5.0, 0.06),
    "DE01": (19.0, 0.05),
    "GB01": (20.0, 0.05),
    "FR01": (20.0, 0.06),
    "SG01": (9.0, 0.05),
    "JP01": (10.0, 0.04),
    "AU01": (10.0, 0.05),
    "BR01": (17.0, 0.22),
    "MX01": (16.0, 0.10),
}
REDUCED_TAX = {("DE01", "travel"): 7.0, ("FR01", "travel"): 10.0, ("GB01", "travel"): 0.0}
REDUCED_TAX |= {("BR01", "services"): 5.0, ("BR01", "software"): 5.0}  # ISS instead of ICMS
US_SALES_TAX = {"0.0": 0.3, "4.0": 0.1, "6.0": 0.2, "6.25": 0.15, "7.0": 0.15, "8.0": 0.1}
CHANNELS = {
    "NA": {"edi": 0.35, "email_pdf": 0.25, "portal": 0.2, "api": 0.2},
    "EMEA": {"edi": 0.45, "email_pdf": 0.2, "portal": 0.25, "api": 0.1},
    "APAC": {"edi": 0.25, "email_pdf": 0.35, "portal": 0.25, "api": 0.15},
    "LATAM": {"edi": 0.15, "email_pdf": 0.5, "portal": 0.25, "api": 0.1},
}
CHANNELS_SHIFTED = {r: {"edi": 0.1, "email_pdf": 0.65, "portal": 0.15, "api": 0.1} for r in CHANNELS}
DUPLICATE_RATE = {"edi": 0.015, "email_pdf": 0.12, "portal": 0.04, "api": 0.02}
TERMS = {
    "NA": {"30": 0.6, "45": 0.15, "60": 0.15, "15": 0.1},
    "EMEA": {"30": 0.5, "60": 0.3, "45": 0.1, "90": 0.1},
    "APAC": {"30": 0.55, "60": 0.25, "45": 0.1, "0": 0.1},
    "LATAM": {"30": 0.4, "45": 0.25, "60": 0.2, "90": 0.15},
}

PRICE_TOLERANCE, SHIFTED_PRICE_TOLERANCE = 3.0, 1.0
QTY_TOLERANCE = 2.0
TAX_TOLERANCE, CHANGED_TAX_TOLERANCE = 0.5, 0.1
DUPLICATE_WINDOW_DAYS = 14.0
SMALL_INVOICE_USD = 300.0


def _tax(
    rng: np.random.Generator, n: int, entity: np.ndarray, category: np.ndarray, changed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Expected (tax engine) and billed (supplier) tax rates in percent."""
    expected = lookup(entity, column(ENTITY_TAX, 0))
    for (where, spend), rate in REDUCED_TAX.items():
        expected = np.where((entity == where) & (category == spend), rate, expected)
    goods = np.isin(category, ["hardware", "facilities", "marketing"])
    us_rate = choice(rng, n, US_SALES_TAX).astype(float)
    expected = np.where((entity == "US01") & goods, us_rate, expected)
    expected = np.where((entity == "CA01") & (rng.random(n) < 0.55), 13.0, expected)
    eu = np.isin(entity, ["DE01", "FR01"]) & np.isin(category, ["software", "services"])
    expected = np.where(eu & (rng.random(n) < 0.12), 0.0, expected)  # reverse charge
    error = bernoulli(rng, lookup(entity, column(ENTITY_TAX, 1)), n)
    size, kind = 1.0 + 7.0 * rng.random(n), rng.random(n)
    wrong = np.where(
        (kind < 0.35) & (expected >= 1.0),
        -expected,  # tax left off
        np.where((expected > 9.0) & (kind > 0.7), -size, size),
    )
    rounding = bernoulli(rng, np.where(changed, 0.12, 0.02), n)
    small = (0.15 + 0.3 * rng.random(n)) * np.where(expected > 1.0, np.sign(kind - 0.5), 1.0)
    billed = expected + np.where(error, wrong, np.where(rounding, small, 0.0))
    return expected, np.round(np.clip(billed, 0.0, 40.0), 2)


def _deltas(
    rng: np.random.Generator,
    n: int,
    rate: np.ndarray,
    median: float,
    sigma: float,
    exact_zero: np.ndarray,
    small_sd: float,
) -> np.ndarray:
    """Percent deltas: exact match, small noise within tolerance, or a real deviation."""
    dev = bernoulli(rng, rate, n)
    sign = np.where(rng.random(n) < 0.7, 1.0, -1.0)
    big = sign * lognormal(rng, median, sigma, n)
    zero = bernoulli(rng, exact_zero, n)
    small = small_sd * rng.standard_normal(n)
    delta = np.where(dev, big, np.where(zero, 0.0, small))
    return np.round(np.clip(delta, -95.0, 1000.0), 2)


def inputs(rng: np.random.Generator, n: int, scenario: str) -> Inputs:
    shifted = scenario == "covariate_shift"
    region, entity = sample_region_entity(rng, n, REGIONS)
    changed = process_changed(scenario, region)
    category = choice(rng, n, column(CATEGORY_PROFILE, 0))
    median = lookup(category, column(CATEGORY_PROFILE, 1))
    amount = lognormal(rng, median, lookup(category, column(CATEGORY_PROFILE, 2)), n)
    amount = np.round(np.clip(amount * (1.5 if shifted else 1.0), 0.01, 5e6), 2)
    local = np.asarray(pd.Series(entity).map(ENTITY_CURRENCY), dtype=object)
    currency = np.where(rng.random(n) < 0.12, "USD", local).astype(object)
    channel = conditional_choice(rng, region, CHANNELS_SHIFTED if shifted else CHANNELS)
    channel = np.where(changed & (rng.random(n) < 0.3), "email_pdf", channel).astype(object)
    new_vendor = bernoulli(rng, 0.4 if shifted else 0.12, n)
    tenure = np.where(new_vendor, np.floor(6.0 * rng.random(n)), np.floor(6.0 + lognormal(rng, 36.0, 0.8, n)))
    count = np.floor(lognormal(rng, np.where(np.isin(channel, ["edi", "api"]), 12.0, 4.0), 1.0, n))
    po_rate = lookup(category, column(CATEGORY_PROFILE, 3)) * np.where(channel == "email_pdf", 0.93, 1.0)
    po_rate = po_rate * np.where(region == "LATAM", 0.92, 1.0) * np.where(changed, 0.75, 1.0)
    po_present = bernoulli(rng, po_rate, n)
    structured = np.isin(channel, ["edi", "api"])
    pv_rate = np.where(new_vendor, 0.3, 0.07) + np.where(category == "hardware", 0.03, 0.0)
    po_delta = _deltas(rng, n, pv_rate, 7.0, 0.5, np.where(structured, 0.8, 0.55), 1.0)
    received = po_present & ~(np.isin(category, ["services", "software", "travel"]) & (rng.random(n) < 0.6))
    qm_rate = lookup(category, column(CATEGORY_PROFILE, 4))
    qty_delta = _deltas(rng, n, qm_rate, 12.0, 0.6, np.full(n, 0.75), 0.7)
    expected, billed = _tax(rng, n, entity, category, changed)
    duplicate = bernoulli(rng, lookup(channel, DUPLICATE_RATE), n)
    recurring = bernoulli(rng, np.isin(category, ["software", "facilities"]) * 0.25, n)
    prior = duplicate | recurring | ((count > 0) & (rng.random(n) < 0.7))
    days = np.where(
        duplicate,
        0.2 + 11.0 * rng.random(n),
        np.where(recurring, 28.0 + 3.0 * rng.random(n), rng.standard_exponential(n) * 45.0),
    )
    match = duplicate | recurring | (prior & (rng.random(n) < 0.02))
    return {
        "amount": amount,
        "currency": currency,
        "vendor_tenure_months": np.minimum(tenure, 600).astype(np.int64),
        "vendor_invoice_count_90d": np.clip(count, prior, 100_000).astype(np.int64),
        "po_present": po_present,
        "po_amount_delta_pct": np.where(po_present, po_delta, np.nan),
        "gr_quantity_delta_pct": np.where(received, qty_delta, np.nan),
        "line_count": np.clip(np.floor(lognormal(rng, 4.0, 1.0, n)), 1, 5000).astype(np.int64),
        "billed_tax_rate": billed,
        "expected_tax_rate": expected,
        "days_since_similar_invoice": np.where(prior, np.round(np.minimum(days, 3650), 2), np.nan),
        "similar_amount_match": match & prior,
        "payment_terms_days": conditional_choice(rng, region, TERMS).astype(np.int64),
        "spend_category": category,
        "channel": channel,
        "region": region,
        "entity": entity,
    }


def rule(frame: pd.DataFrame, scenario: str, noise: LabelNoise) -> np.ndarray:
    """Exception path codes (index into CLASSES) from model-feature fields."""
    changed = process_changed(scenario, frame)
    small_cat = np.isin(cat(frame, "spend_category"), ["travel", "facilities"]) & ~changed
    over_small = np.log(np.maximum(num(frame, "amount"), 0.01) / SMALL_INVOICE_USD) / 0.1
    missing_po = np.where(flag(frame, "po_present"), -np.inf, np.where(small_cat, over_small, np.inf))
    days = num(frame, "days_since_similar_invoice")
    duplicate = np.where(flag(frame, "similar_amount_match"), (DUPLICATE_WINDOW_DAYS - days) / 1.5, -np.inf)
    price_tolerance = SHIFTED_PRICE_TOLERANCE if scenario == "concept_shift" else PRICE_TOLERANCE
    price = (np.abs(num(frame, "po_amount_delta_pct")) - price_tolerance) / 0.4
    quantity = (np.abs(num(frame, "gr_quantity_delta_pct")) - QTY_TOLERANCE) / 0.4
    tolerance = np.where(changed, CHANGED_TAX_TOLERANCE, TAX_TOLERANCE)
    gap = num(frame, "billed_tax_rate") - num(frame, "expected_tax_rate")
    tax = (np.abs(gap) - tolerance) / 0.1
    rules = [missing_po, duplicate, price, quantity, tax]
    order = ["missing_po", "duplicate_suspect", "price_variance", "quantity_mismatch", "tax_issue"]
    return first_firing([(CLASSES.index(c), m) for c, m in zip(order, rules, strict=True)], 0, noise)


DOMAIN = Domain("invoice_classification", "exception_path", CLASSES, "INV", inputs, rule)
