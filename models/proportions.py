"""Exact (Clopper-Pearson) binomial intervals, vectorised over many counts at once.

statsmodels' `proportion_confint(method="beta")` computes the same interval one count at a time
through a Python-level call; a counterfactual audit needs one per field, value pair and kind of
change, so the beta quantiles are taken here with scipy on whole arrays (the tests check the
two agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import beta

__all__ = ["Proportion", "clopper_pearson", "lower_bound", "proportion"]


def clopper_pearson(k: Any, n: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided exact interval at `level` for k successes in n trials (arrays broadcast).

    n == 0 gives the uninformative [0, 1]."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    tail = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k > 0, beta.ppf(tail, k, n - k + 1), 0.0)
        high = np.where(k < n, beta.ppf(1.0 - tail, k + 1, n - k), 1.0)
    return np.nan_to_num(low, nan=0.0), np.nan_to_num(high, nan=1.0)


def lower_bound(k: Any, n: Any, confidence: float) -> np.ndarray:
    """One-sided exact lower confidence bound: the rate is above it with probability `confidence`."""
    return clopper_pearson(k, n, 1.0 - 2.0 * (1.0 - confidence))[0]


@dataclass(frozen=True)
class Proportion:
    """k of n, its rate and its two-sided exact interval at `level`."""

    k: int
    n: int
    low: float
    high: float
    level: float

    @property
    def rate(self) -> float:
        return self.k / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "n": self.n,
            "rate": round(self.rate, 6),
            "low": round(self.low, 6),
            "high": round(self.high, 6),
            "level": self.level,
        }


def proportion(k: int, n: int, level: float = 0.95) -> Proportion:
    low, high = clopper_pearson(k, n, level)
    return Proportion(int(k), int(n), float(low), float(high), level)
