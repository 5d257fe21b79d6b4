from __future__ import annotations

import numpy as np
import pytest
from keel.models.calibration import TemperatureScaler, softmax
from keel.models.thresholds import ThresholdRule
from keel.training.risk_control import (
    NEVER_DECIDE,
    abstention_record,
    clopper_pearson_upper,
    select_segment_thresholds,
    select_threshold,
)
from scipy.stats import binom


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


def _stumbling_at_the_easiest_start() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ordering split: no errors above 0.6, so its easiest start is right at 0.6. Risk split: a
    cluster of errors just above 0.6 makes that first test fail, while everything above 0.63 is
    clean and certifiable."""
    rng = np.random.default_rng(5)
    n = 4000
    order = rng.uniform(0.3, 1.0, n)
    order_correct = order >= 0.6
    conf = rng.uniform(0.3, 1.0, n)
    correct = ~((conf < 0.6) | ((conf < 0.62) & (rng.random(n) < 0.7)))
    return conf, correct, order, order_correct


def test_one_failed_first_test_does_not_end_at_zero_coverage() -> None:
    conf, correct, order, order_correct = _stumbling_at_the_easiest_start()
    single = select_threshold(conf, correct, 0.02, 0.05, order, order_correct=order_correct, starts=1)
    assert single.threshold == NEVER_DECIDE  # the former single-start search gives up here
    multi = select_threshold(conf, correct, 0.02, 0.05, order, order_correct=order_correct, starts=3)
    assert multi.starts == 3 and multi.test_delta == pytest.approx(0.05 / 3)
    assert multi.certified and multi.upper_bound <= 0.02
    assert 0.6 < multi.threshold < 0.7 and multi.coverage > 0.4
    decided = conf >= multi.threshold
    assert multi.errors == int((~correct[decided]).sum())


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
    assert a.delta == pytest.approx(0.05 / 3) and a.test_delta == pytest.approx(0.05 / 3 / a.starts)
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
