"""Risk-controlled abstention: a confidence threshold with a finite-sample guarantee.

With probability at least 1-delta over the draw of the risk-control data, the error rate
among the cases the model decides itself (confidence >= threshold) is at most alpha.

Method (Learn then Test, Angelopoulos et al. 2021): each candidate threshold t is a null
hypothesis "selective error at t > alpha", tested with the exact Clopper-Pearson upper bound
on the errors among decided risk-control cases. Candidates are tested in a fixed sequence,
from the most conservative threshold down, and testing stops at the first one not rejected;
fixed-sequence testing controls the family-wise error at delta with no correction. The
sequence is fixed *before* looking at the risk-control data: it comes from the confidences of
another, independent split, so the guarantee holds as stated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import beta

NEVER_DECIDE = 2.0
"""Threshold above any probability: the model abstains on every case."""


def clopper_pearson_upper(errors: int, n: int, delta: float) -> float:
    """Exact one-sided (1-delta) upper confidence bound of a binomial proportion."""
    if n == 0 or errors >= n:
        return 1.0
    return float(beta.ppf(1.0 - delta, errors + 1, n - errors))


@dataclass(frozen=True)
class RiskControl:
    alpha: float
    delta: float
    threshold: float
    coverage: float
    n: int
    decided: int
    errors: int
    selective_error: float
    upper_bound: float
    candidates_tested: int
    method: str = "learn-then-test fixed sequence, Clopper-Pearson"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def candidate_thresholds(
    order_confidence: np.ndarray, n_risk: int, min_decided: int, steps: int
) -> np.ndarray:
    """Descending thresholds at evenly spaced coverage levels of an independent split."""
    start = min(1.0, min_decided / max(n_risk, 1))
    coverages = np.linspace(start, 1.0, steps)
    thresholds = np.quantile(order_confidence, 1.0 - coverages, method="higher")
    return np.unique(thresholds)[::-1]


def select_threshold(
    confidence: np.ndarray,
    correct: np.ndarray,
    alpha: float,
    delta: float,
    order_confidence: np.ndarray,
    min_decided: int = 300,
    steps: int = 200,
    order_correct: np.ndarray | None = None,
) -> RiskControl:
    """Lowest threshold (largest coverage) whose selective error is certified <= alpha.

    With `order_correct` (labels of the independent ordering split), the sequence starts at the
    candidate that split finds easiest to certify, instead of at the most conservative one: a
    first test on very few, very confident cases can fail on a single label flip and end the
    whole sequence. The start depends only on the independent split, so validity is kept.
    """
    n = len(confidence)
    errors_mask = ~correct.astype(bool)
    candidates = candidate_thresholds(order_confidence, n, min_decided, steps)
    if order_correct is not None:
        candidates = candidates[_easiest_start(candidates, order_confidence, order_correct, delta) :]
    best: tuple[float, int, int, float] | None = None
    tested = 0
    for t in candidates:
        tested += 1
        decided = confidence >= t
        n_dec = int(decided.sum())
        k = int(errors_mask[decided].sum())
        ucb = clopper_pearson_upper(k, n_dec, delta)
        if ucb > alpha:
            break
        best = (float(t), n_dec, k, ucb)
    if best is None:
        return RiskControl(alpha, delta, NEVER_DECIDE, 0.0, n, 0, 0, 0.0, 1.0, tested)
    t, n_dec, k, ucb = best
    return RiskControl(alpha, delta, t, n_dec / n, n, n_dec, k, k / n_dec, ucb, tested)


def _easiest_start(candidates: np.ndarray, confidence: np.ndarray, correct: np.ndarray, delta: float) -> int:
    """Index of the candidate with the lowest upper bound on the ordering split (ties: more coverage)."""
    wrong = ~correct.astype(bool)
    bounds = []
    for t in candidates:
        decided = confidence >= t
        bounds.append(clopper_pearson_upper(int(wrong[decided].sum()), int(decided.sum()), delta))
    lowest = min(bounds)
    return max(i for i, b in enumerate(bounds) if b == lowest)
