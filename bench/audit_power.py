"""Benchmark of issue 23's audit families: practice vs rule, stated detection limits, allocation.

Windows come from `bench.drift_power`'s pools (decided by Keel's own decider into a real SQLite
log and read back as the monitor reads them); reviewers audit at random as Keel's audit plans do.

- practice vs rule: decided cases audited at random (local 25%, cross 5%, every abstention
  reviewed); one region's local reviewers override 5x (a practice) or the outcome rule changes on
  30% of the region's cases (both pools see it), and a rule change in one small entity; correct
  when the monitor's reading (`monitoring.audit`) names the truth ("investigate" is not correct;
  for the small entity "investigate" with the cross audits needed counts, "review practice" never
  does); the headline is recorded beside it;
- limit calibration: per window, the process-drift check's stated detection limit for the region
  (`monitoring.detection`), then the same window's reviewers drifting by that ratio and by half
  the increase: the detection rates at each;
- allocation: the same number of reviews spread uniformly (30% of decided cases) or planned by
  `keel audit plan`'s own planner (`monitoring.allocation.allocate`, from the regions' volumes and
  override rates in a planning window) to equalise the regions' detection limits; the worst
  region's stated limit under each, and the ceiling no allocation can beat given region shares.

    python -m bench.audit_power [--quick] [--models routing ...] [--cases 3000] [--audit-reps 50]
        [--calibration-windows 200] [--families practice_vs_rule limit_calibration allocation]

`python -m bench.drift_power --families ...` runs the same families beside the others.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

from bench.drift_power import (
    ALARM,
    AUDIT_FAMILIES,
    OVERRIDE_REGION,
    REVIEW_SHARE,
    Setup,
    draw,
    get,
    rate,
    reviewed_frame,
    rule_change,
)

__all__ = ["audit_families", "audit_targets", "main"]

AUDIT_LOCAL = 0.25  # audit families: local audit probability of a decided case
AUDIT_CROSS = 0.05  # cross audits: at most 5% of decided cases (the budget)


def reviews(
    window: pd.DataFrame,
    setup: Setup,
    rng: np.random.Generator,
    local_p: np.ndarray | float,
    cross_p: float = 0.0,
    practice: tuple[str, str, float] | None = None,
    audit: bool = True,
) -> pd.DataFrame:
    """Reviewers on the window as `LogReader.reviewed` returns it, audit columns included: every
    abstention labelled; each decided case audited by a cross reviewer with probability `cross_p`,
    else by a local one with `local_p` (per case or one number). Reviewers are right
    `REVIEWER_ACCURACY` of the time; `practice` = (field, value, ratio): that value's *local*
    reviewers override `ratio` times as often in the same score bands (cross reviewers do not)."""
    from keel.cli.simulate import REVIEWER_ACCURACY
    from keel.monitoring.log_reader import AUDIT_COLUMNS, REVIEWED_COLUMNS

    classes = list(setup.contract.classes)
    n = len(window)
    decided = ~window["abstained"].to_numpy(dtype=bool)
    # Every case's draws are made whether or not it is looked at, so two review designs given the
    # same seed judge the cases both look at alike (common random numbers: the allocation family
    # compares uniform and planned review on one set of verdicts, not on two reviewers' luck).
    u, slip_u, flip_u = rng.random(n), rng.random(n), rng.random(n)
    pick, pick_again = rng.integers(0, max(len(classes) - 1, 1), (2, n))
    local_p = np.broadcast_to(np.asarray(local_p, dtype=float), (n,))
    cross = decided & (u < cross_p)
    local = decided & ~cross & (u < cross_p + local_p)
    look = cross | local | ~decided
    rows = window[look].copy()
    cross, local, decided = cross[look], local[look], decided[look]
    slip_u, flip_u, pick, pick_again = slip_u[look], flip_u[look], pick[look], pick_again[look]
    truth = rows["truth"].astype(object).to_numpy()
    final = truth.copy()
    for i in np.flatnonzero(slip_u >= REVIEWER_ACCURACY):
        final[i] = [c for c in classes if c != truth[i]][pick[i]]
    outcome = rows["outcome"].astype(object).to_numpy()
    if practice is not None:
        fld, value, ratio = practice
        conf = rows["confidence"].to_numpy(dtype=float)
        base = np.clip((1.0 - conf) * REVIEWER_ACCURACY + conf * (1.0 - REVIEWER_ACCURACY), 0.005, 0.99)
        extra = np.clip((ratio - 1.0) * base / (1.0 - base), 0.0, 1.0)
        mine = rows[fld].astype(str).to_numpy() == value
        flip = mine & local & (final == outcome) & (flip_u < extra)
        for i in np.flatnonzero(flip):
            final[i] = [c for c in classes if c != final[i]][pick_again[i]]
    kind = np.where(~decided, "label", np.where(final == outcome, "confirmation", "override"))
    selected = (cross | local) & audit
    rows = rows.assign(
        final_outcome=final, kind=kind, reason="bench", actor="bench-reviewer",
        audit_selected=selected,
        audit_probability=np.where(selected, cross_p + local_p[look], np.nan),
        audit_pool=np.where(cross, "cross", np.where(local, "local", np.array(None, dtype=object))),
        reviewer_pool=np.where(cross, "cross", np.where(selected, "local", np.array(None, dtype=object))),
        reviewer_segment=None,
    )  # fmt: skip
    return rows[[*REVIEWED_COLUMNS, *AUDIT_COLUMNS, *setup.contract.segment_fields]].reset_index(drop=True)


def _evidence(setup: Setup, window: pd.DataFrame, reviewed: pd.DataFrame) -> tuple[Any, str]:
    from keel.monitoring import checks
    from keel.monitoring.drift import DriftConfig
    from keel.monitoring.monitor import assess
    from keel.monitoring.settings import MonitorSettings

    settings = MonitorSettings()
    ev = assess(setup.contract, setup.alpha, setup.reference, window, reviewed, settings, DriftConfig(),
                drift=False)  # fmt: skip
    return ev, checks.recommendation(checks.evaluate(ev, settings))


def _verdicts_of(ev: Any) -> list[Any]:
    from keel.monitoring import checks
    from keel.monitoring.settings import MonitorSettings

    return checks.evaluate(ev, MonitorSettings())


def practice_ceiling(
    reviewed: pd.DataFrame, region: str, ratio: float, level: float, draws: int = 4000
) -> float:
    """Power of the most powerful reading of the window's cross audits in `region` as a practice,
    with every rate known: Neyman–Pearson between "cross reviewers overturn like the local ones"
    (ratio x base per case, a changed rule) and "like reviewers elsewhere" (base), misreading a
    rule at most `level`. A ceiling for any procedure, which must estimate those rates."""
    from keel.cli.simulate import REVIEWER_ACCURACY

    mine = reviewed[(reviewed["region"].astype(str) == region) & (reviewed["audit_pool"] == "cross")]
    if mine.empty:
        return 0.0
    conf = mine["confidence"].to_numpy(dtype=float)
    base = np.clip((1.0 - conf) * REVIEWER_ACCURACY + conf * (1.0 - REVIEWER_ACCURACY), 0.005, 0.99)
    local = np.minimum(ratio * base, 0.999)
    weight = np.log(local / base) - np.log((1 - local) / (1 - base))
    own = np.random.default_rng(len(mine))  # its own stream: the windows stay as they were
    under_rule = (own.random((draws, len(mine))) < local) @ weight
    under_practice = (own.random((draws, len(mine))) < base) @ weight
    cut = np.sort(under_rule)[int(level * draws)]
    # Ties at the cut count against the practice reading (a level-`level` test without randomising).
    if np.mean(under_rule <= cut) > level:
        cut = np.nextafter(cut, -np.inf)
    return float(np.mean(under_practice <= cut))


def practice_vs_rule_family(setup: Setup, cases: int, reps: int, rng: np.random.Generator) -> dict[str, Any]:
    """Classification of a 5x local practice and a 30% rule change in one region, and of a rule
    change in one small entity, from audits (local 25%, cross <= 5% of decided cases)."""
    from keel.monitoring.audit import INVESTIGATE, PRACTICE, RULE
    from keel.monitoring.settings import MonitorSettings

    none = setup.pools["none"]
    region = OVERRIDE_REGION
    practice_level = MonitorSettings().practice_reading_p
    out: dict[str, Any] = {"local_audit_p": AUDIT_LOCAL, "cross_audit_p": AUDIT_CROSS}
    for scenario, truth in (("practice_x5", PRACTICE), ("rule_30pct", RULE)):
        readings, headlines, cross_share, ceiling = [], [], [], []
        for _ in range(reps):
            window = draw(none, cases, rng)
            if scenario == "rule_30pct":
                window = rule_change(window, setup, "region", region, 0.3, rng)
                reviewed = reviews(window, setup, rng, AUDIT_LOCAL, AUDIT_CROSS)
            else:
                reviewed = reviews(window, setup, rng, AUDIT_LOCAL, AUDIT_CROSS, ("region", region, 5.0))
                ceiling.append(practice_ceiling(reviewed, region, 5.0, practice_level))
            ev, headline = _evidence(setup, window, reviewed)
            readings.append(ev.audit.reading("region", region))
            headlines.append(headline)
            decided = int((~window["abstained"].astype(bool)).sum())
            cross_share.append(ev.audit.n_audited_cross / max(decided, 1))
        out[f"region {region} {scenario}"] = {
            "truth": truth,
            "correct": rate(sum(r == truth for r in readings), reps),
            "investigate": rate(sum(r == INVESTIGATE for r in readings), reps),
            "readings": {str(r): readings.count(r) for r in set(readings)},
            "headline_retrain": rate(sum(h.startswith("retrain") for h in headlines), reps),
            "mean_cross_audits_share_of_decided": round(float(np.mean(cross_share)), 4),
        }
        if ceiling:
            # What no reading of the same cross audits can beat at the practice reading's level.
            out[f"region {region} {scenario}"]["ceiling_known_rates"] = round(float(np.mean(ceiling)), 3)
    # No drift, audited: false alarms of the audit checks (and of any check on reviews).
    statuses: dict[str, list[bool]] = defaultdict(list)
    for _ in range(reps):
        window = draw(none, cases, rng)
        ev, headline = _evidence(setup, window, reviews(window, setup, rng, AUDIT_LOCAL, AUDIT_CROSS))
        for v in _verdicts_of(ev):
            statuses[v.check].append(v.status in ALARM)
        statuses["headline_retrain"].append(headline.startswith("retrain"))
    out["no_drift_audited_false_alarms"] = {c: rate(sum(x), len(x)) for c, x in sorted(statuses.items())}
    if "entity" in none.frame:
        shares = none.frame["entity"].astype(str).value_counts(normalize=True)
        entity = str((shares - 0.05).abs().idxmin())
        ok, practice_said, region_only, asks = 0, 0, 0, []
        for _ in range(reps):
            window = rule_change(draw(none, cases, rng), setup, "entity", entity, 0.3, rng)
            ev, _ = _evidence(setup, window, reviews(window, setup, rng, AUDIT_LOCAL, AUDIT_CROSS))
            found = {(f.field, f.value): f for f in ev.audit.findings}
            mine = found.get(("entity", entity))
            parent = ev.parents.get(("entity", entity))
            said = [f.reading for k, f in found.items() if k in (("entity", entity), parent)]
            practice_said += PRACTICE in said
            region_only += mine is None and parent in found
            if mine is not None and (
                mine.reading == RULE or (mine.reading == INVESTIGATE and mine.more_cross_audits)
            ):
                ok += 1
                if mine.more_cross_audits:
                    asks.append(mine.more_cross_audits)
        out[f"entity {entity} rule_30pct"] = {
            "entity_share": round(float(shares[entity]), 4),
            "attributed_or_investigate_with_count": rate(ok, reps),
            "said_review_practice": rate(practice_said, reps),
            # Windows the region holding the entity was reported but the entity itself was not
            # (the rest: nothing reported there at all, a quiet window).
            "only_its_region_reported": rate(region_only, reps),
            "median_more_cross_audits_asked": float(np.median(asks)) if asks else None,
        }
    return out


def limit_calibration(setup: Setup, cases: int, windows: int, rng: np.random.Generator) -> dict[str, Any]:
    """Per window: the process-drift check's stated limit for the region, then detection at it
    and at half the increase, by the check's own test on the same window's cases."""
    from keel.monitoring.detection import detection_limits
    from keel.monitoring.overrides import override_report
    from keel.monitoring.process_drift import process_drift
    from keel.monitoring.segments import concept_by_segment
    from keel.monitoring.settings import MonitorSettings

    s = MonitorSettings()
    none = setup.pools["none"]
    segments = setup.contract.segment_fields

    def run(reviewed: pd.DataFrame) -> Any:
        return process_drift(reviewed, segments, s.score_bands, alpha=s.process_drift_p,
                             primary="region", primary_share=s.primary_share)  # fmt: skip

    def flagged(report: Any) -> bool:
        return any(f.value == OVERRIDE_REGION and f.field == "region" and f.significant
                   and (f.rate_ratio or 0) >= s.process_drift_ratio[0] for f in report.findings)  # fmt: skip

    stated, at, half = [], 0, 0
    for _ in range(windows):
        window = draw(none, cases, rng)
        null = run(reviewed_frame(window, setup, rng))
        empty = concept_by_segment(window.iloc[:0], [], None, 0.0)
        limits = detection_limits(null, empty, override_report(window.iloc[:0].assign(kind=None), []),
                                  "region", s.primary_share, s.override_rate[0], s.concept_p)  # fmt: skip
        ratio = next((d.ratio for d in limits if d.field == "region" and d.value == OVERRIDE_REGION), None)
        if ratio is None:
            continue
        stated.append(ratio)
        at += flagged(run(reviewed_frame(window, setup, rng, ratio)))
        half += flagged(run(reviewed_frame(window, setup, rng, 1 + (ratio - 1) / 2)))
    return {
        "check": "process_drift",
        "region": OVERRIDE_REGION,
        "windows": len(stated),
        "mean_stated_ratio": round(float(np.mean(stated)), 3) if stated else None,
        "detected_at_stated": rate(at, len(stated)),
        "detected_at_half_the_increase": rate(half, len(stated)),
    }


def allocation(setup: Setup, cases: int, reps: int, rng: np.random.Generator) -> dict[str, Any]:
    """Uniform review (REVIEW_SHARE of decided cases) vs `keel audit plan`'s planner
    (`monitoring.allocation.allocate`) at the same share of decided cases, planned for the
    process-drift check's per-region level and power on one window."""
    from keel.monitoring.allocation import allocate, detectable_ratio, expected_override_rates, value_level
    from keel.monitoring.detection import POWER, detection_limits
    from keel.monitoring.overrides import override_report
    from keel.monitoring.process_drift import process_drift
    from keel.monitoring.segments import concept_by_segment
    from keel.monitoring.settings import MonitorSettings

    s = MonitorSettings()
    none = setup.pools["none"]
    segments = setup.contract.segment_fields
    decided = none.frame[~none.frame["abstained"].astype(bool)]
    shares = decided["region"].astype(str).value_counts(normalize=True)
    total = round(cases * len(decided) / len(none.frame))
    level = value_level(s.process_drift_p, len(shares), True, s.primary_share)
    # The plan reads each region's expected override rate from history (here: the whole pool
    # reviewed once by `keel simulate`'s reviewer, on its own random stream), as `keel audit plan`
    # reads the last window's reviews from the log; one window's rates are too noisy to plan on.
    history = reviewed_frame(none.frame, setup, np.random.default_rng(len(none.frame)))
    base, _, _ = expected_override_rates(history, "region", s.score_bands)
    sizes = {str(v): float(sh * total) for v, sh in shares.items()}
    plan = allocate(sizes, base, 1.5, 1, POWER, level, budget=REVIEW_SHARE)
    probs = {c.value: c.probability for c in plan.cells}
    uniform = dict.fromkeys(sizes, REVIEW_SHARE)
    uniform_worst = max(detectable_ratio(sizes, uniform, v, base, 1, level, POWER) for v in sizes)
    planned_worst = max(c.detectable_ratio for c in plan.cells)
    measured: dict[str, list[float]] = {"uniform": [], "planned": []}
    per_region: dict[str, dict[str, list[float]]] = {
        "uniform": defaultdict(list),
        "planned": defaultdict(list),
    }
    for _ in range(reps):
        window = draw(none, cases, rng)
        p_row = window["region"].astype(str).map(probs).fillna(REVIEW_SHARE).to_numpy(dtype=float)
        seed = int(rng.integers(2**63))  # one set of verdicts per window for both designs
        for name, p in (("uniform", REVIEW_SHARE), ("planned", p_row)):
            reviewed = reviews(window, setup, np.random.default_rng(seed), p, audit=False)
            report = process_drift(reviewed, segments, s.score_bands, alpha=s.process_drift_p,
                                   primary="region", primary_share=s.primary_share)  # fmt: skip
            limits = detection_limits(report, concept_by_segment(window.iloc[:0], [], None, 0.0),
                                      override_report(window.iloc[:0].assign(kind=None), []), "region",
                                      s.primary_share, s.override_rate[0], s.concept_p)  # fmt: skip
            stated = {
                d.value: d.ratio or math.inf
                for d in limits
                if d.check == "process_drift" and d.field == "region"
            }
            # A region with too few reviews to be tested at all can see nothing.
            measured[name].append(max(stated.get(v, math.inf) for v in sizes))
            for v in sizes:
                per_region[name][v].append(stated.get(v, math.inf))
    # Windows where uniform review leaves a region untestable (fewer reviewed cases than process
    # drift needs) are counted apart: no ratio to a blind spot.
    both = [(p, u) for p, u in zip(measured["planned"], measured["uniform"], strict=True) if math.isfinite(u)]
    ratio = [p / u for p, u in both]
    # The worst region of the mean limits: a plan is for the region that is worst on average,
    # while the per-window worst also picks whichever region's base rate was unlucky that window.
    finite = [i for i, u in enumerate(measured["uniform"]) if math.isfinite(u)]
    worst_mean = {
        k: max(float(np.mean([x[i] for i in finite])) if finite else math.inf for x in per_region[k].values())
        for k in per_region
    }
    return {
        "reviews_per_window": round(REVIEW_SHARE * total),
        "region_shares_of_decided": {v: round(float(x), 4) for v, x in shares.items()},
        "planned_review_probability": {v: round(p, 4) for v, p in probs.items()},
        "mean_worst_region_limit_uniform": round(float(np.mean([u for _, u in both])), 3) if both else None,
        "mean_worst_region_limit_planned": round(float(np.mean([p for p, _ in both])), 3) if both else None,
        "windows_uniform_leaves_a_region_untestable": len(measured["uniform"]) - len(both),
        "windows_planned_leaves_a_region_untestable": sum(not math.isfinite(p) for p in measured["planned"]),
        "worst_region_limit_ratio_planned_over_uniform": round(float(np.mean(ratio)), 3) if ratio else None,
        "mean_limit_per_region": {
            k: {
                v: round(float(np.mean([x[i] for i in finite])), 3) if finite else None
                for v, x in per_region[k].items()
            }
            for k in per_region
        },
        "worst_region_of_mean_limits_ratio": round(worst_mean["planned"] / worst_mean["uniform"], 3)
        if math.isfinite(worst_mean["uniform"])
        else None,
        "planned_share_of_decided": round(plan.audited_share, 4),
        "planner_worst_region_limit": {
            "uniform": round(uniform_worst, 3),
            "planned": round(planned_worst, 3),
        },
        # What equalising the regions' limits buys at this budget, by the planner's own power
        # equation: no allocation of the same reviews does better on the worst region.
        "minimax_ceiling_ratio": round(planned_worst / uniform_worst, 3),
    }


def audit_families(
    setup: Setup, cases: int, args: argparse.Namespace, rng: np.random.Generator
) -> dict[str, Any]:
    reps = args.audit_reps or (10 if args.quick else 50)
    windows = args.calibration_windows or (40 if args.quick else 200)
    out: dict[str, Any] = {}
    if "practice_vs_rule" in args.families:
        out["practice_vs_rule"] = practice_vs_rule_family(setup, cases, reps, rng)
    if "limit_calibration" in args.families:
        out["limit_calibration"] = limit_calibration(setup, cases, windows, rng)
    if "allocation" in args.families:
        out["allocation"] = allocation(setup, cases, reps, rng)
    return out


def audit_targets(r: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets for the audit families of one model's result (None: not run)."""
    return {
        "practice_x5_classified>=0.9": get(
            r, "practice_vs_rule", f"region {OVERRIDE_REGION} practice_x5", "correct", "rate"
        ),
        "rule_30pct_classified>=0.9": get(
            r, "practice_vs_rule", f"region {OVERRIDE_REGION} rule_30pct", "correct", "rate"
        ),
        "detected_at_stated_limit>=0.85": get(r, "limit_calibration", "detected_at_stated", "rate"),
        "detected_at_half_the_increase_clearly_lower": get(
            r, "limit_calibration", "detected_at_half_the_increase", "rate"
        ),
        "planned_vs_uniform_worst_limit<=0.8_or_ceiling": get(
            r, "allocation", "worst_region_limit_ratio_planned_over_uniform"
        ),
        "planned_vs_uniform_worst_of_mean_limits": get(r, "allocation", "worst_region_of_mean_limits_ratio"),
        "minimax_ceiling": get(r, "allocation", "minimax_ceiling_ratio"),
    }


def main() -> int:
    from bench.drift_power import parser, run

    return run(parser(AUDIT_FAMILIES, __doc__.splitlines()[0]).parse_args())


if __name__ == "__main__":
    sys.exit(main())
