"""Reviewer agreement: Cohen's kappa against statsmodels, its interval's coverage in simulation,
and how cases reviewed twice become pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom
from statsmodels.stats.inter_rater import cohens_kappa as sm_kappa

from bench.reviewer_agreement import SEGMENTS, window
from keel.monitoring.reviewer_agreement import (
    MIN_PAIRS,
    WORD_COLUMNS,
    agreement_report,
    cohens_kappa,
    kappa_from_table,
    review_pairs,
)

LEVEL = 0.95


def _table(classes: int, agree: float, skew: float) -> np.ndarray:
    """Cell probabilities: rater 1 draws a class from a skewed mix; rater 2 gives the same class
    with probability `agree`, else an independent draw from the same mix. True kappa = agree."""
    mix = np.array([skew**i for i in range(classes)])
    mix /= mix.sum()
    return np.diag(mix) * agree + (1 - agree) * np.outer(mix, mix)


def _true_kappa(p: np.ndarray) -> float:
    chance = float((p.sum(axis=1) * p.sum(axis=0)).sum())
    return (float(np.trace(p)) - chance) / (1 - chance)


def test_kappa_and_its_standard_error_match_statsmodels() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        k = int(rng.integers(2, 7))
        table = rng.multinomial(
            int(rng.integers(20, 2000)), _table(k, rng.uniform(0, 1), rng.uniform(0.3, 1)).ravel()
        )
        table = table.reshape(k, k)
        ours = kappa_from_table(table, LEVEL)
        ref = sm_kappa(table, return_results=True)
        if ours.kappa is None:
            continue
        assert ours.kappa == pytest.approx(float(ref.kappa), abs=1e-12)
        assert ours.se == pytest.approx(float(ref.std_kappa), abs=1e-12)
        assert ours.agreement == pytest.approx(float(np.trace(table) / table.sum()), abs=1e-12)
        assert ours.low <= ours.kappa <= ours.high
        # Away from the edges the interval is about statsmodels' Wald interval.
        if table.sum() >= 1000 and 0.2 < ours.kappa < 0.8:
            assert ours.low == pytest.approx(float(ref.kappa_low), abs=0.02)
            assert ours.high == pytest.approx(float(ref.kappa_upp), abs=0.02)


def test_labels_give_the_table_kappa() -> None:
    first = ["a", "a", "b", "c", "b", "a", "c", "c", "a", "b"] * 7
    second = ["a", "b", "b", "c", "b", "a", "a", "c", "a", "c"] * 7
    labels = ["a", "b", "c"]
    table = np.zeros((3, 3))
    for x, y in zip(first, second, strict=True):
        table[labels.index(x), labels.index(y)] += 1
    assert cohens_kappa(first, second).kappa == pytest.approx(float(sm_kappa(table).kappa), abs=1e-12)


def test_edges_all_agree_and_one_outcome_throughout() -> None:
    agree = kappa_from_table(np.diag([40, 30, 30]), LEVEL)
    assert agree.kappa == pytest.approx(1.0)
    assert agree.high == 1.0 and 0.9 < agree.low < 1.0  # not the Wald interval's [1, 1]
    assert kappa_from_table([[50, 0], [0, 0]]).kappa is None  # chance agreement is 1: undefined
    assert kappa_from_table(np.zeros((2, 2))).n == 0


SETTINGS = [
    (classes, skew, agree, n)
    for classes, skew, agrees in [
        (2, 0.3, (0.7, 0.9, 0.97)),
        (4, 0.5, (0.3, 0.7, 0.9, 0.97, 0.99)),
        (6, 0.6, (0.3, 0.7, 0.9, 0.97, 0.99)),
    ]
    for agree in agrees
    for n in (MIN_PAIRS, 200)
]


@pytest.mark.parametrize(("classes", "skew", "agree", "n"), SETTINGS)
def test_interval_covers_the_true_kappa_at_its_level(classes: int, skew: float, agree: float, n: int) -> None:
    """At most binom.ppf(0.999, runs, 5%) misses of the true kappa per setting. Not covered here, and
    documented: two classes at kappa 0.99 (misses 7.6% at 50 pairs) and below 50 pairs."""
    runs = 600
    p = _table(classes, agree, skew)
    truth = _true_kappa(p)
    rng = np.random.default_rng([classes, int(agree * 100), n])
    misses = defined = 0
    for counts in rng.multinomial(n, p.ravel(), size=runs):
        k = kappa_from_table(counts.reshape(classes, classes), LEVEL)
        if k.kappa is None:
            continue
        defined += 1
        misses += not (k.low <= truth <= k.high)
    assert defined >= runs - 5
    assert misses <= binom.ppf(0.999, defined, 1 - LEVEL)


def _words(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[*WORD_COLUMNS, "region"])


def test_cases_reviewed_twice_become_one_pair_each() -> None:
    words = _words([
        # One decision, local then cross (audit copy): local is the first rater whatever the order.
        ("c1", "d1", "2026-01-01T10:00", "cross-a", "x", "cross", "EMEA"),
        ("c1", "d1", "2026-01-01T09:00", "local-a", "y", "local", "EMEA"),
        # The same case submitted twice, each decision reviewed by another person.
        ("c2", "d2", "2026-01-01T09:00", "rev-1", "x", None, "NA"),
        ("c2", "d3", "2026-01-02T09:00", "rev-2", "x", None, "NA"),
        # Revisions by one reviewer are not a second reviewer.
        ("c3", "d4", "2026-01-01T09:00", "rev-1", "x", None, "NA"),
        ("c3", "d5", "2026-01-01T11:00", "rev-1", "y", None, "NA"),
        # Two reviewers on one decision, same pool.
        ("c4", "d6", "2026-01-01T09:00", "rev-3", "y", "local", "APAC"),
        ("c4", "d6", "2026-01-01T12:00", "rev-4", "x", "local", "APAC"),
    ])  # fmt: skip
    pairs = review_pairs(words, ["region"]).set_index("case")
    assert sorted(pairs.index) == ["c1", "c2", "c4"]
    assert tuple(pairs.loc["c1", ["source", "first", "second", "first_actor"]]) == (
        "cross_review", "y", "x", "local-a",
    )  # fmt: skip
    assert tuple(pairs.loc["c2", ["source", "first", "second"]]) == ("duplicate_case", "x", "x")
    assert tuple(pairs.loc["c4", ["source", "first", "second"]]) == ("second_review", "y", "x")
    assert pairs.loc["c1", "region"] == "EMEA"


def test_a_segment_whose_reviewers_disagree_is_reported_apart() -> None:
    rng = np.random.default_rng(11)
    classes = np.array(["a", "b", "c", "d", "e"])
    rows = []
    for i in range(1200):
        region = ["NA", "EMEA", "APAC"][i % 3]
        first = classes[rng.integers(0, 5)]
        # EMEA's second reviewers pick another class 40% of the time, elsewhere 3%.
        slip = 0.4 if region == "EMEA" else 0.03
        second = classes[rng.integers(0, 5)] if rng.random() < slip else first
        rows.append({"case": f"c{i}", "source": "duplicate_case", "first": first, "second": str(second),
                     "first_actor": "r1", "second_actor": "r2", "region": region})  # fmt: skip
    report = agreement_report(pd.DataFrame(rows), ["region"], LEVEL)
    assert report.lower == [("region", "EMEA")]
    emea = next(v for v in report.by_segment["region"] if v["value"] == "EMEA")
    assert emea["kappa"]["high"] < emea["rest"]["low"]
    assert "EMEA" in report.sentences[0]
    assert report.sources["duplicate_case"] == 1200 and report.n_pairs == 1200
    assert report.to_dict()["lower"] == [{"field": "region", "value": "EMEA"}]


def test_only_the_erratic_region_is_read_at_the_familys_level() -> None:
    """Over many windows, a value outside EMEA (its entities are EMEA) is read as agreeing less in
    at most the 5% of windows the Holm family allows (bench.reviewer_agreement: 0 of 1,000; the
    old rule, two 95% intervals apart, read one in 4.0% of such windows and 6.8% of quiet ones)."""
    rng = np.random.default_rng(23)
    windows, false, found = 150, 0, 0
    for _ in range(windows):
        lower = agreement_report(window(rng, 450, 0.35), SEGMENTS, LEVEL).lower
        found += ("region", "EMEA") in lower
        false += any(not (v == "EMEA" or (f == "entity" and v.startswith("EMEA-"))) for f, v in lower)
    assert false <= binom.ppf(0.999, windows, 1 - LEVEL)
    assert found >= windows - binom.ppf(0.999, windows, 0.05)
    quiet = sum(bool(agreement_report(window(rng, 450, 0.02), SEGMENTS, LEVEL).lower) for _ in range(windows))
    assert quiet <= binom.ppf(0.999, windows, 1 - LEVEL)


def test_a_product_line_holding_more_of_the_erratic_regions_pairs_is_explained_by_it() -> None:
    """p1 holds three times the EMEA share of the other product lines: compared with the rest it
    agrees less, but not once EMEA's pairs are set aside, so the report names EMEA, not p1."""
    pairs = window(np.random.default_rng(5), 1600, 0.35, {"p1": 0.6, "p2": 0.2, "p3": 0.2, "p4": 0.2})
    report = agreement_report(pairs, SEGMENTS, LEVEL)
    p1 = next(v for v in report.by_segment["product_line"] if v["value"] == "p1")
    assert p1["p_adjusted"] <= 1 - LEVEL  # alone, p1 would be read
    assert not p1["agrees_less"] and p1["explained_by"] == ["region EMEA"]
    assert ("region", "EMEA") in report.lower
    assert all(f == "region" for f, _ in report.lower)  # EMEA's entities are EMEA's too
    assert not any("p1" in s for s in report.sentences)
