from __future__ import annotations

import numpy as np
import pytest
from keel.models.calibration import TemperatureScaler, softmax
from keel.training.risk_control import NEVER_DECIDE, clopper_pearson_upper, select_threshold
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
