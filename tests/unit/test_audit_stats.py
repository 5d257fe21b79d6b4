"""Audit statistics on generated frames: Hajek estimates, practice vs rule from cross reviewers,
the headline that never says retrain without separating evidence, and stated detection limits
that the checks' own tests reach."""

from __future__ import annotations

from itertools import count
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from keel.feature_defs.contract import load_contract
from keel.monitoring import checks
from keel.monitoring.audit import INVESTIGATE, PRACTICE, RULE, audit_report, hajek, more_cross_audits
from keel.monitoring.detection import detection_limits, min_detectable_error
from keel.monitoring.drift import DriftConfig
from keel.monitoring.monitor import assess
from keel.monitoring.process_drift import process_drift
from keel.monitoring.segments import concept_by_segment
from keel.monitoring.settings import MonitorSettings
from keel.monitoring.stats import proportion

REGIONS = ("NA", "EMEA", "APAC", "LATAM")
BANDS = MonitorSettings().score_bands
_ids = count()


def rows(region: str, n: int, overridden: int, pool: str | None, probability: float | None,
         confidence: float = 0.85, entity: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """`n` reviewed decided cases of `region`, the first `overridden` of them overturned."""
    out = []
    for i in range(n):
        said = ("finance_ap", "legal")[i % 2]
        over = i < overridden
        out.append({
            "decision_id": f"d{next(_ids)}", "created_at": "2026-01-02T00:00:00+00:00", "model_version": "1",
            "outcome": said, "abstained": False, "confidence": confidence, "most_likely": said,
            "final_outcome": "sales_ops" if over else said, "kind": "override" if over else "confirmation",
            "reason": None, "actor": "rev", "audit_selected": probability is not None,
            "audit_probability": probability if probability is not None else np.nan, "audit_pool": pool,
            "reviewer_pool": pool, "reviewer_segment": None, "channel": ("email", "portal")[i % 2],
            "product_line": ("a", "b", "c")[i % 3], "region": region,
            "entity": entity or f"{region}01",
        })  # fmt: skip
    return out


def audited_window(emea_local: int, emea_cross: int, local_n: int = 400, cross_n: int = 60) -> pd.DataFrame:
    """Per region `local_n` local audits (probability 0.2) and `cross_n` cross audits (0.05), 5%
    overturned; EMEA's local and cross audits overturned `emea_local` and `emea_cross` times."""
    data: list[dict[str, Any]] = []
    for region in REGIONS:
        local_k = emea_local if region == "EMEA" else local_n // 20
        cross_k = emea_cross if region == "EMEA" else cross_n // 20
        data += rows(region, local_n, local_k, "local", 0.2) + rows(region, cross_n, cross_k, "cross", 0.05)
    return pd.DataFrame(data)


# -- Hajek estimates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(0, 40), (3, 40), (37, 400), (400, 400)])
def test_equal_probabilities_give_the_plain_proportion_and_its_wilson_interval(k: int, n: int) -> None:
    events = np.arange(n) < k
    got = hajek(events, np.full(n, 0.3))
    plain = proportion(k, n)
    assert (got.value, got.low, got.high, got.effective_n) == (plain.rate, plain.low, plain.high, n)


def test_hajek_is_unbiased_under_unequal_probabilities_where_the_plain_mean_is_not() -> None:
    """A population whose errors sit where audits are rare: the weighted estimate's mean over
    many Poisson-sampled audits is the truth, the unweighted one's is far off; the 95% interval
    misses no more often than a binomial allowance at 95% coverage permits."""
    rng = np.random.default_rng(7)
    size = 20_000
    hard = rng.random(size) < 0.3
    truth_events = np.where(hard, rng.random(size) < 0.2, rng.random(size) < 0.02)
    p = np.where(hard, 0.02, 0.2)  # hard cases audited ten times less often
    truth = float(truth_events.mean())
    draws, estimates, naive, misses = 400, [], [], 0
    for _ in range(draws):
        pick = rng.random(size) < p
        est = hajek(truth_events[pick], p[pick])
        assert est.value is not None
        estimates.append(est.value)
        naive.append(float(truth_events[pick].mean()))
        misses += not est.low <= truth <= est.high
    se = float(np.std(estimates, ddof=1)) / np.sqrt(draws)
    assert abs(float(np.mean(estimates)) - truth) <= 4 * se + 0.001, (np.mean(estimates), truth)
    assert float(np.mean(naive)) < truth - 0.01  # the unweighted mean is biased: the test can fail
    assert misses <= binom.ppf(0.999, draws, 0.05), misses


def test_old_records_and_unselected_reviews_are_discretionary() -> None:
    frame = pd.DataFrame(rows("NA", 50, 5, None, None) + rows("NA", 100, 10, "local", 0.5))
    old = frame.drop(columns=["audit_selected", "audit_probability", "audit_pool", "reviewer_pool"])
    report = audit_report(frame, ["region"], 0.05, BANDS)
    assert (report.n_audited, report.n_discretionary) == (100, 50)
    assert report.selective_error.value == pytest.approx(0.1)
    none = audit_report(old, ["region"], 0.05, BANDS)
    assert (none.n_audited, none.n_discretionary, none.selective_error.value) == (0, 150, None)


# -- practice vs rule ---------------------------------------------------------------------------------


def test_local_overrides_with_cross_agreeing_read_review_practice() -> None:
    report = audit_report(audited_window(emea_local=120, emea_cross=3), ["region"], 0.05, BANDS)
    (emea,) = [f for f in report.findings if f.value == "EMEA"]
    assert emea.reading == PRACTICE, emea
    assert emea.sentence.startswith("region EMEA: review practice — local reviewers overturn 30.0% of 400")
    assert "cross reviewers 5.0% of 60 (95% CI" in emea.sentence
    assert [f.value for f in report.findings] == ["EMEA"]


def test_both_pools_disagreeing_with_the_model_read_model_wrong_there() -> None:
    report = audit_report(audited_window(emea_local=120, emea_cross=18), ["region"], 0.05, BANDS)
    (emea,) = [f for f in report.findings if f.value == "EMEA"]
    assert emea.reading == RULE, emea
    assert emea.sentence.startswith("region EMEA: model wrong there — cross reviewers 30.0% of 60")


def test_too_few_cross_audits_read_investigate_with_how_many_more() -> None:
    report = audit_report(audited_window(120, 1, cross_n=4), ["region"], 0.05, BANDS)
    (emea,) = [f for f in report.findings if f.value == "EMEA"]
    assert emea.reading == INVESTIGATE
    assert emea.more_cross_audits == more_cross_audits(0.3, emea.baseline_rate or 0.0, 4, 0.01)
    assert 5 <= (emea.more_cross_audits or 0) <= 60
    assert f"{emea.more_cross_audits} more cross audits in region EMEA would decide it" in emea.sentence


def test_a_practice_inside_a_value_the_cross_reviewers_call_wrong_reads_investigate() -> None:
    """EMEA01's cross reviewers overturn like its local ones (the rule changed), EMEA02's do not:
    on its own EMEA02 reads as a practice, but its region reads "model wrong there", so the two
    readings contradict each other and EMEA02 is left to investigate."""
    data: list[dict[str, Any]] = []
    for region in REGIONS:
        if region != "EMEA":
            data += rows(region, 400, 20, "local", 0.2) + rows(region, 60, 3, "cross", 0.05)
    data += rows("EMEA", 200, 60, "local", 0.2, entity="EMEA01") + rows(
        "EMEA", 40, 14, "cross", 0.05, entity="EMEA01"
    )
    data += rows("EMEA", 200, 60, "local", 0.2, entity="EMEA02") + rows(
        "EMEA", 40, 1, "cross", 0.05, entity="EMEA02"
    )
    report = audit_report(pd.DataFrame(data), ["region", "entity"], 0.05, BANDS)
    readings = {(f.field, f.value): f.reading for f in report.findings}
    assert readings[("region", "EMEA")] == RULE and readings[("entity", "EMEA01")] == RULE, readings
    assert readings[("entity", "EMEA02")] == INVESTIGATE, readings
    alone = audit_report(pd.DataFrame([r for r in data if r["entity"] != "EMEA01"]), ["entity"], 0.05, BANDS)
    assert alone.reading("entity", "EMEA02") == PRACTICE


def test_a_changed_rule_reads_as_a_practice_at_most_at_the_practice_level() -> None:
    """Local and cross reviewers of EMEA see the same changed truth (30% overturned by both): over
    300 draws the reading "review practice" may come at most as often as its 5% level implies."""
    rng = np.random.default_rng(23)
    said = 0
    for _ in range(300):
        local_k, cross_k = int(rng.binomial(150, 0.3)), int(rng.binomial(25, 0.3))
        frame = pd.DataFrame(
            [r for region in REGIONS if region != "EMEA" for r in rows(region, 300, 15, "local", 0.2)]
            + rows("EMEA", 150, local_k, "local", 0.2) + rows("EMEA", 25, cross_k, "cross", 0.05)
        )  # fmt: skip
        report = audit_report(frame, ["region"], 0.05, BANDS, candidates=[("region", "EMEA")])
        said += report.reading("region", "EMEA") == PRACTICE
    assert said <= binom.ppf(0.999, 300, 0.05), said


def test_a_rule_change_in_a_small_entity_reads_as_a_practice_at_most_at_the_level_in_any_value() -> None:
    """The outcome rule changes in LATAM00, one small entity (about 6% of audits): its local and
    cross reviewers overturn alike, and its region stands out with it. Each of the two is a chance
    to misread the rule as a practice; over 300 windows "review practice" in any value may come at
    most as often as the 5% level implies (read per value, the two made it up to twice that)."""
    rng = np.random.default_rng(29)
    draws, said, entity_read = 300, 0, 0
    for _ in range(draws):
        data: list[dict[str, Any]] = []
        for region in REGIONS:
            for e in range(4):
                entity, small = f"{region}0{e}", (region, e) == ("LATAM", 0)
                local_n, offered = (40, 48) if small else (170, 210)
                cross_n = int(rng.binomial(offered, 1 / 6))
                rate = 0.33 if small else 0.05
                data += rows(region, local_n, int(rng.binomial(local_n, rate)), "local", 0.25, entity=entity)
                data += rows(region, cross_n, int(rng.binomial(cross_n, rate)), "cross", 0.05, entity=entity)
        report = audit_report(pd.DataFrame(data), ["region", "entity"], 0.05, BANDS, primary="region")
        said += any(f.reading == PRACTICE for f in report.findings)
        entity_read += report.reading("entity", "LATAM00") is not None
    assert entity_read >= binom.ppf(0.001, draws, 0.9), entity_read  # the entity is examined
    assert said <= binom.ppf(0.999, draws, 0.05), said


def test_one_cross_overturn_against_a_few_clean_audits_elsewhere_is_not_a_wrong_model() -> None:
    """A newcomer run: 29 audited decided cases, none overturned outside EMEA, one EMEA cross audit
    overturned. Against the others' estimated 0% a binomial tail reads "model wrong there" (and
    the headline retrain); the exact test counts the 20 clean audits for what they are: one in 21."""
    data = rows("EMEA", 9, 4, "local", 0.05) + rows("EMEA", 1, 1, "cross", 0.05)
    for region in ("NA", "APAC"):
        data += rows(region, 10, 0, "local", 0.05)
    report = audit_report(pd.DataFrame(data), ["region"], 0.02, BANDS, candidates=[("region", "EMEA")])
    (emea,) = report.findings
    assert emea.reading == INVESTIGATE and emea.cross_p == pytest.approx(1 / 21)
    # With the rule changed in earnest the cross audits still tell: 6 of 20 against 1 of 400.
    data = rows("EMEA", 60, 20, "local", 0.2) + rows("EMEA", 20, 6, "cross", 0.05)
    for region in ("NA", "APAC"):
        data += rows(region, 200, 1 if region == "NA" else 0, "local", 0.2)
    report = audit_report(pd.DataFrame(data), ["region"], 0.02, BANDS, candidates=[("region", "EMEA")])
    assert report.reading("region", "EMEA") == RULE


def test_a_small_entity_inside_a_reported_region_is_examined_there() -> None:
    """LATAM00 has 12 local audits, too few to be tested among every value (min_n 20 here), but half
    of them overturned; its region is reported (flagged by another check). Inside the region it
    is tested against the region's other entities' count (Bonferroni): named, with the cross
    audits that would decide it. LATAM01, as small and overturned like everywhere else, is not."""
    data: list[dict[str, Any]] = []
    for region in REGIONS:
        for e in range(3):
            data += rows(region, 170, 9, "local", 0.25, entity=f"{region}0{e + 2}")
    data += rows("LATAM", 12, 6, "local", 0.25, entity="LATAM00") + rows(
        "LATAM", 2, 1, "cross", 0.05, entity="LATAM00"
    )
    data += rows("LATAM", 12, 0, "local", 0.25, entity="LATAM01")
    frame = pd.DataFrame(data)
    report = audit_report(frame, ["region", "entity"], 0.05, BANDS, candidates=[("region", "LATAM")],
                          primary="region")  # fmt: skip
    small = next(f for f in report.findings if f.value == "LATAM00")
    assert small.field == "entity" and small.reading == INVESTIGATE and small.local.n == 12
    assert small.more_cross_audits and "more cross audits in entity LATAM00 would decide it" in small.sentence
    assert report.reading("entity", "LATAM01") is None
    # Not drilled into where its region is not reported.
    alone = audit_report(frame, ["region", "entity"], 0.05, BANDS, primary="region")
    assert alone.reading("region", "LATAM") is None and alone.reading("entity", "LATAM00") is None


# -- the headline ---------------------------------------------------------------------------------


def _verdicts(frame: pd.DataFrame) -> tuple[dict[str, Any], str]:
    evidence = assess(
        load_contract("routing"), 0.05, frame, frame, frame, MonitorSettings(), DriftConfig(), drift=False
    )
    verdicts = checks.evaluate(evidence, MonitorSettings())
    return {v.check: v for v in verdicts}, checks.recommendation(verdicts)


def test_no_retrain_headline_without_separating_evidence() -> None:
    # EMEA's local reviewers overturn 30%, nobody from outside has looked: concept and process
    # drift both fire, and the headline must say investigate.
    data: list[dict[str, Any]] = []
    for region in REGIONS:
        data += rows(region, 600, 180 if region == "EMEA" else 30, None, None)
    verdicts, headline = _verdicts(pd.DataFrame(data))
    assert verdicts["concept_drift"].status == "warn", verdicts["concept_drift"]
    assert "a local review practice and a changed rule look the same: investigate" in (
        verdicts["concept_drift"].detail
    )
    assert verdicts["practice_vs_rule"].status == "no_data"
    assert not headline.startswith("retrain") and headline.startswith("investigate"), headline


def test_cross_evidence_decides_the_headline_both_ways() -> None:
    practice, headline = _verdicts(audited_window(emea_local=120, emea_cross=3))
    assert practice["practice_vs_rule"].status == "warn"
    assert "review practice" in practice["practice_vs_rule"].detail
    assert not headline.startswith("retrain"), headline
    rule, headline = _verdicts(audited_window(emea_local=120, emea_cross=18))
    assert rule["practice_vs_rule"].status == "alert"
    assert headline.startswith("retrain"), headline
    assert rule["concept_drift"].status == "alert"  # cross evidence backs the concept alert


def test_reviewed_accuracy_says_retrain_only_with_cross_evidence_of_a_wrong_model() -> None:
    """EMEA's local reviewers overturn 90% of their audits: accuracy on reviewed cases falls under
    the alert line either way; cross reviewers agreeing with the model make it a warning (a
    practice), cross reviewers overturning too make it the alert that says retrain."""
    practice, headline = _verdicts(audited_window(emea_local=360, emea_cross=3))
    assert (practice["reviewed_accuracy"].value or 1.0) < MonitorSettings().reviewed_accuracy[1]
    assert practice["reviewed_accuracy"].status == "warn", practice["reviewed_accuracy"]
    assert "local review practice" in practice["reviewed_accuracy"].detail
    assert not headline.startswith("retrain"), headline
    rule, headline = _verdicts(audited_window(emea_local=360, emea_cross=50))
    assert rule["reviewed_accuracy"].status == "alert" and headline.startswith("retrain"), headline


def test_new_checks_are_registered_in_order_and_judged() -> None:
    names = [c.name for c in checks.registered()]
    assert names.index("audited_error") + 1 == names.index("practice_vs_rule")
    verdicts, _ = _verdicts(audited_window(emea_local=20, emea_cross=3))
    assert verdicts["practice_vs_rule"].status == "ok"
    audited = verdicts["audited_error"]
    assert audited.status == "ok" and "estimated from 1840 audited decided cases" in audited.detail


# -- stated detection limits ------------------------------------------------------------------------


def _region_frame(
    rng: np.random.Generator, emea_rate: float, base: float = 0.06, n: int = 300
) -> pd.DataFrame:
    """Reviewed decided cases, `n` per region in two score bands; overrides drawn at random."""
    data = []
    for region in REGIONS:
        rate = emea_rate if region == "EMEA" else base
        for band_conf in (0.85, 0.93):
            k = int(rng.binomial(n // 2, rate))
            data += rows(region, n // 2, k, None, None, confidence=band_conf)
    return pd.DataFrame(data)


def test_stated_process_drift_limit_is_reached_by_the_check_itself() -> None:
    """The stated limit for EMEA, from a window without drift, is detected by process_drift in at
    least 90% of windows drifting by that much (less a binomial allowance), and in clearly fewer
    at half the increase."""
    rng = np.random.default_rng(3)
    settings = MonitorSettings()
    base = 0.06

    def run(frame: pd.DataFrame) -> Any:
        return process_drift(frame, ["region"], BANDS, alpha=settings.process_drift_p, primary="region")

    quiet = run(_region_frame(rng, base))
    evidence_limits = detection_limits(
        quiet, concept_by_segment(pd.DataFrame(), [], None, 0.05), _empty_overrides(), "region", 0.8, 0.08,
        0.01,
    )  # fmt: skip
    (emea,) = [d for d in evidence_limits if d.check == "process_drift" and d.value == "EMEA"]
    assert emea.ratio is not None and 1.5 < emea.ratio < 6
    assert emea.sentence == f"a {emea.ratio:.1f}x override increase in region EMEA"
    draws = 200

    def detected(ratio: float) -> int:
        hits = 0
        for _ in range(draws):
            report = run(_region_frame(rng, base * ratio))
            hits += any(f.value == "EMEA" and f.significant for f in report.findings)
        return hits

    at_limit = detected(emea.ratio)
    assert at_limit >= binom.ppf(0.001, draws, 0.9), at_limit
    assert detected(1 + (emea.ratio - 1) / 2) < at_limit - 30  # half the increase


def test_stated_concept_limit_is_reached_by_the_exact_test() -> None:
    rng = np.random.default_rng(5)
    n, tolerated, level, draws = 200, 0.1, 0.01 / 4, 300
    rate = min_detectable_error(n, tolerated, level)
    assert rate is not None and tolerated < rate < 0.25
    hits = 0
    for _ in range(draws):
        data = [
            r
            for region in REGIONS
            for r in rows(region, n, int(rng.binomial(n, rate if region == "EMEA" else 0.05)), None, None)
        ]
        report = concept_by_segment(pd.DataFrame(data), ["region"], 0.05, 0.05, level=0.01)  # fmt: skip
        hits += any(f.value == "EMEA" and f.significant for f in report.findings)
    assert hits >= binom.ppf(0.001, draws, 0.9), hits


def _empty_overrides() -> Any:
    from keel.monitoring.overrides import override_report

    return override_report(
        pd.DataFrame(rows("NA", 0, 0, None, None), columns=list(rows("NA", 1, 0, None, None)[0])), []
    )


def test_report_and_summary_carry_audit_estimates_and_limits(tmp_path: Any) -> None:
    import json

    from keel.monitoring.report import ReportSections, write_report

    frame = audited_window(emea_local=120, emea_cross=3)
    evidence = assess(
        load_contract("routing"), 0.05, frame, frame, frame, MonitorSettings(), DriftConfig(), drift=False
    )
    verdicts = checks.evaluate(evidence, MonitorSettings())
    assert evidence.audit is not None
    sections = ReportSections(
        verdicts=verdicts,
        recommendation=checks.recommendation(verdicts),
        audit=evidence.audit.to_dict(),
        detection_limits=[d.to_dict() for d in evidence.limits],
    )
    paths = write_report(tmp_path, "routing", sections)
    summary = json.loads(paths.summary_json.read_text())
    assert summary["audit"]["n_audited"] == 1840 and summary["audit"]["findings"][0]["reading"] == PRACTICE
    regions = {(d["check"], d["value"]) for d in summary["detection_limits"] if d["field"] == "region"}
    assert {("process_drift", r) for r in REGIONS} <= regions
    assert {("concept_drift", r) for r in REGIONS} <= regions
    assert {("override_rate", r) for r in REGIONS} <= regions
    page = paths.index_html.read_text()
    assert "What this window could detect" in page and "override increase in region APAC" in page
    assert "region EMEA: review practice" in page


def test_sequential_mixture_is_tuned_to_the_planned_ratio() -> None:
    import math

    from keel.monitoring.sequential import e_value

    assert MonitorSettings().mixture_rho() == 0.5  # unset: the stored design stays as it was
    tuned = MonitorSettings(sequential_detect_ratio=3.0)
    assert tuned.mixture_rho() == pytest.approx(math.log(3.0) ** 2)
    # Evidence of a 3x difference (S = theta V, theta = log 3) grows faster under the tuned mixture.
    v = 20.0
    s = math.log(3.0) * v
    assert e_value(s, v, tuned.mixture_rho()) > e_value(s, v, MonitorSettings().mixture_rho())


def test_more_cross_audits_is_statsmodels_one_sample_power_and_never_nan() -> None:
    """Where statsmodels' root finder converges the answer is its; where it returns NaN (a huge
    effect: local reviewers overturn everything, nobody else anything) the count is still a number."""
    import math
    import warnings

    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    from keel.monitoring.audit import DECIDING_POWER

    for local, base, level in [(0.3, 0.05, 0.01), (0.5, 0.1, 0.002), (0.2, 0.07, 0.0005)]:
        effect = abs(float(proportion_effectsize(max(local, 2 * base), base)))
        n = NormalIndPower().solve_power(
            effect_size=effect, nobs1=None, alpha=level, power=DECIDING_POWER, ratio=0.0, alternative="larger"
        )
        assert more_cross_audits(local, base, 0, level) == math.ceil(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' ConvergenceWarning, the case at hand
        effect = abs(float(proportion_effectsize(0.999, 0.001)))
        assert math.isnan(
            NormalIndPower().solve_power(
                effect_size=effect,
                nobs1=None,
                alpha=0.01,
                power=DECIDING_POWER,
                ratio=0.0,
                alternative="larger",
            )
        )
    assert more_cross_audits(0.999, 0.001, 0, 0.01) == 2  # ((z_0.01 + z_power) / h)^2 = 1.4
