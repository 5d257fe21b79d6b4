from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from keel.models.calibration import TemperatureScaler, softmax
from keel.models.thresholds import ThresholdRule
from keel.training.risk_control import (
    NEVER_DECIDE,
    Start,
    abstention_record,
    clopper_pearson_upper,
    fallback_test,
    select_segment_thresholds,
    select_threshold,
)


@pytest.mark.parametrize(("k", "n"), [(0, 150), (3, 400), (20, 1000)])
def test_clopper_pearson_upper_is_the_exact_binomial_bound(k: int, n: int) -> None:
    ucb = clopper_pearson_upper(k, n, 0.05)
    # At the bound, seeing k or fewer errors has probability exactly delta.
    assert binom.cdf(k, n, ucb) == pytest.approx(0.05, rel=1e-6)
    assert clopper_pearson_upper(0, 0, 0.05) == 1.0


def test_threshold_certifies_alpha_and_prefers_coverage() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    conf = rng.uniform(0.3, 1.0, n)
    correct = rng.random(n) < conf  # error rate 1 - conf: calibrated confidences
    order = rng.uniform(0.3, 1.0, n)
    rc = select_threshold(conf, correct, alpha=0.05, delta=0.05, order_confidence=order)
    decided = conf >= rc.threshold
    assert rc.decided == decided.sum() and rc.errors == (~correct[decided]).sum()
    assert rc.upper_bound <= 0.05
    # The true selective error at t is (1 - t) / 2 for this construction; certified with margin.
    assert (1 - rc.threshold) / 2 <= 0.05
    assert 0.05 < rc.coverage < 0.15  # near the ideal 0.1/0.7 = 14%, minus the price of certainty


def test_all_wrong_model_never_decides() -> None:
    conf = np.linspace(0.5, 1.0, 2000)
    rc = select_threshold(conf, np.zeros(2000, bool), 0.02, 0.05, order_confidence=conf)
    assert rc.threshold == NEVER_DECIDE and rc.coverage == 0.0


def test_temperature_scaling_recovers_the_generating_temperature() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(20_000, 4))
    y = np.array([rng.choice(4, p=p) for p in softmax(logits, 1.0)])
    scaler = TemperatureScaler().fit(logits * 2.5, y)  # over-confident scores by a factor 2.5
    assert scaler.temperature_ == pytest.approx(2.5, rel=0.05)
    np.testing.assert_allclose(scaler.predict_proba(logits * 2.5).sum(axis=1), 1.0)


def test_fallback_hands_a_rejected_level_on_and_keeps_a_failed_start_going() -> None:
    delta, alpha = 0.05, 0.02
    # p-values P(Bin(n, alpha) <= k): 300 without an error 0.0023 (passes at 0.2 delta = 0.01);
    # 600 with 6 errors 0.044 (passes at delta, not at 0.8 delta); 600 with 5 errors 0.0195.
    n = np.array([300, 600, 700, 800])
    k = np.array([0, 6, 30, 40])  # candidates 2 and 3 fail at any level
    first, second = Start(0, 0.2, "a"), Start(1, 0.8, "b")
    found, level, tested = fallback_test(n, k, [first, second], alpha, delta)
    assert (found, tested) == (1, 3) and level == pytest.approx(delta)  # 0 handed its 0.2 delta on
    # The first start fails: the second still runs, at its own share only.
    found, level, _ = fallback_test(np.array([300, 600]), np.array([9, 5]), [first, second], alpha, delta)
    assert found == 1 and level == pytest.approx(0.8 * delta)
    # 600 with 6 errors fails at the second start's own share: nothing is certified.
    found, _, _ = fallback_test(np.array([300, 600]), np.array([9, 6]), [first, second], alpha, delta)
    assert found is None


def test_family_wise_error_at_most_delta_where_no_threshold_is_good_enough() -> None:
    """Every candidate's selective error is exactly alpha (the boundary of the null hypotheses),
    so any certified threshold is a false certification: at most delta of draws may certify."""
    alpha, delta, draws = 0.05, 0.1, 400
    rng = np.random.default_rng(11)
    certified = 0
    for _ in range(draws):
        conf, order = rng.uniform(0.3, 1.0, 1500), rng.uniform(0.3, 1.0, 1500)
        correct, order_correct = rng.random(1500) >= alpha, rng.random(1500) >= alpha
        rc = select_threshold(conf, correct, alpha, delta, order, 100, order_correct=order_correct)
        certified += rc.certified
    assert certified <= binom.ppf(0.999, draws, delta), f"{certified}/{draws} false certifications"
    assert certified >= 1  # not vacuous: the procedure does reject at this level now and then


def test_a_failed_lowest_bound_start_does_not_end_at_zero_coverage() -> None:
    """The risk split has 25 errors among its cases above the lowest-bound start (too many for
    its test) and none between the two starts, so the more liberal start certifies."""
    rng = np.random.default_rng(5)
    n = 4000
    order = rng.uniform(0.3, 1.0, n)
    order_correct = rng.random(n) >= np.where(order < 0.6, 0.5, 0.004)
    conf = rng.uniform(0.3, 1.0, n)
    nodes = select_threshold(conf, conf > 0, 0.02, 0.05, order, order_correct=order_correct).start_nodes
    by_rule = {s["rule"]: s["threshold"] for s in nodes}
    lowest, likely = by_rule["lowest bound"], by_rule["expected coverage"]
    assert likely < lowest
    correct = conf >= likely
    correct[np.flatnonzero(conf >= lowest)[:25]] = False
    single = select_threshold(
        conf, correct, 0.02, 0.05, order, order_correct=order_correct, primary_share=1.0
    )
    assert single.threshold == NEVER_DECIDE  # one fixed sequence from that start gives up here
    fallback = select_threshold(conf, correct, 0.02, 0.05, order, order_correct=order_correct)
    assert fallback.start_nodes == nodes  # the starts come from the ordering split alone
    assert fallback.certified and fallback.upper_bound <= 0.02 and fallback.threshold <= likely
    assert fallback.test_delta == pytest.approx(0.05 * 0.2)  # the expected-coverage start's own share
    decided = conf >= fallback.threshold
    assert fallback.errors == int((~correct[decided]).sum()) == 25 and fallback.coverage > 0.5


def _segmented(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = np.array(["A"] * 3000 + ["B"] * 3000 + ["C"] * 100)
    conf = rng.uniform(0.5, 1.0, len(values))
    # B errs twice as often as A at the same confidence.
    error_rate = np.where(values == "B", (1 - conf) / 2, (1 - conf) / 4)
    return conf, rng.random(len(values)) >= error_rate, values


def test_segment_control_holds_each_segment_and_falls_back_for_small_ones() -> None:
    conf, correct, values = _segmented(1)
    order, order_correct, order_values = _segmented(2)
    control = select_segment_thresholds(
        conf, correct, values.tolist(), order, order_correct, order_values.tolist(),
        field_name="region", alpha=0.05, delta=0.05, min_cases=400, known_values=["A", "B", "C", "D"],
    )  # fmt: skip
    assert set(control.segments) == {"A", "B"} and control.fallback_values == ["C", "D"]
    a, b = control.segments["A"], control.segments["B"]
    # delta split over overall + 2 segments, then over the starts of each search
    assert a.delta == pytest.approx(0.05 / 3) and a.test_delta <= 0.05 / 3 + 1e-12
    assert a.upper_bound <= 0.05 and b.upper_bound <= 0.05
    # True selective errors at t: A (1-t)/8, B (1-t)/4; both certified with margin, B stricter.
    assert (1 - a.threshold) / 8 <= 0.05 and (1 - b.threshold) / 4 <= 0.05
    assert a.coverage > 0.5 and b.coverage > 0.2
    assert b.threshold > a.threshold

    record = abstention_record(control.overall, control)
    rule = ThresholdRule.from_abstention(record)
    t, applied = rule.applies(["A", "B", "C", "Z"], 4)
    assert t.tolist() == [a.threshold, b.threshold, NEVER_DECIDE, NEVER_DECIDE]
    assert applied == ["region=A", "region=B", "region=C (fallback: review)", "region=Z (fallback: review)"]
    overall = ThresholdRule.from_abstention(
        {**record, "segment_control": {**record["segment_control"], "fallback": "overall"}}
    )
    assert overall.applies(["C"], 1)[0].tolist() == [control.overall.threshold]
    assert ThresholdRule.from_abstention(control.overall.to_dict()).applies(["A"], 1)[1] == ["overall"]
