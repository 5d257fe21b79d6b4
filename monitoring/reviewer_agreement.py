"""Reviewer consistency: how often two reviewers of the same case reach the same outcome, per segment.

Overrides compare reviewers with the model; this compares reviewers with each other, so a drift in
how reviewers decide (a team that stopped applying the same criteria) is visible apart from the
model's errors. A case reaches two reviewers in three ways, read from the decision log:

- `cross_review`: one decision with a local and a cross reviewer's word (an audit copy reviewed
  outside the case's segment, beside the routed review); the local reviewer is the first rater;
- `second_review`: one decision with words from two reviewers (actors) of the same pool;
- `duplicate_case`: two decisions with the same `case_id` (a case submitted again), each reviewed
  by another reviewer.

Each case gives one pair (its first two reviewers in time, local before cross), so pairs are
independent. Agreement is Cohen's kappa, chance-corrected against each rater's own outcome mix,
with the Fleiss–Cohen–Everitt (1969) large-sample variance, which is what statsmodels'
`cohens_kappa` computes (the tests compare them). Its interval is not statsmodels' Wald interval:
reviewers agree most of the time, and near kappa = 1 the Wald interval collapses (to [1, 1] when
a segment's pairs all agree) and misses the true kappa in a third of samples of 100 pairs at
kappa 0.97. 1 − kappa is a scaled disagreement rate, so it gets a Wilson interval at the effective
sample size of its variance (n* = D(1 − D) / var for D = 1 − kappa; n·(1 − p_e) when no pair
disagrees), the device the audit estimates use; the simulation in tests/unit checks its coverage.
Below kappa 0 (reviewers agree less than chance) the Wald interval is used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from keel.monitoring.stats import holm, wilson_at

__all__ = [
    "SOURCES",
    "WORD_COLUMNS",
    "AgreementReport",
    "Kappa",
    "agreement_report",
    "cohens_kappa",
    "describe",
    "kappa_from_table",
    "review_pairs",
]

SOURCES = ("cross_review", "second_review", "duplicate_case")
WORD_COLUMNS = ("case", "decision_id", "reviewed_at", "actor", "final_outcome", "reviewer_pool")
"""One reviewer's latest word on one decision (keel.monitoring.log_reader.LogReader.review_words),
followed by one column per segment field."""
MIN_PAIRS = 50
"""Pairs a segment value needs before it is compared with the rest (the interval's coverage was
checked from 50 pairs; below, it is shown but not compared)."""


@dataclass(frozen=True)
class Kappa:
    """Cohen's kappa between the first and second reviewers of `n` cases."""

    n: int
    agreement: float | None
    """Share of pairs with the same outcome."""
    chance: float | None
    """Agreement expected by chance from the two raters' outcome mixes."""
    kappa: float | None
    """None when there is no pair, or both raters gave one same outcome throughout (undefined)."""
    se: float | None
    low: float
    high: float
    level: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def kappa_from_table(table: np.ndarray | Sequence[Sequence[float]], level: float = 0.95) -> Kappa:
    """Kappa of a square table of counts (rows: first rater's outcome, columns: second's)."""
    t = np.asarray(table, dtype="float64")
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise ValueError("need a square table of counts")
    n = float(t.sum())
    if n <= 0:
        return Kappa(0, None, None, None, None, -1.0, 1.0, level)
    p = t / n
    row, col = p.sum(axis=1), p.sum(axis=0)
    agree, chance = float(np.trace(p)), float((row * col).sum())
    if chance >= 1.0 - 1e-12:
        return Kappa(int(n), agree, chance, None, None, -1.0, 1.0, level)
    kappa = (agree - chance) / (1.0 - chance)
    # Fleiss, Cohen & Everitt (1969), term for term as statsmodels' cohens_kappa writes it.
    a = float((np.diag(p) * (1.0 - (row + col) * (1.0 - kappa)) ** 2).sum())
    off = p * (col[:, None] + row) ** 2
    np.fill_diagonal(off, 0.0)
    b = (1.0 - kappa) ** 2 * float(off.sum())
    c = (kappa - chance * (1.0 - kappa)) ** 2
    var = max((a + b - c) / (1.0 - chance) ** 2 / n, 0.0)
    low, high = _interval(kappa, var, n * (1.0 - chance), level)
    return Kappa(int(n), agree, chance, kappa, math.sqrt(var), low, high, level)


def _interval(kappa: float, var: float, n_clear: float, level: float) -> tuple[float, float]:
    """Wilson on D = 1 - kappa at its effective sample size; Wald (clipped) below kappa 0."""
    d = 1.0 - kappa
    if d <= 1e-12:
        n_eff = n_clear
    elif d < 1.0 and var > 0:
        n_eff = d * (1.0 - d) / var
    else:
        z = float(norm.ppf(0.5 + level / 2))
        half = z * math.sqrt(var)
        return max(-1.0, kappa - half), min(1.0, kappa + half)
    d_low, d_high = wilson_at(max(d, 0.0), n_eff, level)
    return max(-1.0, 1.0 - d_high), min(1.0, 1.0 - d_low)


def cohens_kappa(first: Sequence[Any], second: Sequence[Any], level: float = 0.95) -> Kappa:
    """Kappa between two raters' outcomes on the same cases (any hashable labels)."""
    a, b = np.asarray(list(first), dtype=object), np.asarray(list(second), dtype=object)
    if len(a) != len(b):
        raise ValueError("need one second outcome per first outcome")
    codes, labels = pd.factorize(np.concatenate([a, b]).astype(str))
    return _coded_kappa(codes[: len(a)], codes[len(a) :], len(labels), level)


def _coded_kappa(first: np.ndarray, second: np.ndarray, k: int, level: float) -> Kappa:
    """Kappa of outcomes already coded 0..k-1 (the table by bincount: one pass, no pandas)."""
    table = np.bincount(first * k + second, minlength=k * k).reshape(k, k) if k else np.zeros((0, 0))
    return kappa_from_table(table, level)


def review_pairs(words: pd.DataFrame, segments: Sequence[str] = ()) -> pd.DataFrame:
    """One pair per case reviewed by two people: columns case, source, first, second,
    first_actor, second_actor, and the segment fields of the case's first reviewed decision."""
    columns = ["case", "source", "first", "second", "first_actor", "second_actor", *segments]
    if words.empty:
        return pd.DataFrame(columns=columns)
    # Integer codes, sorted once: string sorts and groupbys over a big window cost seconds.
    codes = {c: pd.factorize(words[c])[0] for c in ("case", "decision_id", "actor")}
    when = pd.factorize(words["reviewed_at"], sort=True)[0]
    order = np.lexsort((codes["decision_id"], when, codes["case"]))
    ordered = words.iloc[order].assign(
        _case=codes["case"][order], _decision=codes["decision_id"][order], _actor=codes["actor"][order]
    )
    head = ordered.drop_duplicates("_case")[["_case", *segments]]
    # A reviewer's latest word on the case counts (a revision replaces, as for overrides); the
    # rows keep their time order, so "first" below means first in time.
    latest = ordered.drop_duplicates(["_case", "_actor"], keep="last")
    latest = latest[latest.groupby("_case", sort=False)["_actor"].transform("size").to_numpy() >= 2]
    cross = pd.Series(latest["reviewer_pool"].astype(object).to_numpy() == "cross", index=latest.index)
    # Local against cross on one decision, the audit design's own comparison, where a case has it.
    keys = [latest["_case"], latest["_decision"]]
    both = cross.groupby(keys, sort=False).transform("any") & (~cross).groupby(keys, sort=False).transform(
        "any"
    )
    audited = latest[both.to_numpy()]
    firsts = audited.groupby("_case", sort=False)["_decision"].transform("first")
    audited = audited[audited["_decision"].to_numpy() == firsts.to_numpy()]
    local_first = audited[~cross[audited.index].to_numpy()].groupby("_case", sort=False).head(1)
    cross_first = audited[cross[audited.index].to_numpy()].groupby("_case", sort=False).head(1)
    # Otherwise the case's first two reviewers in time.
    rest = latest[~latest["_case"].isin(local_first["_case"])]
    rank = rest.groupby("_case", sort=False).cumcount().to_numpy()
    parts = [
        _joined(local_first, cross_first, "cross_review"),
        _joined(rest[rank == 0], rest[rank == 1], None),
    ]
    pairs = pd.concat(parts, ignore_index=True).merge(head, on="_case", how="left")
    return pairs[columns]


def _joined(one: pd.DataFrame, two: pd.DataFrame, source: str | None) -> pd.DataFrame:
    """First and second raters' words side by side by case; `source` None: by whether the two
    words are on one decision (second review) or two (a duplicate case)."""
    take = ["_case", "case", "_decision", "actor", "final_outcome"]
    both = one[take].merge(two[take].drop(columns="case"), on="_case", suffixes=("_1", "_2"))
    same = both["_decision_1"].to_numpy() == both["_decision_2"].to_numpy()
    return pd.DataFrame(
        {
            "_case": both["_case"],
            "case": both["case"],
            "source": source or np.where(same, "second_review", "duplicate_case"),
            "first": both["final_outcome_1"].astype(str),
            "second": both["final_outcome_2"].astype(str),
            "first_actor": both["actor_1"].astype(str),
            "second_actor": both["actor_2"].astype(str),
        }
    )


@dataclass
class AgreementReport:
    n_pairs: int
    sources: dict[str, int]
    overall: Kappa
    by_source: dict[str, Kappa]
    by_segment: dict[str, list[dict[str, Any]]]
    """Per segment field: [{value, kappa (Kappa dict), rest (Kappa dict of the other values' pairs),
    p_lower, p_adjusted (Holm), agrees_less, explained_by}]: `agrees_less` says the value's kappa is
    below the rest's at the family's level; `explained_by` names the values of other fields whose
    pairs, set aside, leave no difference (the value's low kappa is theirs)."""
    level: float
    sentences: list[str] = dc_field(default_factory=list)
    method: str = (
        "Cohen's kappa between the first and second reviewer of each case reviewed twice (local "
        "before cross), Fleiss-Cohen-Everitt variance, Wilson interval on 1 - kappa at its "
        "effective sample size; a value agrees less by a one-sided z test against the other values, "
        "Holm over the values compared, and again without the pairs of values of other fields "
        "already read as agreeing less"
    )

    @property
    def lower(self) -> list[tuple[str, str]]:
        """(field, value) whose reviewers agree less than the rest's."""
        return [(f, v["value"]) for f, values in self.by_segment.items() for v in values if v["agrees_less"]]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["lower"] = [{"field": f, "value": v} for f, v in self.lower]
        return out


def agreement_report(
    pairs: pd.DataFrame, segments: Sequence[str], level: float = 0.95, min_pairs: int = MIN_PAIRS
) -> AgreementReport:
    """Kappa overall, per source and per segment value, each value against the rest's pairs.

    A value agrees less when its kappa is below the rest's by a one-sided z test on the two
    kappas' standard errors, Holm-adjusted over every value compared in the window at 1 - `level`,
    and still so once the pairs of values already read as agreeing less in other fields are set
    aside (strongest first). Without that last step a product line that happens to hold more of an
    erratic region's pairs reads as agreeing less too: the region's effect, counted twice."""
    codes, labels = pd.factorize(np.concatenate([pairs["first"].astype(str), pairs["second"].astype(str)]))
    first, second, k = codes[: len(pairs)], codes[len(pairs) :], len(labels)
    sources = pairs["source"].astype(str).to_numpy()
    by_source = {
        s: _coded_kappa(first[sources == s], second[sources == s], k, level)
        for s in SOURCES
        if (sources == s).any()
    }

    def compare(mine: np.ndarray, others: np.ndarray) -> tuple[Kappa, Kappa, float | None]:
        here = _coded_kappa(first[mine], second[mine], k, level)
        rest = _coded_kappa(first[others], second[others], k, level)
        return here, rest, _lower_p(here, rest, min_pairs)

    by_segment: dict[str, list[dict[str, Any]]] = {}
    masks: dict[tuple[str, str], np.ndarray] = {}
    knowns: dict[str, np.ndarray] = {}
    for name in segments:
        if name not in pairs:
            continue
        values = pairs[name].astype(object)
        known = knowns[name] = values.notna().to_numpy()
        text = values.astype(str).to_numpy()
        rows = []
        for value in sorted(set(text[known])):
            mine = masks[name, value] = known & (text == value)
            here, rest, p = compare(mine, known & ~mine)
            rows.append({
                "value": value, "kappa": here.to_dict(), "rest": rest.to_dict(), "p_lower": p,
                "p_adjusted": None, "agrees_less": False, "explained_by": [],
            })  # fmt: skip
        by_segment[name] = rows
    sentences = _read_lower(by_segment, masks, knowns, compare, 1.0 - level)
    return AgreementReport(
        len(pairs), {s: int((sources == s).sum()) for s in SOURCES}, _coded_kappa(first, second, k, level),
        by_source, by_segment, level, sentences,
    )  # fmt: skip


def _lower_p(here: Kappa, rest: Kappa, min_pairs: int) -> float | None:
    """One-sided p of "here agrees less than the rest" (z on the difference of the two kappas,
    their pairs being disjoint); None when either side has too few pairs or no kappa."""
    if here.n < min_pairs or rest.n < min_pairs or here.kappa is None or rest.kappa is None:
        return None
    gap, se = rest.kappa - here.kappa, math.hypot(here.se or 0.0, rest.se or 0.0)
    if se <= 0.0:
        return 0.0 if gap > 0 else 1.0
    return float(norm.sf(gap / se))


Compare = Callable[[np.ndarray, np.ndarray], tuple[Kappa, Kappa, float | None]]


def _read_lower(
    by_segment: dict[str, list[dict[str, Any]]],
    masks: dict[tuple[str, str], np.ndarray],
    knowns: dict[str, np.ndarray],
    compare: Compare,
    alpha: float,
) -> list[str]:
    """Holm over the compared values, then each rejected value (smallest p first) tested again
    without the pairs of values kept before it in other fields; sets the rows' verdicts in place."""
    tested = [(name, row) for name, rows in by_segment.items() for row in rows if row["p_lower"] is not None]
    adjusted = holm([row["p_lower"] for _, row in tested])
    for (_, row), adj in zip(tested, adjusted, strict=True):
        row["p_adjusted"] = adj
    order = sorted(range(len(tested)), key=lambda i: tested[i][1]["p_lower"])
    kept: list[tuple[str, str]] = []
    sentences: list[str] = []
    for rank, i in enumerate(order):
        name, row = tested[i]
        if row["p_adjusted"] > alpha:
            break
        mine, known = masks[name, row["value"]], knowns[name]
        before = [(f, v) for f, v in kept if f != name]
        if before:
            aside = np.logical_or.reduce([masks[f, v] for f, v in before])
            here, rest, p = compare(mine & ~aside, known & ~mine & ~aside)
            if p is None or p * (len(tested) - rank) > alpha:
                row["explained_by"] = [f"{f} {v}" for f, v in before if (masks[f, v] & mine).any()]
                continue
        else:
            here, rest = Kappa(**row["kappa"]), Kappa(**row["rest"])
        row["agrees_less"] = True
        kept.append((name, row["value"]))
        sentences.append(_sentence(name, row["value"], here, rest, [f"{f} {v}" for f, v in before]))
    return sentences


def describe(k: Kappa) -> str:
    """`kappa 0.62 (95% CI 0.50-0.71, 140 pairs, 81% agree)`, or why there is none."""
    if k.kappa is None:
        return f"kappa undefined ({k.n} pairs)" if k.n else "no case reviewed twice"
    return (
        f"kappa {k.kappa:.2f} ({k.level:.0%} CI {k.low:.2f}-{k.high:.2f}, {k.n} pairs, "
        f"{(k.agreement or 0.0):.0%} agree)"
    )


def _sentence(name: str, value: str, here: Kappa, rest: Kappa, aside: Sequence[str]) -> str:
    without = f" (without the pairs of {', '.join(aside)})" if aside else ""
    return (
        f"{name} {value}: reviewers of the same case agree less than elsewhere{without} — "
        f"{describe(here)} vs {describe(rest)} for the other values: ask that team's lead how their "
        "reviewers decide"
    )
