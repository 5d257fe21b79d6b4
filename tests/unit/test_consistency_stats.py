"""The counterfactual audit's statistics against statsmodels/scipy, and their coverage in simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom
from statsmodels.stats.proportion import proportion_confint

from keel.models.consistency_report import DECISION, summarise
from keel.models.counterfactual import KINDS, Construction, Flips
from keel.models.proportions import clopper_pearson, lower_bound, proportion


@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_clopper_pearson_matches_statsmodels(level: float) -> None:
    rng = np.random.default_rng(7)
    n = rng.integers(1, 3000, 200)
    k = np.minimum(rng.integers(0, 50, 200), n)
    k[:5], n[:5] = 0, [1, 10, 100, 1000, 5]  # the edges: none and all
    k[5:10] = n[5:10]
    low, high = clopper_pearson(k, n, level)
    for i in range(len(n)):
        ref_low, ref_high = proportion_confint(int(k[i]), int(n[i]), alpha=1 - level, method="beta")
        assert low[i] == pytest.approx(ref_low, abs=1e-12)
        assert high[i] == pytest.approx(ref_high, abs=1e-12)
    p = proportion(int(k[20]), int(n[20]), level)
    assert (p.low, p.high) == (pytest.approx(low[20]), pytest.approx(high[20]))


def test_one_sided_lower_bound_is_the_beta_quantile() -> None:
    from scipy.stats import beta

    for k, n, conf in [(3, 200, 0.95), (40, 400, 0.99), (0, 50, 0.95), (50, 50, 0.9)]:
        expected = 0.0 if k == 0 else beta.ppf(1 - conf, k, n - k + 1)
        assert float(lower_bound(k, n, conf)) == pytest.approx(expected, abs=1e-12)
        two_sided = proportion_confint(k, n, alpha=2 * (1 - conf), method="beta")[0]
        assert float(lower_bound(k, n, conf)) == pytest.approx(two_sided, abs=1e-12)


def test_no_cases_gives_the_uninformative_interval() -> None:
    p = proportion(0, 0)
    assert (p.rate, p.low, p.high) == (0.0, 0.0, 1.0)


def _flips(rng: np.random.Generator, cases: int, alternatives: int, q: float) -> Flips:
    """Each case re-decided with `alternatives` other values; each re-decision changes the outcome
    with probability q, independently."""
    n = cases * alternatives
    changed = rng.random(n) < q
    table = pd.DataFrame(
        {
            "field": "region",
            "from": "NA",
            "to": np.tile([f"v{j}" for j in range(alternatives)], cases),
            "case": np.repeat([f"c{i}" for i in range(cases)], alternatives),
            "outcome": changed,
            "route": np.zeros(n, dtype=bool),
            "abstention": np.zeros(n, dtype=bool),
        }
    )
    shap = pd.DataFrame(columns=["field", "from", "to", "feature", "abs_change", "n"])
    return Flips("1", cases, table, shap)


def test_flip_rate_intervals_cover_the_true_rate_at_their_level() -> None:
    """Per case "decided differently with some other value" has rate 1-(1-q)^3 here; the field's
    95% interval and each value pair's (rate q) must miss at most as often as 5% allows
    (binom.ppf(0.999, ...) misses), and the gate's one-sided 95% lower bound lies above the true
    rate at most as often as 5% allows."""
    rng = np.random.default_rng(11)
    runs, q, alternatives, level = 300, 0.03, 3, 0.95
    truth = 1 - (1 - q) ** alternatives
    field_miss = pair_miss = above = pairs = 0
    construction = [Construction("region", True, ("the model reads region",), (), 0.5)]
    for _ in range(runs):
        report = summarise("m", "test_split", "", [_flips(rng, 150, alternatives, q)], construction, level)
        (fc,) = report.fields
        d = fc.flips[DECISION]
        field_miss += not d.low <= truth <= d.high
        above += fc.gate is not None and fc.gate["lower_bound"] > truth
        for pair in fc.pairs:
            pairs += 1
            pair_miss += not pair.flips["outcome"].low <= q <= pair.flips["outcome"].high
        assert d.n == 150 and set(fc.flips) == {*KINDS, DECISION}
    allowed = binom.ppf(0.999, runs, 1 - level)
    assert field_miss <= allowed, (field_miss, allowed)
    assert above <= allowed, (above, allowed)
    assert pair_miss <= binom.ppf(0.999, pairs, 1 - level), (pair_miss, pairs)


def test_the_gate_fails_only_when_the_lower_bound_exceeds_the_tolerance() -> None:
    rng = np.random.default_rng(3)
    flips = _flips(rng, 400, 1, 0.2)
    strict = [Construction("region", True, ("read",), (), 0.05)]
    lax = [Construction("region", True, ("read",), (), 0.3)]
    undeclared = [Construction("region", True, ("read",), (), None)]
    assert summarise("m", "s", "", [flips], strict).failed
    assert not summarise("m", "s", "", [flips], lax).failed
    assert summarise("m", "s", "", [flips], undeclared).fields[0].gate is None
    by_construction = [Construction("region", False, (), ("entity",), 0.01)]
    (fc,) = summarise("m", "s", "", [], by_construction).fields
    assert fc.status == "invariant_by_construction" and fc.gate is not None and fc.gate["passed"]
