"""Risk-controlled abstention: confidence thresholds with a finite-sample guarantee.

With probability at least 1-delta over the draw of the risk-control data, the error rate
among the cases the model decides itself (confidence >= threshold) is at most alpha.

Method (Learn then Test, Angelopoulos et al. 2021): each candidate threshold t is a null
hypothesis "selective error at t > alpha", tested with the exact Clopper-Pearson upper bound
on the errors among decided risk-control cases. Candidates are tested in fixed sequences, from
a start downwards in threshold, each sequence stopping at its first non-rejection. A single
sequence can end at its very first test on one unlucky label and certify nothing although
the next candidate would pass, so there are several sequences, each at level delta/starts:
every sequence controls its family-wise error at delta/starts, their union (Bonferroni) at
delta, so any threshold certified by any sequence is valid and the largest coverage is kept.
The candidates and the starts are fixed *before* looking at the risk-control data: they come
from another, independent split (the ordering split), so the guarantee holds as stated.

Segment-conditional control runs the same procedure inside every segment value with enough
risk-control cases, Bonferroni over the overall threshold and those segments, so that with
probability >= 1-delta jointly the overall and every certified segment's selective error is
<= alpha. Values with too few cases fall back to the overall threshold or to human review.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from typing import Any, Literal

import numpy as np
from keel.models.thresholds import NEVER_DECIDE
from scipy.stats import beta

__all__ = [
    "NEVER_DECIDE",
    "RiskControl",
    "SegmentControl",
    "abstention_record",
    "candidate_thresholds",
    "clopper_pearson_upper",
    "select_segment_thresholds",
    "select_threshold",
]

METHOD = "learn-then-test, Bonferroni over fixed sequences from {starts} starts, Clopper-Pearson"


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
    starts: int = 1
    test_delta: float = 0.0
    method: str = METHOD.format(starts=1)

    @property
    def certified(self) -> bool:
        return self.threshold < NEVER_DECIDE

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


def start_points(
    candidates: np.ndarray, confidence: np.ndarray, correct: np.ndarray, delta: float, starts: int
) -> list[int]:
    """Where the sequences begin, chosen on the ordering split only.

    The first start is the candidate with the lowest upper bound there (ties: more coverage);
    the others are spread evenly between the most conservative candidate and that one (not at
    it: its few decided cases make its test fragile), so a sequence that stumbles near the
    easiest point still leaves a more conservative one certified.
    """
    wrong = ~correct.astype(bool)
    bounds = []
    for t in candidates:
        decided = confidence >= t
        bounds.append(clopper_pearson_upper(int(wrong[decided].sum()), int(decided.sum()), delta))
    lowest = min(bounds)
    easiest = max(i for i, b in enumerate(bounds) if b == lowest)
    spread = np.linspace(0, easiest, starts + 1)[1:-1]
    return sorted({easiest, *(round(i) for i in spread)}, reverse=True)


def _sequence(
    candidates: np.ndarray, start: int, confidence: np.ndarray, wrong: np.ndarray, alpha: float, delta: float
) -> tuple[tuple[float, int, int, float] | None, int]:
    """Test from `start` downwards in threshold until the first non-rejection; last certified."""
    best: tuple[float, int, int, float] | None = None
    tested = 0
    for t in candidates[start:]:
        tested += 1
        decided = confidence >= t
        n_dec = int(decided.sum())
        k = int(wrong[decided].sum())
        ucb = clopper_pearson_upper(k, n_dec, delta)
        if ucb > alpha:
            break
        best = (float(t), n_dec, k, ucb)
    return best, tested


def select_threshold(
    confidence: np.ndarray,
    correct: np.ndarray,
    alpha: float,
    delta: float,
    order_confidence: np.ndarray,
    min_decided: int = 300,
    steps: int = 200,
    order_correct: np.ndarray | None = None,
    starts: int = 3,
) -> RiskControl:
    """Lowest threshold (largest coverage) certified <= alpha by any of the sequences.

    Without `order_correct` (labels of the ordering split) there is one sequence, from the most
    conservative candidate down, at level delta.
    """
    n = len(confidence)
    wrong = ~correct.astype(bool)
    # Fewer decided cases than this cannot certify alpha even with no error at all.
    min_decided = max(min_decided, math.ceil(math.log(starts / delta) / alpha))
    candidates = candidate_thresholds(order_confidence, n, min_decided, steps)
    if order_correct is None or len(candidates) == 0:
        starts, begin = 1, [0]
    else:
        begin = start_points(candidates, order_confidence, order_correct, delta / starts, starts)
        starts = len(begin)
    level = delta / starts
    best: tuple[float, int, int, float] | None = None
    tested = 0
    for s in begin:
        found, k = _sequence(candidates, s, confidence, wrong, alpha, level)
        tested += k
        if found is not None and (best is None or found[0] < best[0]):
            best = found
    method = METHOD.format(starts=starts)
    if best is None:
        return RiskControl(alpha, delta, NEVER_DECIDE, 0.0, n, 0, 0, 0.0, 1.0, tested, starts, level, method)
    t, n_dec, k, ucb = best
    return RiskControl(alpha, delta, t, n_dec / n, n, n_dec, k, k / n_dec, ucb, tested, starts, level, method)


Fallback = Literal["review", "overall"]


@dataclass(frozen=True)
class SegmentControl:
    """Per-value thresholds of one segment field, jointly valid with the overall threshold."""

    field: str
    fallback: str
    min_cases: int
    overall: RiskControl
    segments: dict[str, RiskControl] = dc_field(default_factory=dict)
    fallback_values: list[str] = dc_field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "fallback": self.fallback,
            "min_cases": self.min_cases,
            "families": 1 + len(self.segments),
            "segments": {v: rc.to_dict() for v, rc in self.segments.items()},
            "fallback_values": list(self.fallback_values),
        }


def select_segment_thresholds(
    confidence: np.ndarray,
    correct: np.ndarray,
    values: Sequence[object],
    order_confidence: np.ndarray,
    order_correct: np.ndarray,
    order_values: Sequence[object],
    *,
    field_name: str,
    alpha: float,
    delta: float,
    min_cases: int,
    fallback: Fallback = "review",
    min_decided: int = 300,
    starts: int = 3,
    known_values: Sequence[str] = (),
) -> SegmentControl:
    """Overall threshold plus one per segment value with >= `min_cases` risk-control cases.

    Which values get their own threshold depends only on how many risk-control cases each has
    (not on their labels), and delta is split equally over the overall threshold and those
    values, so the overall and every segment bound hold jointly with probability >= 1-delta.
    """
    vals = np.asarray([str(v) for v in values], dtype=object)
    order_vals = np.asarray([str(v) for v in order_values], dtype=object)
    seen = sorted({*map(str, known_values), *vals.tolist()})
    eligible = [v for v in seen if int((vals == v).sum()) >= min_cases]
    level = delta / (1 + len(eligible))
    overall = select_threshold(
        confidence,
        correct,
        alpha,
        level,
        order_confidence,
        min_decided,
        order_correct=order_correct,
        starts=starts,
    )
    segments: dict[str, RiskControl] = {}
    for v in eligible:
        m, om = vals == v, order_vals == v
        # A segment's own minimum of decided cases scales with its size, as the overall one does.
        seg_min = max(1, int(min_decided * m.sum() / max(len(vals), 1)))
        segments[v] = select_threshold(
            confidence[m],
            correct[m],
            alpha,
            level,
            order_confidence[om] if om.any() else order_confidence,
            seg_min,
            order_correct=order_correct[om] if om.any() else order_correct,
            starts=starts,
        )
    return SegmentControl(
        field_name, fallback, min_cases, overall, segments, [v for v in seen if v not in segments]
    )


def abstention_record(overall: RiskControl, segment: SegmentControl | None) -> dict[str, Any]:
    """The bundle's abstention.json: the overall threshold and, if on, the per-segment ones."""
    record = overall.to_dict()
    if segment is not None:
        record["segment_control"] = segment.to_dict()
    return record
