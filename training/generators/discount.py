"""Sales quotes reaching the deal desk (model ``discount_band``).

Generative story
----------------
A quote is sold by a legal entity (region -> entity) through a channel whose
mix depends on the region (partners are strong in LATAM and EMEA).  The
customer segment drives list ARR (log-normal: SMB ~12k, mid-market ~60k,
enterprise ~250k, strategic ~1.2M USD) and the billing model (SMB often
monthly); seats follow from ARR and the product line's per-seat price; term
follows billing (monthly deals are 1 or 12 months, prepaid deals 12-60).
Larger accounts see competitors more often; existing customers carry a
year-over-year usage growth (null for new logos); a minority of deals stall
in stage for months.

Label rule (uses model features only; region and entity are never read)
-----------------------------------------------------------------------
The deal desk's authority matrix counts *justification steps* (the latent
justified-discount score; each step is worth one discount band):

* ARR tier: +1 from 25k, +2 from 100k, +3 from 1M USD list ARR;
* +1 competitor present; +1 term of 36 months or more;
* +1 partner or marketplace channel (their margin comes out of the discount);
* +1 stalled deal (more than 90 days in stage);
* +1 renewal leverage: an existing customer whose usage shrank by 20 % or more
  (save deal) or grew by 75 % or more (expansion).

``band = clip(steps - 1, 0, 4)`` indexes band_0_5 ... band_30_plus, then the
guardrails apply: strategic accounts and enterprise-wide deals (>= 5,000
seats) get at least band_10_20; monthly billing is capped at band_5_10 and
the security product line (premium-priced) at band_10_20.  Label noise is the
deal desk's judgement around the thresholds (about 7 % on ARR and seats, 4
days in stage, 3 points of usage growth) plus the uniform flip.

Scenarios: ``concept_shift`` approves competitor deals one band higher;
``region_process_change`` gives EMEA a stricter deal desk (non-strategic EMEA
deals one band lower) while EMEA sells more through partners and deals sit
longer in stage.
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

CLASSES = ("band_0_5", "band_5_10", "band_10_20", "band_20_30", "band_30_plus")

REGIONS = {"NA": 0.45, "EMEA": 0.30, "APAC": 0.15, "LATAM": 0.10}
SEGMENTS = {"smb": 0.36, "mid_market": 0.33, "enterprise": 0.23, "strategic": 0.08}
PRODUCTS = {"core": 0.45, "analytics": 0.2, "security": 0.2, "platform": 0.15}
ARR_MEDIAN = {"smb": 12_000, "mid_market": 60_000, "enterprise": 250_000, "strategic": 1_200_000}
ARR_SIGMA = {"smb": 0.8, "mid_market": 0.7, "enterprise": 0.7, "strategic": 0.6}
SEAT_PRICE = {"core": 600.0, "analytics": 900.0, "security": 450.0, "platform": 1200.0}
PRODUCT_ARR = {"core": 1.0, "analytics": 1.1, "security": 1.15, "platform": 1.3}
CHANNELS = {
    "NA": {"direct": 0.7, "partner": 0.2, "marketplace": 0.1},
    "EMEA": {"direct": 0.55, "partner": 0.35, "marketplace": 0.1},
    "APAC": {"direct": 0.5, "partner": 0.35, "marketplace": 0.15},
    "LATAM": {"direct": 0.4, "partner": 0.5, "marketplace": 0.1},
}
CHANNELS_SHIFTED = {r: {"direct": 0.3, "partner": 0.35, "marketplace": 0.35} for r in CHANNELS}
CHANNELS_EMEA_CHANGE = {"EMEA": {"direct": 0.35, "partner": 0.55, "marketplace": 0.1}}
BILLING = {
    "smb": {"monthly": 0.45, "annual_prepaid": 0.45, "usage_based": 0.1},
    "mid_market": {"monthly": 0.2, "annual_prepaid": 0.65, "usage_based": 0.15},
    "enterprise": {"monthly": 0.05, "annual_prepaid": 0.75, "usage_based": 0.2},
    "strategic": {"monthly": 0.02, "annual_prepaid": 0.78, "usage_based": 0.2},
}
TERMS = {
    "monthly": {"1": 0.5, "12": 0.5},
    "annual_prepaid": {"12": 0.45, "24": 0.2, "36": 0.25, "48": 0.03, "60": 0.07},
    "usage_based": {"12": 0.6, "24": 0.2, "36": 0.2},
}
COMPETITOR_RATE = {"smb": 0.25, "mid_market": 0.35, "enterprise": 0.45, "strategic": 0.5}

ARR_TIERS_USD = np.array([25_000.0, 100_000.0, 1_000_000.0])
ENTERPRISE_WIDE_SEATS = 5000.0
STALLED_DAYS, LONG_TERM_MONTHS = 90.0, 36
CONTRACTION_PCT, EXPANSION_PCT = -20.0, 75.0
LOG_JITTER, DAYS_JITTER, GROWTH_JITTER = 0.03, 4.0, 3.0  # judgement around thresholds


def inputs(rng: np.random.Generator, n: int, scenario: str) -> Inputs:
    shifted = scenario == "covariate_shift"
    region, entity = sample_region_entity(rng, n, REGIONS)
    changed = process_changed(scenario, region)
    segment = choice(rng, n, SEGMENTS)
    product = choice(rng, n, PRODUCTS)
    channels = CHANNELS_SHIFTED if shifted else CHANNELS
    if scenario == "region_process_change":
        channels = {**CHANNELS, **CHANNELS_EMEA_CHANGE}
    channel = conditional_choice(rng, region, channels)
    median = lookup(segment, ARR_MEDIAN) * lookup(product, PRODUCT_ARR) * (1.5 if shifted else 1.0)
    arr = np.round(np.clip(lognormal(rng, median, lookup(segment, ARR_SIGMA), n), 100, 5e7), 2)
    seats = np.floor(arr / lognormal(rng, lookup(product, SEAT_PRICE), 0.35, n))
    billing = conditional_choice(rng, segment, BILLING)
    term = conditional_choice(rng, billing, TERMS).astype(np.int64)
    competitor = bernoulli(rng, lookup(segment, COMPETITOR_RATE) + (0.1 if shifted else 0.0), n)
    existing = bernoulli(rng, 0.3 if shifted else 0.55, n)
    growth = 100.0 * (np.exp(0.1 + 0.4 * rng.standard_normal(n)) - 1.0)
    days = rng.standard_exponential(n) * 20.0
    days = days + bernoulli(rng, 0.15, n) * rng.standard_exponential(n) * 90.0
    days = days * np.where(changed, 1.6, 1.0)
    return {
        "list_price_arr": arr,
        "seats": np.clip(seats, 1, 1_000_000).astype(np.int64),
        "term_months": term,
        "billing_model": billing,
        "competitor_present": competitor,
        "customer_segment": segment,
        "existing_customer": existing,
        "usage_growth_pct": np.where(existing, np.round(np.clip(growth, -100, 1000), 1), np.nan),
        "days_in_stage": np.clip(np.floor(days), 0, 730).astype(np.int64),
        "product_line": product,
        "channel": channel,
        "region": region,
        "entity": entity,
    }


def justification_steps(frame: pd.DataFrame, noise: LabelNoise) -> np.ndarray:
    """The latent justified-discount score in whole steps (model features only)."""
    log_arr = np.log10(np.maximum(num(frame, "list_price_arr"), 1.0)) + LOG_JITTER * noise.jitter[0]
    days = num(frame, "days_in_stage") + DAYS_JITTER * noise.jitter[1]
    growth = num(frame, "usage_growth_pct") + GROWTH_JITTER * noise.jitter[2]
    leverage = flag(frame, "existing_customer") & ((growth <= CONTRACTION_PCT) | (growth >= EXPANSION_PCT))
    bonuses = [
        flag(frame, "competitor_present"),
        num(frame, "term_months") >= LONG_TERM_MONTHS,
        cat(frame, "channel") != "direct",
        days > STALLED_DAYS,
        leverage,
    ]
    tier = np.searchsorted(np.log10(ARR_TIERS_USD), log_arr)
    return np.asarray((tier + np.sum(bonuses, axis=0, dtype=np.int64)).astype(np.int64))


def rule(frame: pd.DataFrame, scenario: str, noise: LabelNoise) -> np.ndarray:
    """Band codes (index into CLASSES): steps bucketed to bands, then guardrails."""
    top = len(CLASSES) - 1
    band = np.clip(justification_steps(frame, noise) - 1, 0, top)
    log_seats = np.log10(np.maximum(num(frame, "seats"), 1.0)) + LOG_JITTER * noise.jitter[3]
    floor = (cat(frame, "customer_segment") == "strategic") | (log_seats >= np.log10(ENTERPRISE_WIDE_SEATS))
    band = np.where(floor, np.maximum(band, 2), band)
    band = np.where(cat(frame, "billing_model") == "monthly", np.minimum(band, 1), band)
    band = np.where(cat(frame, "product_line") == "security", np.minimum(band, 2), band)
    if scenario == "concept_shift":
        band = band + flag(frame, "competitor_present")
    band = band - (process_changed(scenario, frame) & (cat(frame, "customer_segment") != "strategic"))
    return np.asarray(np.clip(band, 0, top).astype(np.int64))


DOMAIN = Domain("discount_band", "discount_band", CLASSES, "Q", inputs, rule)
