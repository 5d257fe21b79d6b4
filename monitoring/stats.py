"""Small, exact statistics for monitoring: Wilson intervals, Cochran–Mantel–Haenszel, Holm.

Kept free of pandas so every number a report shows can be checked against a textbook by hand.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import chi2, norm


def finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity; an undefined ratio is reported as null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when there are no trials.

    Wilson rather than the normal approximation because override rates are often near 0 and
    segment counts small, where the Wald interval collapses to zero width or leaves [0, 1].
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    z = float(norm.ppf(0.5 + confidence / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clamp rounding noise so k=0 gives exactly 0 and k=n exactly 1.
    return max(0.0, centre - half) if k else 0.0, min(1.0, centre + half) if k < n else 1.0


def wilson_at(rate: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson interval of an estimated rate at an effective sample size `n` (a float): the device
    survey estimates use (Korn & Graubard) when the rate is not a plain k/n."""
    z = float(norm.ppf(0.5 + confidence / 2))
    denom = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(rate * (1 - rate), 0.0) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half) if rate > 0 else 0.0, min(1.0, centre + half) if rate < 1 else 1.0


@dataclass(frozen=True)
class Proportion:
    """k of n with its rate and Wilson interval; serialises to plain JSON."""

    count: int
    n: int
    rate: float | None
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def proportion(k: int, n: int, confidence: float = 0.95) -> Proportion:
    low, high = wilson_interval(int(k), int(n), confidence)
    return Proportion(int(k), int(n), (k / n) if n else None, low, high)


@dataclass(frozen=True)
class CMHResult:
    """Cochran–Mantel–Haenszel test of conditional independence over K stratified 2×2 tables.

    Tables are [[a, b], [c, d]]: rows are the groups compared (row 0 the group of interest),
    columns event / no event. `odds_ratio` is the Mantel–Haenszel common odds ratio of row 0
    versus row 1 with the Robins–Breslow–Greenland interval; `rate_ratio` the MH risk ratio.
    """

    statistic: float
    p_value: float
    odds_ratio: float
    odds_ratio_low: float
    odds_ratio_high: float
    rate_ratio: float
    strata: int

    def to_dict(self) -> dict[str, Any]:
        return {k: finite(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


def cmh_test(
    tables: Sequence[Any] | np.ndarray,
    correction: bool = True,
    confidence: float = 0.95,
    alternative: Literal["two-sided", "greater"] = "two-sided",
) -> CMHResult:
    """CMH chi-squared (1 df, with Yates-style continuity correction like R's mantelhaen.test).

    `alternative="greater"` is R's one-sided version: row 0 has *more* events than expected,
    p = P(Z >= sign(D) (|D| - 1/2) / sqrt(V)); half the two-sided p-value when D > 0.
    """
    t = np.asarray(tables, dtype="float64").reshape(-1, 2, 2)
    a, b, c, d = t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1]
    n = a + b + c + d
    # A stratum with fewer than two cases carries no information about association.
    keep = n > 1
    a, b, c, d, n = a[keep], b[keep], c[keep], d[keep], n[keep]
    row1, row2, col1, col2 = a + b, c + d, a + c, b + d
    expected = row1 * col1 / n
    variance = row1 * row2 * col1 * col2 / (n * n * (n - 1))
    signed = float(np.sum(a - expected))
    deviation = abs(signed)
    var_sum = float(np.sum(variance))
    if var_sum <= 0:
        statistic, p_value = 0.0, 1.0
    else:
        if correction:
            deviation = max(0.0, deviation - 0.5)
        statistic = deviation * deviation / var_sum
        if alternative == "greater":
            p_value = float(norm.sf(math.copysign(deviation, signed) / math.sqrt(var_sum)))
        else:
            p_value = float(chi2.sf(statistic, 1))
    or_, low, high = _mh_odds_ratio(a, b, c, d, n, confidence)
    rr_num, rr_den = float(np.sum(a * row2 / n)), float(np.sum(c * row1 / n))
    rate_ratio = _ratio(rr_num, rr_den)
    return CMHResult(statistic, p_value, or_, low, high, rate_ratio, int(keep.sum()))


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return math.nan if num == 0 else math.inf
    return num / den


def _mh_odds_ratio(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, n: np.ndarray, confidence: float
) -> tuple[float, float, float]:
    """MH common odds ratio and the Robins–Breslow–Greenland (1986) interval for its log."""
    r, s = a * d / n, b * c / n
    r_sum, s_sum = float(r.sum()), float(s.sum())
    estimate = _ratio(r_sum, s_sum)
    if not (r_sum > 0 and s_sum > 0):
        return estimate, math.nan, math.nan
    p, q = (a + d) / n, (b + c) / n
    var_log = (
        float((p * r).sum()) / (2 * r_sum**2)
        + float((p * s + q * r).sum()) / (2 * r_sum * s_sum)
        + float((q * s).sum()) / (2 * s_sum**2)
    )
    z = float(norm.ppf(0.5 + confidence / 2))
    half = z * math.sqrt(var_log)
    return estimate, math.exp(math.log(estimate) - half), math.exp(math.log(estimate) + half)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1), in input order.

    Holm because the findings of one model are many simultaneous tests (every value of every
    segment field, two metrics) and a reviewer reads only the flagged ones.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


def band_index(confidence: np.ndarray | Sequence[float], edges: Sequence[float]) -> np.ndarray:
    """Band of each confidence: i where edges[i] <= c < edges[i+1], clipped to the outer bands.

    The SQL in `monitoring.log_reader` computes the same index with a CASE over the inner
    edges, so bands from raw rows and from database aggregates line up exactly.
    """
    check_edges(edges)
    values = np.asarray(confidence, dtype="float64")
    return np.searchsorted(np.asarray(edges[1:-1], dtype="float64"), values, side="right")


def check_edges(edges: Sequence[float]) -> None:
    if len(edges) < 2 or any(not math.isfinite(e) for e in edges):
        raise ValueError("band edges need at least two finite numbers")
    if any(lo >= hi for lo, hi in itertools.pairwise(edges)):
        raise ValueError(f"band edges must increase strictly: {list(edges)}")


def band_labels(edges: Sequence[float]) -> list[str]:
    return [f"[{lo:g}, {hi:g})" for lo, hi in itertools.pairwise(edges)]


def weighted_holm(p_values: Sequence[float], weights: Sequence[float]) -> list[float]:
    """Weighted Holm (Holm 1979, section 5) adjusted p-values, in input order.

    A test with weight w is rejected at level a when p <= a * w / (sum of the weights still in
    play), step-down. Weights spend the error budget where a finding matters most (e.g. half of
    it on the few regions, half on the many entities and channels); equal weights give `holm`.
    statsmodels' multipletests has no weighted variant, hence this.
    """
    m = len(p_values)
    if len(weights) != m or any(w <= 0 for w in weights):
        raise ValueError("need one positive weight per p-value")
    order = sorted(range(m), key=lambda i: p_values[i] / weights[i])
    remaining = float(sum(weights))
    adjusted = [1.0] * m
    running = 0.0
    for i in order:
        running = max(running, min(1.0, float(p_values[i]) * remaining / weights[i]))
        adjusted[i] = running
        remaining -= weights[i]
    return adjusted


def binomial_above(k: int, n: int, rate: float) -> float:
    """One-sided exact binomial p-value of k or more events in n trials if the true rate were `rate`."""
    from scipy.stats import binom

    if n <= 0:
        return 1.0
    return float(binom.sf(k - 1, n, min(max(rate, 0.0), 1.0)))
