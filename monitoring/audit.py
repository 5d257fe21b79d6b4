"""Audit evidence: unbiased estimates from audit-selected cases, and local against cross reviewers.

Keel selects decided cases for audit at random with a known inclusion probability (the record's
`audit`), so the audited cases are a probability sample of all decided cases: each one stands for
1/probability decided cases (Horvitz–Thompson weights). Rates are Hajek (ratio) estimates,
sum(w y) / sum(w), because audited cases still waiting for their review would bias the HT total
divided by the known count, while the ratio only assumes the missing reviews are missing at random
within a weight. Reviews nobody selected at random (policy routes, spot checks, disputes: the
"discretionary" ones, and every record logged before audit sampling) are reported apart and never
enter an estimate.

Cross reviewers (feedback `reviewer_pool: cross`) come from outside the case's segment, so a local
review practice does not reach them: where local reviewers overturn a segment's decisions more
often than elsewhere in the same score bands while cross reviewers agree with the model as often as
elsewhere, the difference is the local practice (process drift); where cross reviewers overturn them
too, the model is wrong there (concept drift). `practice_vs_rule` says which, or that the audits
cannot tell yet and how many more cross audits in that segment value would.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import hypergeom, norm
from statsmodels.stats.proportion import proportion_effectsize

from keel.models.frames import audit_flag
from keel.monitoring.overrides import decided_reviews
from keel.monitoring.segments import segment_parents
from keel.monitoring.stats import (
    Proportion,
    band_index,
    cmh_test,
    holm,
    proportion,
    weighted_holm,
    wilson_at,
)

__all__ = [
    "AuditReport",
    "Estimate",
    "PracticeFinding",
    "Reading",
    "audit_report",
    "audited",
    "hajek",
    "more_cross_audits",
    "practice_vs_rule",
]

Reading = Literal["review practice", "model wrong there", "investigate"]
PRACTICE: Reading = "review practice"
RULE: Reading = "model wrong there"
INVESTIGATE: Reading = "investigate"
DECIDING_POWER = 0.9
"""Power the "how many more cross audits" figure is planned for."""
DRILL_MIN_N = 5
"""Local audits a nested value needs to be tested inside a reported parent (three overturns of
five reach 0.1% against a 3% baseline)."""
WEIGHT_GRID = 20
"""Steps the score bands' weights are rounded to in the exact practice test (any weights fixed by
the margins keep it exact; 20 keeps the convolution small and the weights within 2.5%)."""


@dataclass(frozen=True)
class Estimate:
    """A rate estimated from audited cases with inverse-probability weights."""

    n: int
    """Audited cases it rests on."""
    events: int
    value: float | None
    low: float
    high: float
    effective_n: float
    """R(1 - R) / v for the estimate R and its linearised variance v: n when every probability is
    equal (Kish's (sum w)^2 / sum w^2 when R is 0 or 1)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hajek(events: Sequence[bool] | np.ndarray, probability: Sequence[float] | np.ndarray,
          confidence: float = 0.95) -> Estimate:  # fmt: skip
    """Hajek estimate of a rate from audited cases (event, inclusion probability), with a Wilson
    interval at the effective sample size of its linearised variance.

    Wilson because it is the interval every other rate in monitoring carries and it stays inside
    [0, 1] with sensible width near 0, where error and override rates live (the Wald interval
    collapses there); at the effective sample size because unequal weights carry less information
    than as many equal ones (Korn & Graubard's device for survey proportions). With equal
    probabilities the weights cancel: the estimate is the plain proportion k/n and the interval is
    exactly `stats.wilson_interval(k, n)`.
    """
    y = np.asarray(events, dtype=bool)
    p = np.asarray(probability, dtype="float64")
    if y.shape != p.shape:
        raise ValueError("need one inclusion probability per audited case")
    if np.any(~(p > 0)) or np.any(p > 1):
        raise ValueError("inclusion probabilities must lie in (0, 1]")
    n, k = len(y), int(y.sum())
    if n == 0:
        return Estimate(0, 0, None, 0.0, 1.0, 0.0)
    w = 1.0 / p
    if float(np.ptp(p)) <= 1e-12 * float(p.max()):
        # Equal probabilities: exactly the plain proportion, no rounding from the weights.
        plain = proportion(k, n, confidence)
        return Estimate(n, k, plain.rate, plain.low, plain.high, float(n))
    value = float((w * y).sum() / w.sum())
    # Linearised (with-replacement) variance of the ratio, and the effective sample size it
    # implies, n* = R(1 - R) / v: Kish's (sum w)^2 / sum w^2 alone ignores that errors may sit
    # where weights are large, and then under-covers. With no event (or only events) v is 0 and
    # Kish's size stands in.
    v = float((w * w * (y - value) ** 2).sum() / w.sum() ** 2)
    kish = float(w.sum() ** 2 / (w * w).sum())
    n_eff = value * (1 - value) / v if v > 0 else kish
    low, high = wilson_at(value, n_eff, confidence)
    return Estimate(n, k, value, low, high, n_eff)


def _column(frame: pd.DataFrame, name: str, default: Any) -> pd.Series:
    return frame[name] if name in frame else pd.Series([default] * len(frame), index=frame.index)


def audited(reviewed: pd.DataFrame) -> pd.DataFrame:
    """Reviewed decided cases that were selected for audit with a known probability, with
    `overridden`, `weight` (1 / probability) and `pool` ("cross" or "local") columns."""
    decided = decided_reviews(reviewed)
    # Read like the log's JSON (True/1/"true"); missing (old records) is not selected.
    flags = [audit_flag(v) for v in _column(decided, "audit_selected", False)]
    selected = pd.Series(flags, index=decided.index, dtype=bool)
    probability = pd.to_numeric(_column(decided, "audit_probability", np.nan), errors="coerce")
    keep = selected & (probability > 0) & (probability <= 1)
    out = decided[keep.to_numpy()]
    pool = _column(out, "reviewer_pool", None).astype(object)
    return out.assign(
        audit_probability=probability[keep].astype("float64"),
        weight=1.0 / probability[keep].astype("float64"),
        pool=np.where(pool.to_numpy() == "cross", "cross", "local"),
    )


@dataclass
class PracticeFinding:
    """Local against cross reviewers on one segment value's audited cases, in the same score bands."""

    field: str
    value: str
    reading: Reading
    local: Proportion
    cross: Proportion
    baseline_rate: float | None
    """Overturn rate of audited cases elsewhere (every pool), in this value's score-band mix: what
    reviewers who agree with the model as often as elsewhere would show here."""
    local_p: float
    """One-sided: local overturns above the baseline (Holm over every value tested)."""
    cross_p: float
    """One-sided: cross overturns above the baseline (the model is wrong here), Holm-adjusted over
    the values reported."""
    gap_p: float
    """One-sided, exact: cross overturns below the local ones in the same score bands (a local
    practice), weighted-Holm-adjusted over the values reported as `local_p` is."""
    more_cross_audits: int | None
    """When the reading is "investigate": cross audits in this value that would decide it with 90%
    power (beyond those already there)."""
    sentence: str = ""


@dataclass
class AuditReport:
    alpha: float | None
    n_audited: int
    """Audited decided cases with a review."""
    n_audited_cross: int
    n_discretionary: int
    """Reviewed decided cases not selected for audit (including records from before sampling)."""
    accuracy: Estimate
    """The model's answer right, over audited decided cases and reviewed abstentions (weight 1:
    every abstention goes to a reviewer)."""
    selective_error: Estimate
    override_rate: Estimate
    by_segment: dict[str, dict[str, Estimate]]
    """Selective error per segment value."""
    discretionary_override_rate: Proportion
    error_exceeds_alpha: bool | None
    """True when even the lower bound of the estimated selective error is above the certified alpha."""
    findings: list[PracticeFinding] = dc_field(default_factory=list)
    level: float = 0.01
    method: str = (
        "Hajek (inverse-probability weighted) rates over audit-selected cases, Wilson interval at "
        "the effective sample size of the linearised variance; discretionary reviews apart"
    )

    def reading(self, field: str, value: str) -> Reading | None:
        return next((f.reading for f in self.findings if (f.field, f.value) == (field, value)), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def audit_report(
    reviewed: pd.DataFrame,
    segments: Sequence[str],
    alpha: float | None,
    bands: Sequence[float],
    level: float = 0.01,
    candidates: Iterable[tuple[str, str]] = (),
    min_n: int = 20,
    practice_level: float = 0.05,
    primary: str | None = None,
    primary_share: float = 0.8,
) -> AuditReport:
    """Estimates from the window's audited cases, and `practice_vs_rule` on every segment value
    whose local audits stand out or that another check flagged (`candidates`)."""
    frame = audited(reviewed)
    decided = decided_reviews(reviewed)
    wrong = (frame["most_likely"].astype(str) != frame["final_outcome"].astype(str)).to_numpy(dtype=bool)
    probability = frame["audit_probability"].to_numpy(dtype="float64") if len(frame) else np.zeros(0)
    held = reviewed[reviewed["abstained"].astype(bool) & reviewed["final_outcome"].notna()]
    right_held = (held["most_likely"].astype(str) == held["final_outcome"].astype(str)).to_numpy(dtype=bool)
    accuracy = hajek(np.concatenate([~wrong, right_held]), np.concatenate([probability, np.ones(len(held))]))
    selective = hajek(wrong, probability)
    by_segment: dict[str, dict[str, Estimate]] = {}
    for name in segments:
        if name not in frame or frame.empty:
            continue
        values = frame[name].astype(object)
        keep = values.notna().to_numpy()
        groups = pd.Series(np.arange(len(frame)))[keep].groupby(values[keep].astype(str).to_numpy())
        by_segment[name] = {str(v): hajek(wrong[idx], probability[idx]) for v, idx in groups}
    n_disc = len(decided) - len(frame)
    disc = decided.drop(index=frame.index) if len(frame) else decided
    return AuditReport(
        alpha=alpha,
        n_audited=len(frame),
        n_audited_cross=int((frame["pool"] == "cross").sum()) if len(frame) else 0,
        n_discretionary=n_disc,
        accuracy=accuracy,
        selective_error=selective,
        override_rate=hajek(frame["kind"].eq("override").to_numpy(dtype=bool), probability),
        by_segment=by_segment,
        discretionary_override_rate=proportion(int(disc["overridden"].sum()), len(disc)),
        error_exceeds_alpha=(selective.low > alpha) if alpha and selective.value is not None else None,
        findings=practice_vs_rule(
            frame, segments, bands, level, candidates, min_n, practice_level, primary, primary_share
        ),
        level=level,
    )


def practice_vs_rule(
    frame: pd.DataFrame,
    segments: Sequence[str],
    bands: Sequence[float],
    level: float = 0.01,
    candidates: Iterable[tuple[str, str]] = (),
    min_n: int = 20,
    practice_level: float = 0.05,
    primary: str | None = None,
    primary_share: float = 0.8,
) -> list[PracticeFinding]:
    """Per segment value with `min_n`+ local audits: local and cross overturn rates against the
    baseline of the other values in the same score bands (local: one-sided CMH against every
    audit elsewhere; cross: Birch's exact conditional test against every audit elsewhere, as cross
    counts are small), and cross against local reviewers of the value itself (an exact
    conditional test over score bands). Reported: values whose local excess survives Holm at
    `level` (weighted as process drift weighs them: `primary_share` on the `primary` field),
    and `candidates` (flagged elsewhere); each is read as

    - "model wrong there": cross reviewers overturn more than the baseline (Holm at `level` over
      the reported values: the reading that says retrain is held to the strict level);
    - "review practice": local reviewers do, and cross reviewers less than the local ones in the
      same score bands (at `practice_level` family-wise over the reported values, weighted as the
      local test is), while no value nesting in it or holding it reads "model wrong there";
    - "investigate": neither yet, with the cross audits in the value that would decide it.

    Inside a reported value, its nested values with `DRILL_MIN_N`+ local audits (fewer than
    `min_n`) whose local excess survives `level` Bonferroni over them are reported too, as
    "investigate" with the cross audits they need.
    """
    if frame.empty or "confidence" not in frame:
        return []
    band = band_index(frame["confidence"].to_numpy(dtype="float64"), bands)
    events = frame["overridden"].to_numpy(dtype=bool)
    cross = frame["pool"].to_numpy() == "cross"
    wanted = set(candidates)
    tested: list[tuple[str, str, dict[str, Any]]] = []
    small: dict[tuple[str, str], dict[str, Any]] = {}
    for name in segments:
        if name not in frame:
            continue
        values = frame[name].astype(object)
        known = values.notna().to_numpy()
        text = values.astype(str).to_numpy()
        for value in sorted(set(text[known])):
            mine = known & (text == value)
            rest = known & ~mine
            stats = _compare(band, events, cross, mine, rest, len(bands) - 1)
            if stats is None:
                continue
            if stats["local_n"] >= min_n or (name, value) in wanted:
                tested.append((name, value, stats))
            elif stats["local_n"] >= DRILL_MIN_N:
                small[(name, value)] = stats
    # The error budget split as process drift splits it (weighted Holm): `primary_share` on the
    # primary field's few values (regions), the rest on every other field's many values, so a
    # regional practice is not drowned by thirty entities and channels.
    main = sum(name == primary for name, *_ in tested)
    share = primary_share if main and main < len(tested) else (1.0 if main else 0.0)
    weights = [
        share / main if name == primary else (1.0 - share) / max(len(tested) - main, 1) for name, *_ in tested
    ]
    adjusted = weighted_holm([s["local_p"] for *_, s in tested], weights)
    report = [
        (name, value, s, p, w)
        for (name, value, s), p, w in zip(tested, adjusted, weights, strict=True)
        if p < level or (name, value) in wanted
    ]
    parents = segment_parents(frame, segments)
    nested: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for child, up in parents.items():
        nested.setdefault(up, []).append(child)
    # Drill-down: the values nested in a reported one that have too few local audits to be tested
    # on their own (a small entity in its region) are tested within it, at `level` Bonferroni over
    # the value's nested values. Tested only once their parent is reported (hierarchical testing),
    # they spend none of the families' levels below and leave every other reading as it was; a
    # handful of audits cannot separate a practice from a rule, so each reads "investigate", with
    # the cross audits that would decide it: a changed rule in one small entity is named there, not
    # only in its region.
    drilled: list[tuple[str, str, dict[str, Any], float, float]] = []
    for name, value, *_ in report:
        inside = nested.get((name, value), [])
        for child in inside:
            if child in small and (p := min(1.0, small[child]["local_p"] * len(inside))) < level:
                drilled.append((*child, small[child], p, level / len(inside)))
    # A wrong reading needs the cross audits to go against the truth. "Model wrong there" (the one
    # that says retrain) is held to `level` family-wise over the reported values (Holm on the cross
    # p-values), so a practice reads as a rule in at most `level` of windows however many of its
    # entities are reported beside the region. "Review practice" is read per value at
    # `practice_level` by an exact test of cross against local reviewers in the same score bands
    # (under a changed rule both see the same truth, so each test holds that level whatever the
    # rate). A changed rule makes its value and every value nesting it or holding it stand out
    # together (a small entity and its region), each a chance at a misread: the exact tests are
    # held to `practice_level` family-wise over the reported values (weighted Holm, with the
    # weights of the local test, so a regional practice keeps most of the level), so a changed
    # rule is read as a practice somewhere in at most `practice_level` of windows.
    # A few dozen cross audits in a region cannot reach 1% against a 5x practice at a 4% base rate.
    rule_p = holm([s["cross_p"] for _, _, s, _, _ in report])
    gap_p = weighted_holm([s["gap_p"] for _, _, s, _, _ in report], [w for *_, w in report]) if report else []
    readings: list[Reading] = []
    for (_, _, _, p, _), cross_p, gap in zip(report, rule_p, gap_p, strict=True):
        if cross_p < level:
            readings.append(RULE)
        elif p < level and gap < practice_level:
            readings.append(PRACTICE)
        else:
            readings.append(INVESTIGATE)
    # A value inside one the cross reviewers call wrong (or holding one) is not a local practice:
    # the two readings contradict each other, and the rule is the one read at the strict level.
    wrong = {(name, value) for (name, value, *_), r in zip(report, readings, strict=True) if r == RULE}
    total = sum(w for *_, w in report)
    out = []
    for (name, value, s, p, w), reading, cross_p, gap in zip(report, readings, rule_p, gap_p, strict=True):
        related = {parents.get((name, value)), *nested.get((name, value), [])}
        if reading == PRACTICE and related & wrong:
            reading = INVESTIGATE
        # Enough to reach either reading at its first-step (Bonferroni) level, the stricter one.
        deciding = min(level / len(report), practice_level * w / total)
        needed = (
            more_cross_audits(s["local_rate"], s["baseline"], s["cross_n"], deciding)
            if reading == INVESTIGATE
            else None
        )
        finding = PracticeFinding(
            name, value, reading, proportion(s["local_k"], s["local_n"]),
            proportion(s["cross_k"], s["cross_n"]), s["baseline"], p, cross_p, gap, needed,
        )  # fmt: skip
        finding.sentence = _sentence(finding)
        out.append(finding)
    for name, value, s, p, deciding in drilled:
        finding = PracticeFinding(
            name, value, INVESTIGATE, proportion(s["local_k"], s["local_n"]),
            proportion(s["cross_k"], s["cross_n"]), s["baseline"], p, s["cross_p"], s["gap_p"],
            more_cross_audits(s["local_rate"], s["baseline"], s["cross_n"], deciding),
        )  # fmt: skip
        finding.sentence = _sentence(finding)
        out.append(finding)
    order = {RULE: 0, PRACTICE: 1, INVESTIGATE: 2}
    out.sort(key=lambda f: (order[f.reading], f.local_p))
    return out


def _compare(
    band: np.ndarray, events: np.ndarray, cross: np.ndarray, mine: np.ndarray, rest: np.ndarray, n_bands: int
) -> dict[str, Any] | None:
    rest_n = np.bincount(band[rest], minlength=n_bands).astype(float)
    if rest_n.sum() == 0:
        return None
    rest_k = np.bincount(band[rest], weights=events[rest].astype(float), minlength=n_bands)
    # A band nobody elsewhere reached borrows the overall rate elsewhere.
    overall = rest_k.sum() / rest_n.sum()
    base = np.where(rest_n > 0, rest_k / np.maximum(rest_n, 1), overall)
    local, crossed = mine & ~cross, mine & cross
    local_n, cross_n = int(local.sum()), int(crossed.sum())
    local_k, cross_k = int(events[local].sum()), int(events[crossed].sum())
    local_n_band = np.bincount(band[local], minlength=n_bands).astype(float)
    local_k_band = np.bincount(band[local], weights=events[local].astype(float), minlength=n_bands)
    return {
        "local_n": local_n, "local_k": local_k, "cross_n": cross_n, "cross_k": cross_k,
        "local_rate": local_k / local_n if local_n else 0.0,
        "baseline": float(base[band[mine]].mean()) if mine.any() else overall,
        # Local against everyone elsewhere: the stratified test process drift runs, which allows
        # for the noise in the baseline too (a binomial against it would not).
        "local_p": cmh_test(
            np.stack([np.stack([local_k_band, local_n_band - local_k_band], -1),
                      np.stack([rest_k, rest_n - rest_k], -1)], axis=1),
            alternative="greater",
        ).p_value if local_n else 1.0,
        "cross_p": _more(band, events, crossed, rest),
        "gap_p": _fewer(band[mine], events[mine], cross[mine], base),
    }  # fmt: skip


def _logit(rate: float) -> float:
    rate = min(max(rate, 1e-6), 1 - 1e-6)
    return math.log(rate / (1 - rate))


def _fewer(band: np.ndarray, events: np.ndarray, cross: np.ndarray, base: np.ndarray) -> float:
    """One-sided exact conditional p-value that the cross reviewers of one segment value overturn
    less often than its local reviewers in the same score bands: P(T <= t) for
    T = sum_b w_b X_b, X_b the cross overturns in band b, whose law given the band's margins is
    hypergeometric when both pools share the band's rate (a changed rule: both see it).

    The weights are the Neyman–Pearson ones for "cross reviewers like elsewhere" against "like
    this value's reviewers": the log odds ratio of the band's overturn rate here (a margin) over
    the baseline elsewhere (other values' cases), on a grid of WEIGHT_GRID steps; a band with no
    excess weighs nothing. Fixed by the margins and other values' cases, they leave the test
    exact, and they make it far less discrete than the plain count (Birch's test, all weights 1),
    which with two or three expected overturns cannot use most of its level."""
    bands: list[tuple[float, int, int, int, int]] = []
    for b in range(len(base)):
        here = band == b
        total, drawn, k = int(here.sum()), int((here & cross).sum()), int(events[here].sum())
        weight = _logit(k / total) - _logit(float(base[b])) if total else 0.0
        if drawn and k and weight > 0:
            bands.append((weight, total, drawn, k, int(events[here & cross].sum())))
    if not bands:
        return 1.0
    top = max(w for w, *_ in bands)
    tables = [(max(1, round(WEIGHT_GRID * w / top)), total, k, drawn) for w, total, drawn, k, _ in bands]
    observed = sum(t[0] * seen for t, (*_, seen) in zip(tables, bands, strict=True))
    return float(min(1.0, _band_law(tables)[: observed + 1].sum()))


def _more(band: np.ndarray, events: np.ndarray, mine: np.ndarray, rest: np.ndarray) -> float:
    """One-sided exact p-value that the `mine` cases overturn more often than the `rest` in the
    same score bands: P(T >= t) for T = sum_b X_b, X_b the overturns among band b's `mine` cases,
    hypergeometric given the band's margins (Birch's exact test). A binomial against the rest's
    rate would take that rate as known: with a few dozen audits elsewhere and none overturned it
    is 0%, and one cross overturn read "model wrong there" (seen in a newcomer run). A band the
    rest never reached carries no evidence either way."""
    tables, observed = [], 0
    for b in np.unique(band[mine]):
        here, there = mine & (band == b), rest & (band == b)
        drawn, seen = int(here.sum()), int(events[here].sum())
        tables.append((1, drawn + int(there.sum()), seen + int(events[there].sum()), drawn))
        observed += seen
    return float(min(1.0, _band_law(tables)[observed:].sum()))


def _band_law(tables: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """The law of sum_b step_b X_b over score bands, X_b the events among band b's `drawn` cases
    given its margins (`total` cases, `k` events): hypergeometric, so the sum's law is their
    convolution, each spread on its integer step (index i: the sum equals i)."""
    law = np.ones(1)
    for step, total, k, drawn in tables:
        support = np.arange(0, min(drawn, k) + 1)
        spread = np.zeros(step * (len(support) - 1) + 1)
        spread[::step] = hypergeom.pmf(support, total, k, drawn)
        law = np.convolve(law, spread)
    return law


def more_cross_audits(local_rate: float, baseline: float, have: int, level: float) -> int:
    """Cross audits in a segment value that tell "cross reviewers overturn like the local ones"
    from "like reviewers elsewhere" with `DECIDING_POWER`, one-sided at `level` (the one-sample
    arcsine power equation, statsmodels), minus those already there (at least one).

    When local reviewers do not stand out, the alternative planned for is twice the baseline."""
    base = min(max(baseline, 1e-3), 0.99)
    alt = min(max(local_rate, 2 * base), 0.999)
    effect = abs(float(proportion_effectsize(alt, base)))
    # statsmodels' NormalIndPower with ratio 0 is this one-sample equation, but its root finder
    # can fail to converge at strict levels and return NaN (seen in a newcomer monitor run); the
    # equation has a closed form, so it is solved directly.
    n = float(((norm.isf(level) + norm.ppf(DECIDING_POWER)) / max(effect, 1e-9)) ** 2)
    return max(1, math.ceil(n) - have)


def _sentence(f: PracticeFinding) -> str:
    where = f"{f.field} {f.value}"
    local = f"local reviewers overturn {_pct(f.local.rate)} of {f.local.n} audited ({_ci(f.local)})"
    cross = f"cross reviewers {_pct(f.cross.rate)} of {f.cross.n} ({_ci(f.cross)})"
    base = f"{_pct(f.baseline_rate)} elsewhere in the same score bands"
    if f.reading == RULE:
        return f"{where}: model wrong there — {cross} vs {base}; {local}: retrain"
    if f.reading == PRACTICE:
        return f"{where}: review practice — {local} but {cross} vs {base}: talk to that team"
    more = f"{f.more_cross_audits} more cross audits in {where} would decide it"
    return f"{where}: investigate — {local}, {cross} vs {base}; the audits cannot tell yet: {more}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _ci(p: Proportion) -> str:
    return f"95% CI {_pct(p.low)}–{_pct(p.high)}"
