"""Power-aware audit allocation (keel.monitoring.allocation) against statsmodels' power function."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from keel.monitoring.allocation import allocate, expected_override_rates, value_level

VOLUMES = {"NA": 1200.0, "EMEA": 900.0, "APAC": 600.0, "LATAM": 300.0}
BASE, WITHIN, POWER, ALPHA = 0.08, 3, 0.9, 0.01


def _power(cell: str, probabilities: dict[str, float], ratio: float) -> float:
    n1 = probabilities[cell] * VOLUMES[cell] * WITHIN
    n2 = sum(probabilities[o] * VOLUMES[o] * WITHIN for o in VOLUMES if o != cell)
    h = proportion_effectsize(ratio * BASE, BASE)
    return float(NormalIndPower().power(h, nobs1=n1, alpha=ALPHA, ratio=n2 / n1, alternative="larger"))


def test_the_plan_reaches_the_target_power_in_every_cell_without_waste() -> None:
    plan = allocate(VOLUMES, BASE, 2.0, WITHIN, POWER, ALPHA)
    p = {c.value: c.probability for c in plan.cells}
    assert plan.reaches_target and plan.planned_ratio == 2.0
    for cell in VOLUMES:
        assert _power(cell, p, 2.0) >= POWER - 1e-3
        # Not more than needed: 5% fewer audits in the cell fall short.
        assert _power(cell, {**p, cell: p[cell] * 0.95}, 2.0) < POWER
    # The small region gets the larger probability: equal evidence, not equal rates.
    assert p["LATAM"] > p["APAC"] > p["EMEA"] > p["NA"]


def test_a_binding_budget_is_kept_and_the_detectable_ratio_said() -> None:
    free = allocate(VOLUMES, BASE, 2.0, WITHIN, POWER, ALPHA)
    tight = allocate(VOLUMES, BASE, 2.0, WITHIN, POWER, ALPHA, budget=free.audited_share / 3)
    assert not tight.reaches_target
    assert tight.audited_share <= free.audited_share / 3 + 1e-6
    assert tight.planned_ratio > 2.0
    p = {c.value: c.probability for c in tight.cells}
    for c in tight.cells:
        assert c.detectable_ratio > 2.0 and not math.isinf(c.detectable_ratio)
        assert abs(_power(c.value, p, c.detectable_ratio) - POWER) < 2e-3
    # A budget the target fits in is not spent for nothing.
    assert allocate(VOLUMES, BASE, 2.0, WITHIN, POWER, ALPHA, budget=0.9).audited_share == free.audited_share


def test_each_cell_is_planned_on_its_own_base_rate() -> None:
    """Equal volumes, one cell with half the others' override rate: a ratio is harder to see there,
    so it gets more audits, and every cell still reaches the target on its own rate."""
    volumes = dict.fromkeys(("NA", "EMEA", "APAC"), 900.0)
    base = {"NA": 0.08, "EMEA": 0.04, "APAC": 0.08}
    plan = allocate(volumes, base, 2.0, WITHIN, POWER, ALPHA)
    p = {c.value: c.probability for c in plan.cells}
    assert plan.reaches_target and p["EMEA"] > 1.2 * p["NA"]
    for cell, rate in base.items():
        n1 = p[cell] * volumes[cell] * WITHIN
        n2 = sum(p[o] * volumes[o] * WITHIN for o in volumes if o != cell)
        h = proportion_effectsize(2.0 * rate, rate)
        power = NormalIndPower().power(h, nobs1=n1, alpha=ALPHA, ratio=n2 / n1, alternative="larger")
        assert power >= POWER - 1e-3
    # One number for every cell plans as before.
    assert allocate(volumes, 0.08, 2.0, WITHIN, POWER, ALPHA).cells[0].probability < p["EMEA"]


def test_the_plan_is_solved_at_the_level_process_drift_tests_one_value_at() -> None:
    assert value_level(0.01, 4, True, 0.8) == 0.01 * 0.8 / 4
    assert math.isclose(value_level(0.01, 5, False, 0.8), 0.01 * 0.2 / 5)


def test_the_base_rate_is_the_one_process_drift_measures_a_value_against() -> None:
    """A value's expected rate is what the others override in its score bands: EMEA sits in the
    confident band, where the others override 2%, so its base is 2% whatever EMEA itself does."""
    from tests.unit.test_audit_stats import BANDS, rows

    data = []
    for region in ("NA", "APAC"):
        data += rows(region, 200, 40, None, None, confidence=0.7) + rows(region, 200, 4, None, None, 0.97)
    data += rows("EMEA", 300, 60, None, None, confidence=0.97)
    rates, overrides, reviews = expected_override_rates(pd.DataFrame(data), "region", BANDS)
    assert math.isclose(rates["EMEA"], 0.02)
    # EMEA itself stands out, so process drift leaves it out of the others' reference (step-down).
    assert math.isclose(rates["NA"], (0.2 + 0.02) / 2)
    assert (overrides, reviews) == (2 * 44 + 60, 1100)


def test_the_base_rate_is_pooled_so_one_value_s_noise_does_not_tilt_the_plan() -> None:
    """Three regions with the same score-band mix and no drift; NA's reviewers happened to override
    less. "Everyone but NA" then overrides more than "everyone but EMEA", which would plan NA as
    the easy one; pooled over each value and its reference every region gets the same base."""
    from tests.unit.test_audit_stats import BANDS, rows

    data = rows("NA", 200, 10, None, None, confidence=0.7)
    for region in ("EMEA", "APAC"):
        data += rows(region, 200, 20, None, None, confidence=0.7)
    rates, overrides, reviews = expected_override_rates(pd.DataFrame(data), "region", BANDS)
    assert (overrides, reviews) == (50, 600)
    for region in ("NA", "EMEA", "APAC"):
        assert math.isclose(rates[region], 50 / 600)


def test_a_plan_file_carries_its_detect_target_and_refuses_a_bad_one(tmp_path: Path) -> None:
    """`keel audit set` records the file's target.detect (what `keel audit plan --detect` wrote);
    a file without a target records none; a ratio that is not above 1 is refused."""
    from keel.cli.audits import load_plan_file, planned_detect
    from keel.errors import InvalidInput

    path = tmp_path / "plan.json"
    base = {"model": "routing", "field": "region", "probabilities": {"EMEA": 0.3}, "cross_share": 0.2}
    path.write_text(json.dumps({**base, "target": {"detect": 2.5, "within": 3}}))
    assert planned_detect(load_plan_file(path, "routing")) == 2.5
    path.write_text(json.dumps(base))
    assert planned_detect(load_plan_file(path, "routing")) is None
    for bad in (1.0, 0.5, "2", math.inf):
        path.write_text(json.dumps({**base, "target": {"detect": bad}}))
        with pytest.raises(InvalidInput, match=r"target\.detect"):
            load_plan_file(path, "routing")
