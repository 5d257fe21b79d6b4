"""Segment-level checks: how cases arrive (segment mix), where the model is wrong (concept drift
by segment) and, before any feedback, where it expects to be wrong (confidence-based estimate).

All three take frames in the `monitoring.frames` / `LogReader.reviewed` shapes and return plain
dataclasses that serialise to JSON; the verdicts are made in `monitoring.checks`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency

from keel.models.nesting import SegmentParents, segment_parents
from keel.monitoring.overrides import decided_reviews
from keel.monitoring.stats import binomial_above, holm, proportion

__all__ = [
    "ConceptFinding",
    "ConceptReport",
    "ExpectedQuality",
    "MixField",
    "MixReport",
    "SegmentParents",
    "concept_by_segment",
    "expected_quality",
    "segment_mix",
    "segment_parents",
]


@dataclass
class MixField:
    field: str
    p_value: float
    p_holm: float
    significant: bool
    value: str
    """The value whose share moved most (largest |log ratio| among values with a share of 1%+)."""
    reference_share: float
    current_share: float
    ratio: float
    """Current share / reference share of `value` (the largest move, either direction, as >= 1)."""
    shares: dict[str, dict[str, float]] = dc_field(default_factory=dict)


@dataclass
class MixReport:
    alpha: float
    reference_rows: int
    current_rows: int
    fields: list[MixField]

    @property
    def flagged(self) -> list[MixField]:
        return [f for f in self.fields if f.significant]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def segment_mix(
    reference: pd.DataFrame, current: pd.DataFrame, segments: Sequence[str], alpha: float = 0.01
) -> MixReport:
    """Chi-squared test of each segment field's value counts, window versus reference sample.

    A segment field is a check of its own, not one drifted column among many: a change in how
    cases arrive by channel, region or entity is process news even when the model copes with it.
    Holm over the fields; G-test-like power is not needed at these counts, Pearson's is standard.
    """
    found = []
    for name in segments:
        if name not in reference or name not in current:
            continue
        ref = reference[name].dropna().astype(str).value_counts()
        cur = current[name].dropna().astype(str).value_counts()
        values = sorted(set(ref.index) | set(cur.index))
        if len(values) < 2 or ref.sum() == 0 or cur.sum() == 0:
            continue
        table = np.array([[ref.get(v, 0) for v in values], [cur.get(v, 0) for v in values]], dtype=float)
        table = table[:, table.sum(axis=0) > 0]
        p = float(chi2_contingency(table, correction=False).pvalue) if table.shape[1] > 1 else 1.0
        ref_share, cur_share = ref / ref.sum(), cur / cur.sum()
        shares = {
            v: {"reference": float(ref_share.get(v, 0.0)), "current": float(cur_share.get(v, 0.0))}
            for v in values
        }
        top = max(values, key=lambda v: _log_ratio(shares[v]))
        r, c = shares[top]["reference"], shares[top]["current"]
        ratio = math.exp(_log_ratio(shares[top]))
        found.append(MixField(name, p, 1.0, False, top, r, c, ratio, shares))
    for f, adjusted in zip(found, holm([f.p_value for f in found]), strict=True):
        f.p_holm, f.significant = adjusted, adjusted < alpha
    found.sort(key=lambda f: (not f.significant, f.p_holm))
    return MixReport(alpha, len(reference), len(current), found)


def _log_ratio(share: dict[str, float]) -> float:
    r, c = share["reference"], share["current"]
    if max(r, c) < 0.01:  # a value nobody uses moving from 0.1% to 0.3% is not the headline
        return 0.0
    # Half a case's worth of share keeps a new or vanished value finite.
    return abs(math.log((c + 1e-4) / (r + 1e-4)))


@dataclass
class ConceptFinding:
    field: str
    value: str
    n: int
    errors: int
    rate: float
    low: float
    high: float
    p_value: float
    p_holm: float = 1.0
    significant: bool = False


@dataclass
class ConceptReport:
    alpha: float | None
    tolerated: float
    """The error rate a segment may show before it is news: certified alpha + tolerance."""
    min_n: int
    findings: list[ConceptFinding]
    abstained_accuracy: dict[str, dict[str, float | int | None]] = dc_field(default_factory=dict)
    """Per segment value: how often the model's best guess matched the reviewer on abstentions
    (judged apart: abstentions are the hard cases, so their accuracy is low by design)."""

    @property
    def flagged(self) -> list[ConceptFinding]:
        return [f for f in self.findings if f.significant]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def concept_by_segment(
    reviewed: pd.DataFrame,
    segments: Sequence[str],
    alpha: float | None,
    tolerance: float,
    min_n: int = 30,
    level: float = 0.01,
) -> ConceptReport:
    """Reviewed error of decided cases per segment value, tested against alpha + tolerance.

    The abstention guarantee bounds the error of decided cases at alpha overall; reviewers slip
    and segments differ in difficulty, so a segment is flagged only when its error is
    significantly (exact one-sided binomial, Holm over every value) above alpha + tolerance.
    A segment where the model is wrong this often has a different outcome rule: retrain.
    """
    tolerated = (alpha or 0.0) + tolerance
    decided = decided_reviews(reviewed)
    findings = []
    for name in segments:
        if decided.empty or name not in decided:
            continue
        values = decided[name].astype(object)
        grouped = decided.loc[values.notna(), "overridden"].groupby(values[values.notna()].astype(str))
        for value, events in grouped:
            n, k = len(events), int(events.sum())
            if n < min_n:
                continue
            prop = proportion(k, n)
            findings.append(
                ConceptFinding(
                    name, str(value), n, k, k / n, prop.low, prop.high, binomial_above(k, n, tolerated)
                )
            )
    for f, adjusted in zip(findings, holm([f.p_value for f in findings]), strict=True):
        f.p_holm, f.significant = adjusted, adjusted < level
    findings.sort(key=lambda f: (not f.significant, f.p_holm, -f.rate))
    return ConceptReport(alpha, tolerated, min_n, findings, _abstained_accuracy(reviewed, segments))


def _abstained_accuracy(reviewed: pd.DataFrame, segments: Sequence[str]) -> dict[str, dict[str, Any]]:
    if reviewed.empty:
        return {}
    held = reviewed[reviewed["abstained"].astype(bool) & reviewed["final_outcome"].notna()]
    out: dict[str, dict[str, Any]] = {}
    for name in segments:
        if name not in held:
            continue
        right = held["most_likely"].astype(str) == held["final_outcome"].astype(str)
        for value, hits in right.groupby(held[name].astype(str)):
            out[f"{name}={value}"] = {"n": len(hits), "accuracy": float(hits.mean()) if len(hits) else None}
    return out


@dataclass
class SegmentExpectation:
    field: str
    value: str
    n_decided: int
    expected_error: float
    reference_expected_error: float | None


@dataclass
class ExpectedQuality:
    """Confidence-based performance estimation: what the calibrated confidences expect.

    Needs no feedback, so it warns as soon as decisions arrive; it is exact only while the
    model stays calibrated, which concept drift breaks (reviewed error then tells the truth).
    """

    alpha: float | None
    n_decided: int
    expected_error: float | None
    """Mean of 1 - confidence over decided cases: the expected selective error."""
    expected_accuracy: float | None
    """Mean confidence over all cases (decided and abstained): the best guess's expected accuracy."""
    reference_expected_error: float | None
    min_n: int
    segments: list[SegmentExpectation] = dc_field(default_factory=list)
    """Worst first."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expected_quality(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    segments: Sequence[str],
    alpha: float | None,
    min_n: int = 100,
) -> ExpectedQuality:
    def decided(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[~frame["abstained"].astype(bool) & frame["confidence"].notna()]

    cur, ref = decided(current), decided(reference)
    out = ExpectedQuality(
        alpha,
        len(cur),
        _expected_error(cur),
        float(current["confidence"].mean()) if current["confidence"].notna().any() else None,
        _expected_error(ref),
        min_n,
    )
    for name in segments:
        if name not in cur:
            continue
        ref_by = {str(v): g for v, g in ref.groupby(ref[name].astype(str))} if name in ref else {}
        for value, group in cur.groupby(cur[name].astype(str)):
            if len(group) < min_n:
                continue
            base = ref_by.get(str(value))
            base_error = _expected_error(base) if base is not None and len(base) >= min_n else None
            out.segments.append(
                SegmentExpectation(name, str(value), len(group), _expected_error(group) or 0.0, base_error)
            )
    out.segments.sort(key=lambda s: -s.expected_error)
    return out


def _expected_error(frame: pd.DataFrame | None) -> float | None:
    if frame is None or frame.empty:
        return None
    return float((1.0 - frame["confidence"].astype("float64")).mean())
