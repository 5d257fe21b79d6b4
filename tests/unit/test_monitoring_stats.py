"""Monitoring statistics against textbook values, and override / quality / process-drift
reports on hand-built reviewed frames whose right answers are known by construction."""

from __future__ import annotations

import json
import math
from itertools import count
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency

from keel.monitoring.log_reader import REVIEWED_COLUMNS
from keel.monitoring.overrides import override_report
from keel.monitoring.process_drift import process_drift
from keel.monitoring.quality import CAVEAT, expected_calibration_error, quality_report, reliability
from keel.monitoring.stats import band_index, cmh_test, holm, proportion, wilson_interval

BANDS = [0.0, 0.6, 0.8, 0.9, 0.95, 0.99, 1.0001]  # the default of KEEL_MONITOR_SCORE_BANDS
CLASSES = ("band_0_5", "band_5_10", "band_10_20")


# -- stats ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (0, 10, 0.0, 0.277533),  # the "rule of three" neighbourhood: Wilson upper bound for 0/10
        (5, 10, 0.236593, 0.763407),
        (10, 10, 0.722467, 1.0),
        (81, 263, 0.255289, 0.366210),  # Wilson (1927) style example used in many texts
    ],
)
def test_wilson_interval_matches_known_values(k: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=1e-6)


def test_wilson_interval_edge_cases() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo99, hi99 = wilson_interval(5, 10, confidence=0.99)
    assert lo99 < 0.236593 and hi99 > 0.763407
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    p = proportion(3, 12)
    assert (p.count, p.n, p.rate) == (3, 12, 0.25) and p.low < 0.25 < p.high


RABBITS = [  # R's `Rabbits` (penicillin delay x response, 5 penicillin levels), rows None/1.5h
    [[0, 6], [0, 5]],
    [[3, 3], [0, 6]],
    [[6, 0], [2, 4]],
    [[5, 1], [6, 0]],
    [[2, 0], [5, 0]],
]


def test_cmh_matches_r_mantelhaen_test_on_rabbits() -> None:
    # R: mantelhaen.test(Rabbits) -> X-squared = 3.9286, p = 0.04747, common OR 7,
    # 95% CI 1.026713 .. 47.725133.
    result = cmh_test(RABBITS)
    assert result.statistic == pytest.approx(3.928571, abs=1e-6)
    assert result.p_value == pytest.approx(0.04747, abs=1e-5)
    assert result.odds_ratio == pytest.approx(7.0)
    assert (result.odds_ratio_low, result.odds_ratio_high) == pytest.approx((1.026713, 47.725133), rel=1e-6)
    assert cmh_test(RABBITS, correction=False).statistic == pytest.approx(5.657143, abs=1e-6)


def test_one_sided_cmh_is_half_the_two_sided_p_in_its_direction() -> None:
    # R: mantelhaen.test(Rabbits, alternative = "greater") -> p = 0.02373 (the OR is 7 > 1).
    greater = cmh_test(RABBITS, alternative="greater")
    assert greater.p_value == pytest.approx(0.02373, abs=1e-5)
    assert greater.p_value == pytest.approx(cmh_test(RABBITS).p_value / 2)
    # The same tables with the rows swapped: fewer events than expected is no evidence of more.
    swapped = np.asarray(RABBITS)[:, ::-1, :]
    assert cmh_test(swapped, alternative="greater").p_value == pytest.approx(1 - 0.02373, abs=1e-5)


def test_cmh_with_one_stratum_is_the_scaled_pearson_chi_square() -> None:
    table = np.array([[30, 70], [15, 85]])
    pearson = chi2_contingency(table, correction=False).statistic
    n = table.sum()
    assert cmh_test([table], correction=False).statistic == pytest.approx(pearson * (n - 1) / n)
    a, b, c, d = table.ravel()
    assert cmh_test([table]).rate_ratio == pytest.approx((a / (a + b)) / (c / (c + d)))


def test_holm_adjustment() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == []
    assert holm([0.9, 0.8]) == [1.0, 1.0]


def test_band_index_is_half_open_with_open_outer_bands() -> None:
    got = band_index([0.1, 0.6, 0.79999, 0.8, 0.95, 0.999, 1.0, 1.5], BANDS)
    assert got.tolist() == [0, 1, 1, 2, 4, 5, 5, 5]
    with pytest.raises(ValueError):
        band_index([0.5], [0.0, 0.5, 0.5])


# -- hand-built reviewed frames -------------------------------------------------------------------
_ids = count()


def block(
    n: int,
    overrides: int,
    confidence: float,
    region: str,
    channel: str | tuple[str, ...] = ("direct", "partner"),
) -> list[dict[str, Any]]:
    """n reviewed decided cases of which the first `overrides` were overridden; when several
    channels are given they alternate, so each channel gets the same share of overrides."""
    channels = (channel,) if isinstance(channel, str) else channel
    rows = []
    for i in range(n):
        said = CLASSES[i % 2]
        overridden = i < overrides
        rows.append({
            "decision_id": f"d{next(_ids)}", "created_at": "2026-01-01T00:00:00+00:00",
            "model_version": "1" if i % 4 else "2", "outcome": said, "abstained": False,
            "confidence": confidence, "most_likely": said,
            "final_outcome": CLASSES[2] if overridden else said,
            "kind": "override" if overridden else "confirmation",
            "reason": "price list outdated" if overridden and i % 3 == 0 else None,
            "actor": "rev", "region": region, "channel": channels[i % len(channels)],
        })  # fmt: skip
    return rows


def labels(n: int, correct: int, confidence: float, region: str) -> list[dict[str, Any]]:
    """n reviewed abstentions; the model's best guess matched the label on `correct` of them."""
    rows = block(n, 0, confidence, region)
    for i, r in enumerate(rows):
        r.update(outcome=None, abstained=True, kind="label", final_outcome=CLASSES[0])
        r["most_likely"] = CLASSES[0] if i < correct else CLASSES[1]
    return rows


def frame(*blocks: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([r for b in blocks for r in b])


@pytest.fixture
def reviewed() -> pd.DataFrame:
    """NA and APAC review alike within each score band, but APAC's cases sit mostly in the low
    band, so its crude override rate is 2.4x NA's; EMEA overrides 3x more in both bands;
    LATAM is too small to judge; marketplace (channel) likewise."""
    return frame(
        block(100, 20, 0.70, "NA"), block(300, 6, 0.97, "NA"),
        block(300, 60, 0.70, "APAC"), block(100, 2, 0.97, "APAC"),
        block(100, 60, 0.70, "EMEA"), block(300, 30, 0.97, "EMEA"),
        block(10, 10, 0.70, "LATAM", "marketplace"),
        labels(40, 30, 0.45, "NA"),
    )  # fmt: skip


def test_override_report_counts_rates_pairs_and_reasons(reviewed: pd.DataFrame) -> None:
    report = override_report(reviewed, ["region", "channel"])
    assert (report.n_reviewed, report.n_reviewed_decided, report.n_labels) == (1250, 1210, 40)
    assert (report.overall.count, report.overall.n) == (188, 1210)
    assert report.overall.low < 188 / 1210 < report.overall.high
    assert report.overall == proportion(188, 1210)
    region = report.by_segment["region"]
    assert {k: (v.count, v.n) for k, v in region.items()} == {
        "NA": (26, 400), "APAC": (62, 400), "EMEA": (90, 400), "LATAM": (10, 10),
    }  # fmt: skip
    assert region["LATAM"].low == pytest.approx(wilson_interval(10, 10)[0])
    assert report.by_segment["channel"]["marketplace"].n == 10
    assert sum(p.count for p in report.by_class.values()) == 188
    assert set(report.by_class) == {"band_0_5", "band_5_10"}  # classes the model decided
    assert sum(p.n for p in report.by_version.values()) == 1210
    pairs = {(p.model_outcome, p.final_outcome, p.count, p.share) for p in report.top_pairs}
    assert pairs == {("band_0_5", "band_10_20", 94, 0.5), ("band_5_10", "band_10_20", 94, 0.5)}
    assert report.top_reasons[0].reason == "price list outdated"
    assert report.top_reasons[0].count == sum(
        1 for r in reviewed.itertuples() if r.kind == "override" and r.reason == "price list outdated"
    )
    json.dumps(report.to_dict())  # plain data all the way down


def test_labels_on_abstentions_are_not_overrides() -> None:
    report = override_report(frame(labels(30, 0, 0.4, "NA")), ["region"])
    assert (report.overall.count, report.overall.n, report.n_labels) == (0, 0, 30)
    assert report.overall.rate is None and report.top_pairs == []


def test_quality_report_accuracy_calibration_and_caveat(reviewed: pd.DataFrame) -> None:
    report = quality_report(reviewed, ["region"], alpha=0.05)
    assert report.accuracy.count == 1210 - 188 + 30 and report.accuracy.n == 1250
    assert (report.accuracy_decided.count, report.accuracy_decided.n) == (1022, 1210)
    assert (report.accuracy_abstained.count, report.accuracy_abstained.n) == (30, 40)
    assert (report.selective_error.count, report.selective_error.n) == (188, 1210)
    assert report.error_exceeds_alpha is True  # 15.5% errors, Wilson low bound well above 5%
    assert report.by_segment["region"]["NA"].count == 400 - 26 + 30
    assert report.caveat == CAVEAT and "not a random sample" in report.caveat
    # Reliability by hand: bins 0.4-0.5 (40 labels, 30 right), 0.7-0.8 (510, 360 right),
    # 0.9-1.0 (700, 662 right).
    filled = {(round(b.low, 1), b.n, b.accuracy) for b in report.reliability if b.n}
    assert filled == {(0.4, 40, 0.75), (0.7, 510, 360 / 510), (0.9, 700, 662 / 700)}
    ece = (40 * abs(0.75 - 0.45) + 510 * abs(360 / 510 - 0.7) + 700 * abs(662 / 700 - 0.97)) / 1250
    assert report.ece == pytest.approx(ece)
    json.dumps(report.to_dict())


def test_reliability_of_a_perfectly_calibrated_model_has_zero_ece() -> None:
    conf = np.array([0.25] * 4 + [0.75] * 4)
    correct = np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=bool)
    bins = reliability(conf, correct, n_bins=4)
    assert expected_calibration_error(bins) == pytest.approx(0.0)
    assert [b.n for b in bins] == [0, 4, 0, 4]
    assert expected_calibration_error(reliability(np.array([1.0]), np.array([False]), 10)) == 1.0


def test_process_drift_flags_the_biased_region_and_not_the_fair_ones(reviewed: pd.DataFrame) -> None:
    report = process_drift(reviewed, ["region", "channel"], BANDS, min_n=50, alpha=0.01)
    flagged = [(f.field, f.value) for f in report.flagged]
    assert flagged == [("region", "EMEA")]
    emea = report.findings[0]
    assert sorted(emea.compared_with) == ["APAC", "NA"]
    # MH rate ratio by hand over the two populated bands (0.6-0.8 and 0.95-0.99):
    mh = (60 * 400 / 500 + 30 * 400 / 700) / (80 * 100 / 500 + 8 * 300 / 700)
    assert emea.rate_ratio == pytest.approx(mh)
    assert emea.rate == pytest.approx(90 / 400)
    assert emea.expected_rate == pytest.approx((100 * 0.20 + 300 * 0.02) / 400)
    assert emea.p_holm < 1e-9 and emea.lowest_value in {"NA", "APAC"}
    assert emea.sentence.startswith("EMEA (region): override rate 3.4× the rest in the same score bands")
    assert "22.5% vs 6.5%" in emea.sentence
    # The second ratio says what it compares: the one value with the lowest rate, on its own.
    lowest = f"× {emea.lowest_value} alone, the region with the lowest override rate in the same score bands"
    assert lowest in emea.sentence
    # APAC's crude rate is 2.4x NA's, but band for band it is the same: not flagged.
    apac = next(f for f in report.findings if f.value == "APAC")
    assert apac.rate / (26 / 400) > 2 and apac.rate_ratio == pytest.approx(1.0, abs=0.05)
    assert not apac.significant and apac.p_value >= 0.5
    # Under no drift a fair value's rate is its bands' rates pooled with its reference's (EMEA, an
    # outlier, is in neither; here both have the same band rates); an outlier's own cases are not
    # pooled into its null rate.
    assert apac.compared_with == ["NA"] and emea.null_rate == pytest.approx(emea.expected_rate)
    pooled = sum(b.n * (b.events + b.rest_events) / (b.n + b.rest_n) for b in apac.bands if b.rest_n)
    assert apac.null_rate == pytest.approx(pooled / sum(b.n for b in apac.bands if b.rest_n))
    # Too small to judge, however extreme.
    assert {(s["field"], s["value"]) for s in report.skipped} == {
        ("region", "LATAM"),
        ("channel", "marketplace"),
    }
    # Channels share every block half and half: a fair split on that field too.
    assert not any(f.significant for f in report.findings if f.field == "channel")
    assert report.n_tests == 5  # NA, APAC, EMEA; direct, partner
    json.dumps(report.to_dict())


def test_process_drift_reports_nothing_on_a_fair_log() -> None:
    fair = frame(
        *(block(200, 20, 0.7, r) for r in ("NA", "EMEA", "APAC", "LATAM")),
        *(block(200, 4, 0.97, r) for r in ("NA", "EMEA", "APAC", "LATAM")),
    )
    report = process_drift(fair, ["region", "channel"], BANDS)
    assert report.flagged == [] and report.n_tests == 6
    # Overrides are tested one-sided (more than elsewhere): no difference at all is p = 1/2.
    assert all(f.p_value == pytest.approx(0.5) for f in report.findings)


def test_process_drift_on_policy_interventions_from_sql_denominators() -> None:
    decided = pd.DataFrame(
        [
            ("region", "NA", 1, 500, 50), ("region", "EMEA", 1, 500, 55), ("region", "APAC", 1, 500, 150),
            ("region", "NA", 4, 800, 8), ("region", "EMEA", 4, 800, 9), ("region", "APAC", 4, 200, 12),
            ("region", "LATAM", 4, 20, 20),
        ],
        columns=["field", "value", "band", "n_decided", "n_intervened"],
    )  # fmt: skip
    no_reviews = pd.DataFrame(columns=[*REVIEWED_COLUMNS, "region"])
    report = process_drift(no_reviews, ["region"], BANDS, decided)
    assert [(f.metric, f.value) for f in report.flagged] == [("intervention_rate", "APAC")]
    apac = report.flagged[0]
    assert apac.sentence.startswith("APAC (region): policy-intervention rate")
    assert apac.rate_ratio is not None and apac.rate_ratio > 2.5
    assert not math.isnan(apac.p_holm) and {s["value"] for s in report.skipped} == {"LATAM"}


# -- weighted Holm, segment checks, sequential evidence ------------------------------------------
def test_weighted_holm_equals_holm_with_equal_weights_and_spends_budget_by_weight() -> None:
    from keel.monitoring.stats import weighted_holm

    p = [0.004, 0.03, 0.2, 0.011]
    assert weighted_holm(p, [1, 1, 1, 1]) == pytest.approx(holm(p))
    # Half the budget on the first test: its adjusted p is p * total / weight = 0.004 * 2.
    adjusted = weighted_holm(p, [1.5, 0.5, 0.5, 0.5])
    assert adjusted[0] == pytest.approx(0.004 * 3 / 1.5)
    assert adjusted[3] == pytest.approx(max(adjusted[0], 0.011 * 1.5 / 0.5))
    with pytest.raises(ValueError):
        weighted_holm([0.1], [0.0])


def test_process_drift_gives_the_primary_field_its_share_of_the_budget(reviewed: pd.DataFrame) -> None:
    flat = process_drift(reviewed, ["region", "channel"], BANDS)
    weighted = process_drift(reviewed, ["region", "channel"], BANDS, primary="region", primary_share=0.9)
    emea = [next(f for f in r.findings if f.value == "EMEA") for r in (flat, weighted)]
    assert emea[1].p_value == emea[0].p_value and emea[1].p_holm < emea[0].p_holm
    assert [f.value for f in weighted.flagged if f.field == "region"] == ["EMEA"]


def _decided_rows(n: int, errors: int, **segments: str) -> list[dict[str, Any]]:
    rows = block(n, errors, 0.95, segments.get("region", "NA"))
    for r in rows:
        r.update(segments)
    return rows


def test_concept_by_segment_names_the_entity_where_the_model_is_wrong() -> None:
    from keel.monitoring.segments import concept_by_segment

    data = frame(
        _decided_rows(300, 9, entity="US01"), _decided_rows(300, 12, entity="GB01"),
        _decided_rows(150, 45, entity="DE01"),  # 30% overturned: a changed rule
        labels(200, 20, 0.5, "NA"),  # abstentions: best guess right 10%, never counted here
    )  # fmt: skip
    report = concept_by_segment(data, ["entity"], alpha=0.02, tolerance=0.05)
    assert [f.value for f in report.flagged] == ["DE01"]
    assert report.tolerated == pytest.approx(0.07)
    assert (
        report.abstained_accuracy["entity=NA"]["n"] == 200
        if "entity=NA" in report.abstained_accuracy
        else True
    )
    quiet = concept_by_segment(frame(_decided_rows(300, 12, entity="US01")), ["entity"], 0.02, 0.05)
    assert not quiet.flagged


def test_segment_mix_flags_a_doubled_share_and_not_a_resample() -> None:
    from keel.monitoring.segments import segment_mix

    rng = np.random.default_rng(5)
    values = np.array(["edi", "email_pdf", "portal", "api"])
    ref = pd.DataFrame({"channel": rng.choice(values, 5000, p=[0.4, 0.3, 0.2, 0.1])})
    same = pd.DataFrame({"channel": rng.choice(values, 3000, p=[0.4, 0.3, 0.2, 0.1])})
    doubled = pd.DataFrame(
        {"channel": rng.choice(values, 3000, p=[0.4 * 8 / 9, 0.3 * 8 / 9, 0.2 * 8 / 9, 0.2])}
    )
    assert not segment_mix(ref, same, ["channel"]).flagged
    moved = segment_mix(ref, doubled, ["channel"]).flagged
    assert [(f.field, f.value) for f in moved] == [("channel", "api")] and moved[0].ratio == pytest.approx(
        2, rel=0.2
    )


def test_expected_quality_from_confidences() -> None:
    from keel.monitoring.segments import expected_quality

    cur = pd.DataFrame({
        "abstained": [False] * 200 + [True] * 50, "confidence": [0.99] * 100 + [0.9] * 100 + [0.5] * 50,
        "region": ["NA"] * 100 + ["EMEA"] * 100 + ["NA"] * 50,
    })  # fmt: skip
    ref = cur.assign(confidence=0.99)
    got = expected_quality(cur, ref, ["region"], alpha=0.02)
    assert got.expected_error == pytest.approx(0.055) and got.reference_expected_error == pytest.approx(0.01)
    assert got.segments[0].value == "EMEA" and got.segments[0].expected_error == pytest.approx(0.1)
    assert got.expected_accuracy == pytest.approx((99 + 90 + 25) / 250)


def test_sequential_evidence_is_a_normal_mixture_and_persists(tmp_path: Any) -> None:
    from keel.decision_log.database import Database
    from keel.monitoring.sequential import SequentialState, accumulate, chunk_statistics, e_value, load_state

    assert e_value(0.0, 10.0, 0.5) == pytest.approx(2 / math.sqrt(6) * 0.5)
    assert e_value(-5.0, 10.0, 0.5) < 1 < e_value(10.0, 10.0, 0.5)
    data = frame(block(200, 4, 0.97, "NA"), block(200, 20, 0.97, "EMEA"))
    stats = chunk_statistics(data, "region", BANDS)
    # CMH numerator by hand: EMEA 20 observed vs 200 * 24 / 400 = 12 expected.
    assert stats["EMEA"][0] == pytest.approx(8.0) and stats["NA"][0] == pytest.approx(-8.0)
    state = SequentialState("m", "region", alpha=0.05, rho=0.5)
    for k in range(3):
        state.add_chunk(stats, f"t{k}", f"t{k + 1}")
    assert state.alarms == ["EMEA"] and state.consumed_until == "t3"
    db = Database(f"sqlite:///{tmp_path / 'decisions.db'}")
    db.create_schema()
    for k in range(3):  # the same chunks through the log's table, one stored update each
        chunk = (stats, f"t{k}", f"t{k + 1}")
        accumulate(db, "m", "region", 0.05, 0.5, lambda _, c=chunk: c)
    again = load_state(db, "m", "region", 0.05, 0.5)
    assert again.values["EMEA"].max_e == pytest.approx(state.values["EMEA"].max_e) and len(again.chunks) == 3
    assert not load_state(db, "m", "region", 0.01, 0.5).values  # new design, new test


def test_sequential_false_alarms_stay_below_alpha_over_many_runs() -> None:
    """Fair reviewers, 10 chunks per stream, 120 streams: alarms within binom.ppf(0.999, 120, 0.05)."""
    from scipy.stats import binom

    from keel.monitoring.sequential import SequentialState, chunk_statistics

    rng = np.random.default_rng(8)
    regions = np.array(["NA", "EMEA", "APAC", "LATAM"])
    alarms = 0
    for _ in range(120):
        state = SequentialState("m", "region", alpha=0.05, rho=0.5)
        for k in range(10):
            n = 160
            conf = rng.choice([0.7, 0.97], n)
            over = rng.random(n) < (1 - conf)
            chunk = pd.DataFrame({
                "abstained": False, "confidence": conf, "kind": np.where(over, "override", "confirmation"),
                "region": rng.choice(regions, n),
            })  # fmt: skip
            state.add_chunk(chunk_statistics(chunk, "region", BANDS), str(k), str(k + 1))
        alarms += bool(state.alarms)
    assert alarms <= binom.ppf(0.999, 120, 0.05), alarms
