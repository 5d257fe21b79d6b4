"""Human override rates from the reviewed-decisions frame (`LogReader.reviewed`).

An override is a reviewer's final outcome differing from an outcome the model *decided*; the
rate's denominator is reviewed decided cases (feedback kind override or confirmation). Labels
on abstentions are new training data, not disagreement, so they are counted apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from keel.monitoring.stats import Proportion, proportion

DECIDED_KINDS = ("override", "confirmation")


@dataclass(frozen=True)
class OverridePair:
    model_outcome: str
    final_outcome: str
    count: int
    share: float
    """Share of all overrides in the window."""


@dataclass(frozen=True)
class ReasonCount:
    reason: str
    count: int


@dataclass
class OverrideReport:
    n_reviewed: int
    n_reviewed_decided: int
    n_labels: int
    """Reviewed abstentions: labelled, never overrides."""
    overall: Proportion
    by_class: dict[str, Proportion] = field(default_factory=dict)
    """Keyed by the model's decided outcome."""
    by_segment: dict[str, dict[str, Proportion]] = field(default_factory=dict)
    by_version: dict[str, Proportion] = field(default_factory=dict)
    top_pairs: list[OverridePair] = field(default_factory=list)
    top_reasons: list[ReasonCount] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decided_reviews(reviewed: pd.DataFrame) -> pd.DataFrame:
    """Reviewed cases the model had decided, with a boolean `overridden` column."""
    if reviewed.empty:
        return reviewed.assign(overridden=pd.Series(dtype=bool))
    decided = reviewed[reviewed["kind"].isin(DECIDED_KINDS) & ~reviewed["abstained"].astype(bool)]
    return decided.assign(overridden=decided["kind"].eq("override"))


def rates_by(decided: pd.DataFrame, column: str, confidence: float = 0.95) -> dict[str, Proportion]:
    """Override rate per value of `column` (missing values left out), largest groups first."""
    if decided.empty or column not in decided:
        return {}
    values = decided[column].astype(object)
    keep = values.notna()
    grouped = (
        decided.loc[keep, "overridden"]
        .groupby(values[keep].astype(str))
        .agg(["sum", "count"])
        .sort_values("count", ascending=False, kind="stable")
    )
    return {str(v): proportion(int(r["sum"]), int(r["count"]), confidence) for v, r in grouped.iterrows()}


def override_report(
    reviewed: pd.DataFrame, segments: Sequence[str], top: int = 10, confidence: float = 0.95
) -> OverrideReport:
    decided = decided_reviews(reviewed)
    n_labels = int(reviewed["kind"].eq("label").sum()) if not reviewed.empty else 0
    overrides = decided[decided["overridden"]]
    report = OverrideReport(
        n_reviewed=len(reviewed),
        n_reviewed_decided=len(decided),
        n_labels=n_labels,
        overall=proportion(len(overrides), len(decided), confidence),
        by_class=rates_by(decided, "outcome", confidence),
        by_segment={s: rates_by(decided, s, confidence) for s in segments},
        by_version=rates_by(decided, "model_version", confidence),
    )
    if overrides.empty:
        return report
    pairs = (
        overrides.groupby([overrides["outcome"].astype(str), overrides["final_outcome"].astype(str)])
        .size()
        .sort_values(ascending=False, kind="stable")
        .head(top)
    )
    report.top_pairs = [
        OverridePair(str(said), str(final), int(c), int(c) / len(overrides))
        for (said, final), c in pairs.items()
    ]
    reasons = overrides["reason"].dropna().astype(str)
    reasons = reasons[reasons.str.strip() != ""]
    report.top_reasons = [ReasonCount(str(r), int(c)) for r, c in reasons.value_counts().head(top).items()]
    return report
