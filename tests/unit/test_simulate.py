from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from keel.cli.simulate import (
    SimulationConfig,
    SimulationError,
    Verdict,
    case_payloads,
    reviewer_verdicts,
    run_simulation,
)
from keel.errors import InvalidInput
from keel.feature_defs.contract import MODEL_NAMES, load_contract
from keel.training.generators import generate

CLASSES = load_contract("routing").classes
BANDS = load_contract("discount_band").classes
REGIONS = ("NA", "EMEA", "APAC", "LATAM")


def population(
    n: int, seed: int, abstain_share: float = 0.0
) -> tuple[list[str], list[str | None], list[str]]:
    """Truth, model outcomes (always right unless abstained) and regions for n cases."""
    rng = np.random.default_rng(seed)
    truth = [CLASSES[i] for i in rng.integers(0, len(CLASSES), n)]
    abstain = rng.random(n) < abstain_share
    outcomes = [None if a else t for t, a in zip(truth, abstain, strict=True)]
    regions = [REGIONS[i] for i in rng.integers(0, len(REGIONS), n)]
    return truth, outcomes, regions


def override_share(verdicts: list[Verdict | None], outcomes: list[str | None], mask: list[bool]) -> float:
    pairs = [(v, o) for v, o, m in zip(verdicts, outcomes, mask, strict=True) if v and o and m]
    return sum(v.final_outcome != o for v, o in pairs) / len(pairs)


def test_reviewer_is_right_98_percent_of_the_time() -> None:
    truth, outcomes, regions = population(40_000, 1, abstain_share=1.0)
    verdicts = reviewer_verdicts(truth, outcomes, regions, CLASSES, np.random.default_rng(7))
    assert all(v is not None for v in verdicts)
    right = np.mean([v.final_outcome == t for v, t in zip(verdicts, truth, strict=True) if v])
    assert abs(right - 0.98) < 0.004  # about 5 standard errors
    assert all(v.final_outcome in CLASSES for v in verdicts if v)


def test_every_abstention_is_labelled_even_without_sampling() -> None:
    truth, outcomes, regions = population(2_000, 2, abstain_share=0.4)
    verdicts = reviewer_verdicts(
        truth, outcomes, regions, CLASSES, np.random.default_rng(0), feedback_share=0
    )
    for verdict, outcome, region in zip(verdicts, outcomes, regions, strict=True):
        if outcome is None:
            assert verdict is not None and verdict.reason == "reviewed abstention"
            assert verdict.actor.startswith(f"reviewer-{region.lower()}-")
        else:
            assert verdict is None


def test_feedback_share_samples_decided_cases_and_reasons_match() -> None:
    truth, outcomes, regions = population(20_000, 3)
    verdicts = reviewer_verdicts(
        truth, outcomes, regions, CLASSES, np.random.default_rng(1), feedback_share=0.3
    )
    reviewed = [v for v in verdicts if v]
    assert abs(len(reviewed) / len(verdicts) - 0.3) < 0.015
    for verdict, outcome in zip(verdicts, outcomes, strict=True):
        if verdict:
            expected = "confirmed" if verdict.final_outcome == outcome else "override: "
            assert verdict.reason.startswith(expected)


def test_segment_overrides_raise_overrides_only_in_the_chosen_region() -> None:
    truth, outcomes, regions = population(40_000, 4)
    kwargs: dict[str, Any] = {"feedback_share": 1.0, "override_rate": 0.35}
    plain = reviewer_verdicts(truth, outcomes, regions, CLASSES, np.random.default_rng(5), **kwargs)
    shifted = reviewer_verdicts(
        truth, outcomes, regions, CLASSES, np.random.default_rng(5), override_region="EMEA", **kwargs
    )
    emea = [r == "EMEA" for r in regions]
    elsewhere = [not e for e in emea]
    # The model is always right here, so plain overrides are the reviewers' 2 % slips.
    assert override_share(plain, outcomes, emea) < 0.03
    assert abs(override_share(shifted, outcomes, emea) - (0.35 + 0.65 * 0.02)) < 0.015
    # Outside the region the verdicts are identical, case by case.
    assert [v for v, e in zip(plain, elsewhere, strict=True) if e] == [
        v for v, e in zip(shifted, elsewhere, strict=True) if e
    ]
    assert {v.reason for v, e in zip(shifted, emea, strict=True) if v and e} >= {"regional practice"}


def test_regional_practice_on_bands_moves_one_step() -> None:
    n = 5_000
    truth = [BANDS[i % len(BANDS)] for i in range(n)]
    verdicts = reviewer_verdicts(
        truth,
        list(truth),
        ["EMEA"] * n,
        BANDS,
        np.random.default_rng(3),
        feedback_share=1.0,
        override_region="EMEA",
        override_rate=0.5,
        ordered=True,
    )
    moved = [(v, t) for v, t in zip(verdicts, truth, strict=True) if v and v.reason == "regional practice"]
    assert 0.45 < len(moved) / n < 0.55
    for verdict, band in moved:
        assert abs(BANDS.index(verdict.final_outcome) - BANDS.index(band)) == 1


def test_verdicts_are_deterministic_per_seed() -> None:
    truth, outcomes, regions = population(3_000, 5, abstain_share=0.2)

    def run(seed: int) -> list[Verdict | None]:
        rng = np.random.default_rng(seed)
        return reviewer_verdicts(
            truth, outcomes, regions, CLASSES, rng, override_region="EMEA", override_rate=0.3
        )

    assert run(11) == run(11)
    assert run(11) != run(12)


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_case_payloads_are_plain_contract_cases(model: str) -> None:
    contract = load_contract(model)
    frame = generate(model, 300, 0)
    payloads = case_payloads(frame, contract)
    assert len(payloads) == 300
    for payload in payloads:
        assert list(payload) == ["case_id", *contract.field_names]
        assert all(v is None or type(v) in (str, int, float, bool) for v in payload.values())
    json.dumps(payloads, allow_nan=False)  # NaN would raise here
    assert contract.validate_records(payloads).ok


def test_case_payloads_turn_nan_into_none() -> None:
    contract = load_contract("invoice_classification")
    frame = generate("invoice_classification", 200, 0)
    frame.loc[0, "amount"] = math.nan
    payloads = case_payloads(frame, contract)
    assert payloads[0]["amount"] is None
    missing = frame["days_since_similar_invoice"].isna()
    assert missing.any()
    assert all(p["days_since_similar_invoice"] is None for p, m in zip(payloads, missing, strict=True) if m)


def test_config_rejects_nonsense() -> None:
    with pytest.raises(InvalidInput) as info:
        SimulationConfig(scenario="nope", batch_size=0, models=("x",), feedback_share=2)
    assert {e.field for e in info.value.errors} == {"scenario", "batch_size", "models", "feedback_share"}


def test_an_unreachable_service_stops_at_once() -> None:
    with pytest.raises(SimulationError, match="cannot reach"):
        run_simulation(SimulationConfig(url="http://127.0.0.1:9", models=("routing",), cases=5, timeout=2))


def _audits(n: int, seed: int, selected: float, cross: float) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    picked, pool = rng.random(n) < selected, rng.random(n) < cross
    return [
        {"selected": bool(s), "probability": selected, "pool": ("cross" if c else "local") if s else None}
        for s, c in zip(picked, pool, strict=True)
    ]


def test_audited_cases_are_reviewed_by_the_pool_they_name() -> None:
    truth, outcomes, regions = population(20_000, 6, abstain_share=0.1)
    audits = _audits(20_000, 6, selected=0.1, cross=0.3)
    verdicts = reviewer_verdicts(
        truth, outcomes, regions, CLASSES, np.random.default_rng(2),
        feedback_share=0.0, audits=audits, all_regions=REGIONS,
    )  # fmt: skip
    for verdict, outcome, region, audit in zip(verdicts, outcomes, regions, audits, strict=True):
        if outcome is None:  # abstentions: reviewed as always, never as audits
            assert verdict is not None and verdict.reviewer_pool is None
        elif not audit["selected"]:
            assert verdict is None  # feedback share 0: only audits are reviewed
        else:
            assert verdict is not None and verdict.reviewer_pool == audit["pool"]
            local = verdict.reviewer_segment == region
            assert local == (audit["pool"] == "local") and verdict.reviewer_segment in REGIONS
            assert verdict.actor.startswith(f"reviewer-{str(verdict.reviewer_segment).lower()}-")
            body = verdict.body("d-1")
            assert body["reviewer_pool"] == audit["pool"] and body["decision_id"] == "d-1"
    # Without audits nothing changes: the same draws, no pool fields in the body.
    plain = reviewer_verdicts(truth, outcomes, regions, CLASSES, np.random.default_rng(2))
    again = reviewer_verdicts(truth, outcomes, regions, CLASSES, np.random.default_rng(2), audits=None)
    assert plain == again and all(v is None or "reviewer_pool" not in v.body("x") for v in plain)


def test_review_practice_is_local_and_cross_reviewers_judge_by_the_truth() -> None:
    truth, outcomes, regions = population(60_000, 7)
    audits = _audits(60_000, 7, selected=1.0, cross=0.5)
    verdicts = reviewer_verdicts(
        truth, outcomes, regions, CLASSES, np.random.default_rng(3), feedback_share=0.0,
        override_region="EMEA", override_rate=0.35, audits=audits, all_regions=REGIONS,
    )  # fmt: skip
    emea = [r == "EMEA" for r in regions]
    local = [m and a["pool"] == "local" for m, a in zip(emea, audits, strict=True)]
    cross = [m and a["pool"] == "cross" for m, a in zip(emea, audits, strict=True)]
    assert override_share(verdicts, outcomes, local) > 0.3
    assert override_share(verdicts, outcomes, cross) < 0.04  # only slips: the model is right here


def test_rule_change_moves_the_truth_of_a_share_of_one_region_only() -> None:
    from keel.cli.simulate import apply_rule_change

    truth, _, regions = population(40_000, 8)
    changed = apply_rule_change(truth, regions, CLASSES, np.random.default_rng(4), region="LATAM")
    moved = [a != b for a, b in zip(truth, changed, strict=True)]
    latam = [r == "LATAM" for r in regions]
    share = sum(m for m, x in zip(moved, latam, strict=True) if x) / sum(latam)
    assert abs(share - 0.3) < 0.02
    assert not any(m for m, x in zip(moved, latam, strict=True) if not x)
    bands = [BANDS[1]] * 1000
    stepped = apply_rule_change(
        bands, ["LATAM"] * 1000, BANDS, np.random.default_rng(5), region="LATAM", ordered=True
    )
    assert {b for b in stepped} == {BANDS[1], BANDS[2]}


def test_the_simulator_knows_its_own_scenarios() -> None:
    for scenario in ("review_practice", "rule_change", "segment_overrides", "none"):
        assert SimulationConfig(scenario=scenario).scenario == scenario


def test_erratic_reviewers_of_one_region_disagree_with_each_other_even_on_ordered_classes() -> None:
    """reviewer_disagreement: two independent reviews of the same EMEA cases often differ (each
    reviewer picks their own class), while elsewhere two reviews agree about as often as
    two reviewers right 98% of the time do."""
    n = 4_000
    truth = [BANDS[i % len(BANDS)] for i in range(n)]
    regions = ["EMEA" if i % 2 else "NA" for i in range(n)]

    def review(seed: int) -> list[Verdict | None]:
        return reviewer_verdicts(
            truth, list(truth), regions, BANDS, np.random.default_rng(seed), feedback_share=1.0,
            override_region="EMEA", override_rate=0.35, ordered=True, erratic=True,
        )  # fmt: skip

    def agreement(a: list[Verdict | None], b: list[Verdict | None], region: str) -> float:
        pairs = [(x, y) for x, y, r in zip(a, b, regions, strict=True) if r == region and x and y]
        return sum(x.final_outcome == y.final_outcome for x, y in pairs) / len(pairs)

    first, second = review(1), review(2)
    # Neither moves (0.65^2) or both pick the same other band (0.35^2 / 4): about 46%.
    assert 0.40 < agreement(first, second, "EMEA") < 0.52 and agreement(first, second, "NA") > 0.93


def test_reviewer_disagreement_resubmits_half_the_reviewed_cases_unless_told() -> None:
    assert SimulationConfig(scenario="reviewer_disagreement").duplicates == 0.5
    assert SimulationConfig(scenario="reviewer_disagreement", duplicate_share=0.2).duplicates == 0.2
    assert SimulationConfig(scenario="none").duplicates == 0.0
    with pytest.raises(InvalidInput) as info:
        SimulationConfig(duplicate_share=1.5)
    assert {e.field for e in info.value.errors} == {"duplicate_share"}
