"""Risk-controlled abstention: confidence thresholds with a finite-sample guarantee.

With probability at least 1-delta over the draw of the risk-control data, the error rate
among the cases the model decides itself (confidence >= threshold) is at most alpha.

Method (Learn then Test, Angelopoulos et al. 2021): each candidate threshold t is a null
hypothesis "selective error at t > alpha", tested with the exact binomial (Clopper-Pearson)
p-value of the errors among the decided risk-control cases. The hypotheses are tested by a
fallback procedure (Wiens 2003; a graphical procedure in the sense of Bretz et al. 2009) along
one fixed sequence, from conservative to liberal thresholds: delta is split between two start
nodes, and a rejected hypothesis passes its whole level on to the next one in the sequence. So

- the start with the lowest upper bound on the ordering split (share `primary_share` of delta)
  and, where a sequence that reaches it unhurt from the other start carries the full delta on;
- the start with the largest expected coverage (estimated probability of passing its test times
  its coverage, from a beta-binomial predictive of the ordering split's errors) gets the rest,

and one failed test no longer ends the search: the other start still has its own level. Any
graph of this kind controls the family-wise error at delta under any dependence between the
tests, so every rejected candidate is certified and the most liberal one is kept. Candidates,
start nodes and shares all come from another, independent split (the ordering split) *before*
the risk-control data are looked at, so the guarantee holds as stated.

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
from scipy.stats import beta, betabinom, binom

from keel.models.thresholds import NEVER_DECIDE

__all__ = [
    "NEVER_DECIDE",
    "RiskControl",
    "SegmentControl",
    "Start",
    "abstention_record",
    "candidate_thresholds",
    "choose_starts",
    "clopper_pearson_upper",
    "fallback_test",
    "select_segment_thresholds",
    "select_threshold",
]

METHOD = (
    "learn-then-test, fallback procedure over one fixed sequence from {starts} start(s) "
    "(shares of delta {shares}), Clopper-Pearson"
)
PRIMARY_SHARE = 0.8
"""Share of delta on the lowest-bound start; the rest goes to the expected-coverage start."""


def clopper_pearson_upper(errors: int, n: int, delta: float) -> float:
    """Exact one-sided (1-delta) upper confidence bound of a binomial proportion."""
    if n == 0 or errors >= n:
        return 1.0
    return float(beta.ppf(1.0 - delta, errors + 1, n - errors))


def _upper_bounds(errors: np.ndarray, n: np.ndarray, delta: float) -> np.ndarray:
    """clopper_pearson_upper for arrays of counts."""
    ok = (n > 0) & (errors < n)
    out = np.ones(len(n))
    out[ok] = beta.ppf(1.0 - delta, errors[ok] + 1, n[ok] - errors[ok])
    return out


def p_values(errors: np.ndarray, n: np.ndarray, alpha: float) -> np.ndarray:
    """P(Binomial(n, alpha) <= errors): the exact p-value of "selective error > alpha".

    It is <= a level exactly when the Clopper-Pearson upper bound at that level is <= alpha."""
    return np.where(n > 0, binom.cdf(errors, np.maximum(n, 1), alpha), 1.0)


@dataclass(frozen=True)
class Start:
    """A start node of the fallback sequence: its candidate, its share of delta and why it is there."""

    index: int
    share: float
    rule: str


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
    """The level the certified threshold's own test was passed at (its node's carried level)."""
    method: str = METHOD.format(starts=1, shares="1.0")
    start_nodes: list[dict[str, Any]] = dc_field(default_factory=list)
    """Each start's threshold, share of delta and rule, as fixed on the ordering split."""

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


def decided_counts(
    candidates: np.ndarray, confidence: np.ndarray, wrong: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Decided cases (confidence >= t) and errors among them, at every candidate t."""
    order = np.argsort(-confidence, kind="stable")
    ranked = confidence[order]
    errors = np.concatenate([[0], np.cumsum(wrong[order])])
    decided = np.searchsorted(-ranked, -candidates, side="right")
    return decided, errors[decided]


def pass_probability(
    decided: np.ndarray, errors: np.ndarray, scale: float, alpha: float, level: float
) -> np.ndarray:
    """Estimated chance that each candidate passes its test at `level` on the risk-control split.

    Its error count there is predicted as beta-binomial (Jeffreys posterior of the ordering
    split's error rate), on the ordering split's decided count scaled to the risk split's size."""
    n = np.maximum(1, np.round(decided * scale)).astype(int)
    k0 = binom.ppf(level, n, alpha)
    most = np.where(binom.cdf(k0, n, alpha) <= level, k0, k0 - 1)  # most errors that still pass
    chance = betabinom.cdf(np.maximum(most, 0), n, errors + 0.5, decided - errors + 0.5)
    return np.where(most >= 0, chance, 0.0)


def choose_starts(
    candidates: np.ndarray,
    order_confidence: np.ndarray,
    order_correct: np.ndarray,
    n_risk: int,
    alpha: float,
    delta: float,
    primary_share: float = PRIMARY_SHARE,
) -> list[Start]:
    """The start nodes, from the ordering split only (never the risk-control data).

    The lowest-bound start: the candidate with the lowest upper bound at its level (ties: more
    coverage), robust but often conservative. The expected-coverage start: the candidate with
    the largest estimated pass probability times coverage, which reaches further on most draws.
    They merge into one start when they coincide."""
    decided, errors = decided_counts(candidates, order_confidence, ~order_correct.astype(bool))
    bounds = _upper_bounds(errors, decided, primary_share * delta)
    lowest = int(np.flatnonzero(bounds <= bounds.min())[-1])
    if primary_share >= 1.0:
        return [Start(lowest, 1.0, "lowest bound")]
    scale = n_risk / max(len(order_confidence), 1)
    chance = pass_probability(decided, errors, scale, alpha, (1 - primary_share) * delta)
    likely = int(np.argmax(chance * decided))
    if likely == lowest:
        return [Start(lowest, 1.0, "lowest bound = expected coverage")]
    rest = round(1.0 - primary_share, 12)
    return sorted(
        [Start(lowest, primary_share, "lowest bound"), Start(likely, rest, "expected coverage")],
        key=lambda s: s.index,
    )


def fallback_test(
    n_decided: np.ndarray, n_errors: np.ndarray, starts: Sequence[Start], alpha: float, delta: float
) -> tuple[int | None, float, int]:
    """The fallback procedure along the sequence: the most liberal rejected candidate, the level
    its test passed at, and how many tests ran.

    Candidate j is tested at its own share of delta plus the level of candidate j-1 when that one
    was rejected (a rejected hypothesis hands its level on; a failed one keeps it)."""
    share = {s.index: s.share for s in starts}
    p = p_values(n_errors, n_decided, alpha)
    best, best_level, carried, tested = None, 0.0, 0.0, 0
    for j in range(min(share), len(n_decided)):
        level = delta * share.get(j, 0.0) + carried
        if level <= 0.0:
            continue
        tested += 1
        if p[j] <= level:
            best, best_level, carried = j, level, level
        else:
            carried = 0.0
    return best, best_level, tested


def select_threshold(
    confidence: np.ndarray,
    correct: np.ndarray,
    alpha: float,
    delta: float,
    order_confidence: np.ndarray,
    min_decided: int = 300,
    steps: int = 200,
    order_correct: np.ndarray | None = None,
    primary_share: float = PRIMARY_SHARE,
) -> RiskControl:
    """Lowest threshold (largest coverage) the fallback procedure certifies <= alpha.

    Without `order_correct` (labels of the ordering split) there is one start, the most
    conservative candidate, at the full delta: the plain fixed-sequence test."""
    n = len(confidence)
    # Fewer decided cases than this cannot certify alpha even with no error at the full delta.
    min_decided = max(min_decided, math.ceil(math.log(1 / delta) / alpha))
    candidates = candidate_thresholds(order_confidence, n, min_decided, steps)
    if order_correct is None or len(candidates) == 0:
        starts = [Start(0, 1.0, "most conservative")]
    else:
        starts = choose_starts(candidates, order_confidence, order_correct, n, alpha, delta, primary_share)
    nodes = [
        {"threshold": float(candidates[s.index]) if len(candidates) else NEVER_DECIDE, "share": s.share,
         "rule": s.rule}
        for s in starts
    ]  # fmt: skip
    method = METHOD.format(starts=len(starts), shares="/".join(f"{s.share:g}" for s in starts))
    decided, errors = decided_counts(candidates, confidence, ~correct.astype(bool))
    found, level, tested = (
        fallback_test(decided, errors, starts, alpha, delta) if len(candidates) else (None, 0.0, 0)
    )
    if found is None:
        return RiskControl(
            alpha, delta, NEVER_DECIDE, 0.0, n, 0, 0, 0.0, 1.0, tested, len(starts), 0.0, method, nodes
        )
    n_dec, k = int(decided[found]), int(errors[found])
    return RiskControl(
        alpha,
        delta,
        float(candidates[found]),
        n_dec / n,
        n,
        n_dec,
        k,
        k / n_dec,
        clopper_pearson_upper(k, n_dec, level),
        tested,
        len(starts),
        level,
        method,
        nodes,
    )


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
    primary_share: float = PRIMARY_SHARE,
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
        primary_share=primary_share,
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
            primary_share=primary_share,
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
