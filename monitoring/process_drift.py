"""Process drift: do similar cases get different treatment depending on their segment?

"Similar" means the same band of the model's own confidence: a region whose cases are harder
sees more overrides for a good reason, so each segment value is compared with the other values
*within* score bands (Cochran–Mantel–Haenszel over the bands), and the headline ratio is the
Mantel–Haenszel rate ratio, not the crude one. Metrics: the override rate of reviewed decided
cases and, given `LogReader.decided_by_segment`, the policy-intervention rate of all decided
cases. p-values are Holm-adjusted over every test of the model; values with fewer than `min_n`
cases are listed as skipped, never flagged, and are no one's reference either.

The reference of a value is the other values minus those already found to differ: with one
region overriding far more, "all other regions" would make every fair region look lenient.
Outliers are found step-down (most significant first, Bonferroni gate) before the final tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field
from typing import Any, Literal

import numpy as np
import pandas as pd

from keel.monitoring.overrides import decided_reviews
from keel.monitoring.stats import CMHResult, band_index, band_labels, cmh_test, finite, weighted_holm

METRIC_NAMES = {"override_rate": "override rate", "intervention_rate": "policy-intervention rate"}
# Reviewers overriding *more* than elsewhere in the same score bands is the finding a risk team
# acts on (the model or the process fails there), so override rates are tested one-sided, which
# buys the power to see a 3x region in one window; intervention rates move either way by design.
ALTERNATIVES: dict[str, Literal["two-sided", "greater"]] = {
    "override_rate": "greater",
    "intervention_rate": "two-sided",
}


@dataclass(frozen=True)
class BandRate:
    band: str
    n: int
    events: int
    rest_n: int
    rest_events: int


@dataclass
class Finding:
    metric: str
    field: str
    value: str
    compared_with: list[str]
    n: int
    events: int
    rate: float
    rest_rate: float | None
    expected_rate: float | None
    """The reference's rate in each band, weighted by this value's band mix: 'same score bands'."""
    null_rate: float | None
    """The value's rate under no drift: as `expected_rate`, with the band rates pooled over the
    value and its reference (an outlier's over its reference alone). Both estimate the same rate,
    but the reference alone moves against the value's own cases (fewer overrides in NA mean more
    in "everyone but NA"); pooled, one window's noise is shared by every value, so power
    calculations (stated limits, audit plans) are not tilted toward whichever value was lucky."""
    rate_ratio: float | None
    """Mantel–Haenszel rate ratio versus the reference, over score bands."""
    odds_ratio: float | None
    odds_ratio_low: float | None
    odds_ratio_high: float | None
    p_value: float
    lowest_value: str | None = None
    rate_ratio_vs_lowest: float | None = None
    p_holm: float = 1.0
    significant: bool = False
    sentence: str = ""
    bands: list[BandRate] = dataclass_field(default_factory=list)


@dataclass
class ProcessDriftReport:
    band_edges: list[float]
    min_n: int
    alpha: float
    n_tests: int
    findings: list[Finding]
    """Flagged first, then by adjusted p-value."""
    skipped: list[dict[str, Any]]
    """Segment values with too few cases to test, with their counts."""

    @property
    def flagged(self) -> list[Finding]:
        return [f for f in self.findings if f.significant]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def override_cells(reviewed: pd.DataFrame, segments: Sequence[str], bands: Sequence[float]) -> pd.DataFrame:
    """Reviewed decided cases per (field, value, band): n and overrides."""
    decided = decided_reviews(reviewed)
    decided = decided[decided["confidence"].notna()] if not decided.empty else decided
    band = band_index(decided["confidence"].to_numpy(dtype="float64"), bands)
    events = decided["overridden"].to_numpy(dtype=bool)
    parts = []
    for name in segments:
        values = decided[name].astype(object) if name in decided else pd.Series([None] * len(decided))
        keep = values.notna().to_numpy()
        cells = pd.DataFrame(
            {"value": values[keep].astype(str).to_numpy(), "band": band[keep], "e": events[keep]}
        )
        grouped = cells.groupby(["value", "band"], as_index=False).agg(n=("e", "size"), events=("e", "sum"))
        parts.append(grouped.assign(field=name))
    return _cells(parts)


def intervention_cells(decided_by_segment: pd.DataFrame) -> pd.DataFrame:
    """`LogReader.decided_by_segment` output as (field, value, band, n, events)."""
    return _cells([decided_by_segment.rename(columns={"n_decided": "n", "n_intervened": "events"})])


def _cells(parts: list[pd.DataFrame]) -> pd.DataFrame:
    columns = ["field", "value", "band", "n", "events"]
    out = (
        pd.concat([p[columns] for p in parts], ignore_index=True) if parts else pd.DataFrame(columns=columns)
    )
    return out.astype({"band": "int64", "n": "int64", "events": "int64"})


@dataclass
class _Field:
    metric: str
    name: str
    n: pd.DataFrame  # value × band counts
    e: pd.DataFrame  # value × band events
    eligible: list[str]


def process_drift(
    reviewed: pd.DataFrame,
    segments: Sequence[str],
    bands: Sequence[float],
    decided_by_segment: pd.DataFrame | None = None,
    min_n: int = 50,
    alpha: float = 0.01,
    primary: str | None = None,
    primary_share: float = 0.8,
) -> ProcessDriftReport:
    """Every eligible segment value against the others, in the same score bands.

    Each metric is its own family. Within it the error budget is split (weighted Holm):
    `primary_share` of it goes to the values of the `primary` field (regions: few, and where a
    process difference matters most), the rest to all other fields' values, so four regions are
    not drowned by thirty entities and channels.
    """
    metrics = {"override_rate": override_cells(reviewed, segments, bands)}
    if decided_by_segment is not None:
        metrics["intervention_rate"] = intervention_cells(decided_by_segment)
    labels = band_labels(bands)
    fields, skipped = [], []
    for metric, cells in metrics.items():
        for name, per_field in cells.groupby("field", sort=False):
            fld = _prepare(metric, str(name), per_field, len(labels))
            for value in fld.n.index:
                count = int(fld.n.loc[value].sum())
                if count >= min_n and int(fld.n.to_numpy().sum()) - count >= min_n:
                    fld.eligible.append(str(value))
                else:
                    skipped.append({"metric": metric, "field": fld.name, "value": str(value), "n": count})
            fields.append(fld)
    findings = []
    for metric in metrics:
        family = [fld for fld in fields if fld.metric == metric]
        weight = _weights(family, primary, primary_share)
        # Step-down outlier gate: Bonferroni at the smallest per-value budget of the field.
        found = [f for fld in family for f in _findings(fld, labels, alpha * min(weight(fld), 1.0))]
        adjusted = weighted_holm([f.p_value for f in found], [weight(_field_of(family, f)) for f in found])
        for finding, p in zip(found, adjusted, strict=True):
            finding.p_holm = p
            finding.significant = p < alpha
            finding.sentence = _sentence(finding)
        findings += found
    findings.sort(key=lambda f: (not f.significant, f.p_holm, -abs(math.log(f.rate_ratio or 1.0))))
    return ProcessDriftReport(list(map(float, bands)), min_n, alpha, len(findings), findings, skipped)


def _weights(family: list[_Field], primary: str | None, share: float) -> Callable[[_Field], float]:
    """Per-test weight (a share of the family's budget) for a test of a value of `fld`."""
    main = sum(len(f.eligible) for f in family if f.name == primary)
    rest = sum(len(f.eligible) for f in family if f.name != primary)
    if not main or not rest:
        share = 1.0 if main else 0.0

    def weight(fld: _Field) -> float:
        if fld.name == primary:
            return share / max(main, 1)
        return (1.0 - share) / max(rest, 1)

    return weight


def _field_of(family: list[_Field], finding: Finding) -> _Field:
    return next(f for f in family if f.name == finding.field)


def _prepare(metric: str, name: str, cells: pd.DataFrame, n_bands: int) -> _Field:
    n = cells.pivot_table(index="value", columns="band", values="n", aggfunc="sum", fill_value=0)
    e = cells.pivot_table(index="value", columns="band", values="events", aggfunc="sum", fill_value=0)
    n = n.reindex(columns=range(n_bands), fill_value=0)
    return _Field(metric, name, n, e.reindex(index=n.index, columns=range(n_bands), fill_value=0), [])


def versus_rest(metric: str, cells: pd.DataFrame, field: str, value: str, n_bands: int) -> CMHResult:
    """`value` of `field` against all its other values in the same score bands: the test
    `process_drift` runs, without its search for outliers (benchmarks' known-value ceilings)."""
    fld = _prepare(metric, field, cells[cells["field"] == field], n_bands)
    return _versus(fld, value, [str(v) for v in fld.n.index if str(v) != value])


def _versus(fld: _Field, value: str, pool: list[str]) -> CMHResult:
    nv, ev = fld.n.loc[value].to_numpy(), fld.e.loc[value].to_numpy()
    nr, er = fld.n.loc[pool].to_numpy().sum(axis=0), fld.e.loc[pool].to_numpy().sum(axis=0)
    tables = np.stack([np.stack([ev, nv - ev], axis=-1), np.stack([er, nr - er], axis=-1)], axis=1)
    return cmh_test(tables, alternative=ALTERNATIVES[fld.metric])


def _findings(fld: _Field, labels: list[str], gate: float) -> list[Finding]:
    outliers: list[str] = []

    def pool(value: str) -> list[str]:
        return [u for u in fld.eligible if u != value and u not in outliers]

    while True:  # step-down: take out the clearest outlier, then look again without it
        tests = {v: _versus(fld, v, pool(v)) for v in fld.eligible if v not in outliers and pool(v)}
        if not tests:
            break
        worst = min(tests, key=lambda v: tests[v].p_value)
        if tests[worst].p_value >= gate:
            break
        outliers.append(worst)
    findings = []
    for value in fld.eligible:
        # The last fair value (or one of two) is compared with all others rather than with nothing.
        ref = pool(value) or [u for u in fld.eligible if u != value]
        if ref:
            null = ref if value in outliers else [value, *pool(value)]
            findings.append(_finding(fld, value, ref, _versus(fld, value, ref), labels, null))
    if findings:
        lowest = min(findings, key=lambda f: f.rate_ratio if f.rate_ratio is not None else math.inf)
        for f in findings:
            f.lowest_value = lowest.value
            ratio = 1.0 if f is lowest else _versus(fld, f.value, [lowest.value]).rate_ratio
            f.rate_ratio_vs_lowest = finite(ratio)
    return findings


def _finding(
    fld: _Field, value: str, ref: list[str], test: CMHResult, labels: list[str], null: list[str]
) -> Finding:
    nv, ev = fld.n.loc[value].to_numpy(), fld.e.loc[value].to_numpy()
    nr, er = fld.n.loc[ref].to_numpy().sum(axis=0), fld.e.loc[ref].to_numpy().sum(axis=0)
    ref_band_rate = np.divide(er, nr, out=np.zeros(len(labels)), where=nr > 0)
    weight = nv * (nr > 0)
    n0, e0 = fld.n.loc[null].to_numpy().sum(axis=0), fld.e.loc[null].to_numpy().sum(axis=0)
    null_band_rate = np.divide(e0, n0, out=np.zeros(len(labels)), where=n0 > 0)
    return Finding(
        metric=fld.metric, field=fld.name, value=value, compared_with=list(ref),
        n=int(nv.sum()), events=int(ev.sum()), rate=float(ev.sum() / nv.sum()),
        rest_rate=float(er.sum() / nr.sum()) if nr.sum() else None,
        expected_rate=float((weight * ref_band_rate).sum() / weight.sum()) if weight.sum() else None,
        null_rate=float((weight * null_band_rate).sum() / weight.sum()) if weight.sum() else None,
        rate_ratio=finite(test.rate_ratio), odds_ratio=finite(test.odds_ratio),
        odds_ratio_low=finite(test.odds_ratio_low), odds_ratio_high=finite(test.odds_ratio_high),
        p_value=test.p_value,
        bands=[BandRate(labels[b], *map(int, (nv[b], ev[b], nr[b], er[b]))) for b in range(len(labels))],
    )  # fmt: skip


def _sentence(f: Finding) -> str:
    what = METRIC_NAMES[f.metric]
    ratio = "an undefined multiple of" if f.rate_ratio is None else f"{f.rate_ratio:.1f}×"
    expected = "n/a" if f.expected_rate is None else f"{f.expected_rate:.1%}"
    ref = f.compared_with[0] if len(f.compared_with) == 1 else "the rest"
    text = (
        f"{f.value} ({f.field}): {what} {ratio} {ref} in the same score bands "
        f"({f.rate:.1%} vs {expected}, CMH {_p(f.p_value)}, Holm {_p(f.p_holm)})"
    )
    if f.lowest_value not in (None, f.value, ref) and f.rate_ratio_vs_lowest is not None:
        # A second ratio: against the single value with the lowest rate, not against the rest.
        text += (
            f"; {f.rate_ratio_vs_lowest:.1f}× {f.lowest_value} alone, the {f.field} with the lowest "
            f"{what} in the same score bands"
        )
    return text


def _p(p: float) -> str:
    # Tail probabilities this small say nothing more (the model is only approximate); "p=0" overclaims.
    return "p<1e-16" if p < 1e-16 else f"p={p:.2g}"
