"""Stated detection limits: the smallest effect each check would catch in this window with 90% power.

A quiet check only means something next to what it could have seen. For each check on what
reviewers did, per segment value (at least per region), this solves the power equation of the
test the check actually runs, at the level that test gets after its multiple-testing correction:

- process drift: one-sided comparison of the value's override rate with the rest in the same
  score bands (the CMH test; its power is the two-proportion arcsine power at the value's and
  the rest's reviewed decided counts), at alpha x the value's weighted-Holm share (the first
  step of the weighted Holm procedure, where a lone drifting value is tested); the limit is a
  rate ratio over the rest's rate;
- concept drift: the exact one-sided binomial test against alpha + tolerance at Holm's first
  step (concept_p / number of values tested); the limit is an error rate and its multiple of
  the tolerated rate;
- override rate: the check alarms when the Wilson lower bound of the overall rate reaches the
  warn threshold; the limit per region is the region's override ratio that, the others staying as
  they are, takes the overall rate where the bound passes it with 90% power.

"Smaller ones cannot be ruled out": a check that stays quiet says nothing about effects below.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from scipy.optimize import brentq
from scipy.stats import binom
from statsmodels.stats.power import NormalIndPower

from keel.monitoring.overrides import OverrideReport
from keel.monitoring.process_drift import ProcessDriftReport
from keel.monitoring.segments import ConceptReport
from keel.monitoring.stats import wilson_interval

__all__ = [
    "POWER",
    "DetectionLimit",
    "detection_limits",
    "min_detectable_error",
    "min_detectable_ratio",
    "min_detectable_wilson_rate",
]

POWER = 0.9


@dataclass(frozen=True)
class DetectionLimit:
    check: str
    field: str
    value: str
    n: int
    """Cases the check's test rests on for this value."""
    base_rate: float
    level: float
    """One-sided level of the test after the check's multiple-testing correction."""
    ratio: float | None
    """Smallest detectable multiple of the base rate; None: not within reach (ratio > 1 / base)."""
    rate: float | None
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def min_detectable_ratio(
    n: int, n_rest: int, base: float, level: float, power: float = POWER
) -> float | None:
    """Smallest rate ratio p1 / base that a one-sided two-proportion test (n against n_rest cases)
    catches at `level` with `power`; None when even a rate of 1 would not do."""
    if n <= 0 or n_rest <= 0:
        return None
    base = min(max(base, 1e-4), 0.999)
    try:
        h = float(
            NormalIndPower().solve_power(
                effect_size=None, nobs1=n, alpha=level, power=power, ratio=n_rest / n, alternative="larger"
            )
        )
    except (ValueError, RuntimeError):
        return None
    top = 2 * math.asin(math.sqrt(base)) + h
    if not math.isfinite(top) or top >= math.pi:
        return None
    return math.sin(top / 2) ** 2 / base


def min_detectable_error(n: int, tolerated: float, level: float, power: float = POWER) -> float | None:
    """Smallest true error rate the exact one-sided binomial test against `tolerated` (n cases,
    `level`) catches with `power`; None when no rate below 1 does."""
    if n <= 0:
        return None
    tolerated = min(max(tolerated, 1e-6), 1 - 1e-6)
    k = int(binom.isf(level, n, tolerated)) + 1  # smallest k with P(X >= k) <= level
    while k > 0 and binom.sf(k - 2, n, tolerated) <= level:
        k -= 1
    while k <= n and binom.sf(k - 1, n, tolerated) > level:
        k += 1
    if k > n:
        return None
    return _solve(lambda p: float(binom.sf(k - 1, n, p)) - power, tolerated)


def min_detectable_wilson_rate(n: int, threshold: float, power: float = POWER) -> float | None:
    """Smallest true rate at which the Wilson lower bound of k / n reaches `threshold` with `power`."""
    if n <= 0:
        return None
    k = next((k for k in range(n + 1) if wilson_interval(k, n)[0] >= threshold), None)
    if k is None:
        return None
    return _solve(lambda p: float(binom.sf(k - 1, n, p)) - power, 1e-9)


def _solve(f: Any, low: float) -> float | None:
    if f(1.0 - 1e-12) < 0:
        return None
    if f(low) >= 0:
        return low
    return float(brentq(f, low, 1.0 - 1e-12, xtol=1e-6))


def detection_limits(
    process: ProcessDriftReport,
    concept: ConceptReport,
    overrides: OverrideReport,
    primary: str | None,
    primary_share: float,
    override_warn: float,
    concept_level: float,
) -> list[DetectionLimit]:
    out = _process_limits(process, primary, primary_share)
    tested = max(len(concept.findings), 1)
    for f in concept.findings:
        level = concept_level / tested
        rate = min_detectable_error(f.n, concept.tolerated, level)
        ratio = rate / concept.tolerated if rate is not None and concept.tolerated else None
        out.append(DetectionLimit(
            "concept_drift", f.field, f.value, f.n, concept.tolerated, level, ratio, rate,
            f"an error rate of {_pct(rate)} ({_x(ratio)} the {_pct(concept.tolerated)} tolerated) in "
            f"{f.field} {f.value}" if rate is not None else f"no error rate in {f.field} {f.value} "
            f"({f.n} reviewed decided cases)",
        ))  # fmt: skip
    out += _override_limits(overrides, primary, override_warn)
    return out


def _process_limits(process: ProcessDriftReport, primary: str | None, share: float) -> list[DetectionLimit]:
    found = [f for f in process.findings if f.metric == "override_rate"]
    main = sum(f.field == primary for f in found)
    rest = len(found) - main
    if not main or not rest:
        share = 1.0 if main else 0.0
    out = []
    for f in found:
        weight = share / max(main, 1) if f.field == primary else (1 - share) / max(rest, 1)
        level = process.alpha * weight
        n_rest = sum(b.rest_n for b in f.bands)
        # The rate under no drift, pooled with the value's own cases (`Finding.null_rate`): the
        # reference's alone would state each value's limit on noise that moves against its own.
        base = next((r for r in (f.null_rate, f.expected_rate, f.rest_rate) if r is not None), 0.0)
        ratio = min_detectable_ratio(f.n, n_rest, base, level)
        out.append(DetectionLimit(
            "process_drift", f.field, f.value, f.n, base, level, ratio,
            ratio * base if ratio is not None else None,
            f"a {_x(ratio)} override increase in {f.field} {f.value}" if ratio is not None
            else f"no override increase in {f.field} {f.value} ({f.n} reviewed decided cases)",
        ))  # fmt: skip
    return out


def _override_limits(overrides: OverrideReport, primary: str | None, warn: float) -> list[DetectionLimit]:
    n = overrides.n_reviewed_decided
    rate = min_detectable_wilson_rate(n, warn)
    overall = overrides.overall
    out = [
        DetectionLimit(
            "override_rate", "overall", "all", n, overall.rate or 0.0, 0.025, None, rate,
            f"an overall override rate of {_pct(rate)}" if rate is not None else "no overall override rate",
        )
    ]  # fmt: skip
    if rate is None or primary is None:
        return out
    for value, p in overrides.by_segment.get(primary, {}).items():
        others = overall.count - p.count
        if not p.n or not p.rate:
            continue
        # The region's rate that lifts the overall rate to `rate` with the others as they are.
        needed = (rate * n - others) / p.n
        ratio = needed / p.rate if needed <= 1 else None
        if ratio is None:
            words = f"no override increase in {primary} {value} alone"
        elif ratio <= 1.0:  # the overall rate is already where the check alarms
            words = f"any override increase in {primary} {value} (the overall rate is already past the limit)"
        else:
            words = f"a {_x(ratio)} override increase in {primary} {value}"
        rate_needed = min(needed, 1.0) if ratio else None
        out.append(
            DetectionLimit("override_rate", primary, value, p.n, p.rate, 0.025, ratio, rate_needed, words)
        )
    return out


def _x(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{max(ratio, 1.0):.1f}x"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
