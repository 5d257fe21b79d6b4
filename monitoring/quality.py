"""Quality on reviewed cases: accuracy and top-label calibration against human final outcomes.

The model's answer on a case is `most_likely` (the explained class), which equals the outcome
where it decided, so abstentions can be scored too: they show how good the model's best guess
was on the cases it handed over. None of this is an unbiased estimate for all decisions; see
CAVEAT, which every report carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from keel.monitoring.log_reader import WindowSummary
from keel.monitoring.overrides import DECIDED_KINDS, rates_by
from keel.monitoring.stats import Proportion, proportion

CAVEAT = (
    "Reviewed cases are not a random sample of decisions: every abstention goes to a reviewer, "
    "while only a share of the decided cases is reviewed, picked by the workflow (policy routes, "
    "spot checks, disputes). Accuracy and calibration here describe the reviewed cases; they "
    "are biased towards hard cases and are not the model's accuracy on all decisions."
)


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    n: int
    mean_confidence: float | None
    accuracy: float | None
    gap: float | None
    """accuracy - mean confidence: negative means over-confident."""


@dataclass
class QualityReport:
    n_reviewed: int
    accuracy: Proportion
    """most_likely == final_outcome over every reviewed case with a model answer."""
    accuracy_decided: Proportion
    accuracy_abstained: Proportion
    selective_error: Proportion
    """Errors among reviewed decided cases: estimates the abstention guarantee's error rate
    only if decided cases are picked for review independently of their correctness."""
    by_segment: dict[str, dict[str, Proportion]] = field(default_factory=dict)
    ece: float | None = None
    reliability: list[ReliabilityBin] = field(default_factory=list)
    coverage: Proportion | None = None
    """Decided share of all decisions in the window (needs the window summary)."""
    review_share_decided: float | None = None
    review_share_abstained: float | None = None
    alpha: float | None = None
    error_exceeds_alpha: bool | None = None
    """True when even the Wilson lower bound of the selective error is above alpha."""
    caveat: str = CAVEAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scored(reviewed: pd.DataFrame) -> pd.DataFrame:
    """Reviewed cases with a model answer, with a boolean `correct` column."""
    if reviewed.empty:
        return reviewed.assign(correct=pd.Series(dtype=bool), overridden=pd.Series(dtype=bool))
    answered = reviewed[reviewed["most_likely"].notna() & reviewed["final_outcome"].notna()]
    correct = answered["most_likely"].astype(str) == answered["final_outcome"].astype(str)
    # rates_by counts the `overridden` column; for accuracy that column holds correctness.
    return answered.assign(correct=correct, overridden=correct)


def reliability(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> list[ReliabilityBin]:
    """Equal-width confidence bins on [0, 1]; a confidence of exactly 1 falls in the last bin."""
    edges = np.arange(n_bins + 1) / n_bins  # k/n exactly, so 0.7 is in [0.7, 0.8), as written
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        mask = index == b
        n = int(mask.sum())
        if n == 0:
            out.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), 0, None, None, None))
            continue
        conf, acc = float(confidence[mask].mean()), float(correct[mask].mean())
        out.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), n, conf, acc, acc - conf))
    return out


def expected_calibration_error(bins: Sequence[ReliabilityBin]) -> float | None:
    total = sum(b.n for b in bins)
    if total == 0:
        return None
    return float(sum(b.n / total * abs(b.gap) for b in bins if b.gap is not None))


def quality_report(
    reviewed: pd.DataFrame,
    segments: Sequence[str],
    summary: WindowSummary | None = None,
    alpha: float | None = None,
    n_bins: int = 10,
    confidence: float = 0.95,
) -> QualityReport:
    answered = scored(reviewed)
    abstained = answered["abstained"].astype(bool) if not answered.empty else pd.Series(dtype=bool)
    decided = answered[~abstained & answered["kind"].isin(DECIDED_KINDS)] if not answered.empty else answered
    held = answered[abstained] if not answered.empty else answered
    report = QualityReport(
        n_reviewed=len(reviewed),
        accuracy=proportion(int(answered["correct"].sum()), len(answered), confidence),
        accuracy_decided=proportion(int(decided["correct"].sum()), len(decided), confidence),
        accuracy_abstained=proportion(int(held["correct"].sum()), len(held), confidence),
        selective_error=proportion(len(decided) - int(decided["correct"].sum()), len(decided), confidence),
        by_segment={s: rates_by(answered, s, confidence) for s in segments},
        alpha=alpha,
    )
    with_conf = answered[answered["confidence"].notna()] if not answered.empty else answered
    report.reliability = reliability(
        with_conf["confidence"].to_numpy(dtype="float64"), with_conf["correct"].to_numpy(dtype=bool), n_bins
    )
    report.ece = expected_calibration_error(report.reliability)
    if alpha is not None and len(decided):
        report.error_exceeds_alpha = report.selective_error.low > alpha
    if summary is not None and summary.n_decisions:
        report.coverage = proportion(summary.n_decided, summary.n_decisions, confidence)
        n_reviewed_abstained = int(reviewed["abstained"].astype(bool).sum()) if not reviewed.empty else 0
        if summary.n_decided:
            report.review_share_decided = (len(reviewed) - n_reviewed_abstained) / summary.n_decided
        if summary.n_abstained:
            report.review_share_abstained = n_reviewed_abstained / summary.n_abstained
    return report
