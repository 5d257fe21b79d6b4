"""Benchmark: detection power and false alarms of every monitoring check, with Clopper–Pearson
intervals, on windows decided by Keel's own decider and written by its own log writer.

Per model, a pool of generated cases per scenario (none, covariate_shift) is decided once
through `serving.decider.Decider` into a real SQLite decision log and read back with
`LogReader.sample`, so windows carry exactly what the monitor reads. Each repetition draws a
fresh window of `--cases` decisions from a pool (without replacement; weighted for a mix shift),
applies the perturbation and `keel simulate`'s reviewer (every abstention and 30% of decided
cases, reviewers right 98% of the time), and runs `monitoring.monitor.assess` + its verdicts,
the same code `keel monitor` runs. Reusing a pool is sound for these checks because every
repetition draws its own window and its own reviewer randomness; windows of one pool share
cases, which correlates repetitions (the intervals assume independence; the pool is 5x a
window, 2x for the covariate shift). Perturbation families:

- no drift: every check's false alarms, the window's decided cases reviewed as Keel's audits
  select them (25% by local and 5% by cross reviewers, every abstention labelled), so the checks
  on audit estimates are judged with the others;
- numeric covariate shift: the generator's covariate_shift scenario (inputs move) at full size;
- categorical mix: one value of a segment field drawn `ratio` times as often (share x ratio);
- segment overrides: one region's reviewers override `ratio` times as often in the same score
  bands (extra overrides of decided cases with probability set from the calibrated confidence);
- concept change: the true outcome changes to another class on `share` of one entity's cases;
- sequential: consecutive non-overlapping windows, 2x regional overrides vs none, evidence
  folded by `monitoring.sequential` exactly as successive monitor runs fold it;
- the audit families (issue 23: practice vs rule, limit calibration, allocation) live in
  `bench.audit_power`, which runs them alone; `--families` reaches them from here too.

Beside the override families stands a ceiling (`oracle`): one one-sided CMH test of the drifted
region on the same reviewed cases, as if the region were known in advance, at the check's whole
alpha and at the share one region gets. No procedure at that alpha that must also find the
region does much better, so a target above the ceiling asks more than the window holds.

    python -m bench.drift_power [--quick] [--models routing ...] [--cases 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ALARM = ("warn", "alert")
FAMILIES = ("no_drift", "covariate", "mix", "overrides", "concept", "sequential",
            "practice_vs_rule", "limit_calibration", "allocation")  # fmt: skip
AUDIT_FAMILIES = ("practice_vs_rule", "limit_calibration", "allocation")
DRIFT_CHECKS = frozenset({"feature_drift", "important_feature_drift", "outcome_shift", "abstention_rate",
                          "policy_interventions", "explanation_drift"})  # fmt: skip
REVIEW_SHARE = 0.3  # keel simulate's default: every abstention, 30% of decided cases
OVERRIDE_REGION = "EMEA"


@dataclass
class Pool:
    frame: pd.DataFrame
    """Logged decisions in the monitoring frame shape, plus `truth`."""


@dataclass
class Setup:
    model: str
    contract: Any
    alpha: float
    reference: pd.DataFrame
    pools: dict[str, Pool]


def clopper_pearson(k: int, n: int) -> list[float]:
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(k, n, alpha=0.05, method="beta")
    return [round(float(low), 4), round(float(high), 4)]


def rate(k: int, n: int) -> dict[str, Any]:
    return {"detected": k, "runs": n, "rate": round(k / n, 4) if n else None, "ci95": clopper_pearson(k, n)}


def prepare(home: Path, models: list[str], train_rows: int, pool: dict[str, int], seed: int) -> list[Setup]:
    """Train and register each model, decide its pools through the Decider into SQLite logs."""
    os.environ["KEEL_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from keel.cli.simulate import case_payloads
    from keel.decision_log import DecisionLog
    from keel.decision_log.database import Database
    from keel.feature_defs.policy import load_policy
    from keel.models import registry
    from keel.models.frames import reference_frame
    from keel.monitoring.log_reader import LogReader
    from keel.serving.decider import Decider
    from keel.serving.metrics import Metrics
    from keel.serving.model_set import ModelSet
    from keel.serving.settings import ServingSettings
    from keel.settings import StateSettings, prepare_state
    from keel.training.generators import generate
    from keel.training.registration import train_and_register
    from keel.training.settings import TrainingSettings

    state = prepare_state(StateSettings())
    settings = TrainingSettings(rows=train_rows, seed=seed)
    out = []
    for model in models:
        # A kept --home with this model's pools already logged is reused as it is (same seeds).
        reuse = registry.has_alias(model) and all((home / f"{model}-{s}.db").exists() for s in pool)
        # A training that certifies nothing is registered as challenger only (no champion, nothing
        # to monitor): the next training seed is tried, as a data scientist would retrain.
        for attempt in range(5 if not reuse else 0):
            seeded = settings.model_copy(update={"seed": settings.seed + attempt})
            train_and_register(model, generate(model, seeded.rows, seeded.seed), state, seeded)
            if registry.has_alias(model):
                break
        loaded = registry.load_alias(model, registry.CHAMPION, state.home_dir / "cache")
        contract = loaded.model.contract
        ref_rows = pd.read_parquet(loaded.model.bundle.path / "reference.parquet").iloc[:5000]
        reference = reference_frame(loaded.model, loaded.ref.version, ref_rows, load_policy(model))
        models_ = ModelSet("champion", state.home_dir / "cache", names=(model,))
        models_.reload()
        pools = {}
        for scenario, n in pool.items():
            url = f"sqlite:///{home}/{model}-{scenario}.db"
            everything = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
            if reuse:
                n = LogReader(Database(url)).summary(model, *everything).n_decisions
            frame = generate(model, n, seed + 101, scenario)
            if not reuse:
                log = DecisionLog(Database(url)).open()
                decider = Decider(models_, log, ServingSettings(), Metrics())
                cases = case_payloads(frame, contract)
                for lo in range(0, n, 1000):
                    decider.decide(model, cases[lo : lo + 1000], caller="bench")
                log.close()
            logged, _ = LogReader(Database(url)).sample(model, *everything, contract, n)
            # The sample is in logging order, which is the generated frame's order.
            logged["truth"] = frame[contract.target].astype(str).to_numpy()
            pools[scenario] = Pool(logged.reset_index(drop=True))
        out.append(Setup(model, contract, float(loaded.model.alpha), reference, pools))
    return out


def reviewed_frame(
    window: pd.DataFrame, setup: Setup, rng: np.random.Generator, override_ratio: float = 1.0
) -> pd.DataFrame:
    """`keel simulate`'s reviewer on the window, as `LogReader.reviewed` would return it."""
    from keel.cli.simulate import REVIEWER_ACCURACY, reviewer_verdicts
    from keel.monitoring.log_reader import REVIEWED_COLUMNS

    contract = setup.contract
    outcomes = [None if a else o for a, o in zip(window["abstained"], window["outcome"], strict=True)]
    verdicts = reviewer_verdicts(
        list(window["truth"]), outcomes, list(window["region"]), contract.classes, rng,
        feedback_share=REVIEW_SHARE, ordered=setup.model == "discount_band",
    )  # fmt: skip
    look = np.array([v is not None for v in verdicts])
    rows = window[look].copy()
    final = np.array([v.final_outcome for v in verdicts if v is not None], dtype=object)
    decided = ~rows["abstained"].to_numpy(dtype=bool)
    if override_ratio != 1.0:
        # Same score bands, `ratio` times the overrides: the base override probability of a decided
        # case is about (1 - confidence) (the model is calibrated), so confirmations in the region
        # are turned into overrides with the probability that lifts it to ratio x base.
        # Base: the model is wrong (1 - confidence) and the reviewer right, or the model right
        # and the reviewer slips; leaving the slips out would make "3x" only about 1.7x.
        conf = rows["confidence"].to_numpy(dtype=float)
        base = np.clip((1.0 - conf) * REVIEWER_ACCURACY + conf * (1.0 - REVIEWER_ACCURACY), 0.005, 0.99)
        extra = np.clip((override_ratio - 1.0) * base / (1.0 - base), 0.0, 1.0)
        region = rows["region"].astype(str).to_numpy() == OVERRIDE_REGION
        confirmed = final == rows["outcome"].astype(object).to_numpy()
        flip = region & decided & confirmed & (rng.random(len(rows)) < extra)
        classes = list(contract.classes)
        for i in np.flatnonzero(flip):
            others = [c for c in classes if c != final[i]]
            final[i] = others[int(rng.integers(len(others)))]
    outcome = rows["outcome"].astype(object).to_numpy()
    kind = np.where(~decided, "label", np.where(final == outcome, "confirmation", "override"))
    rows = rows.assign(final_outcome=final, kind=kind, reason="bench", actor="bench-reviewer")
    return rows[[*REVIEWED_COLUMNS, *contract.segment_fields]].reset_index(drop=True)


def draw(pool: Pool, n: int, rng: np.random.Generator, weights: np.ndarray | None = None) -> pd.DataFrame:
    p = None if weights is None else weights / weights.sum()
    picks = rng.choice(len(pool.frame), size=min(n, len(pool.frame)), replace=False, p=p)
    return pool.frame.iloc[np.sort(picks)].reset_index(drop=True)


def run_checks(
    setup: Setup, window: pd.DataFrame, reviewed: pd.DataFrame, drift: bool = True
) -> dict[str, str]:
    from keel.monitoring.drift import DriftConfig
    from keel.monitoring.monitor import _verdicts, assess
    from keel.monitoring.settings import MonitorSettings

    settings = MonitorSettings()
    cfg = DriftConfig(drift_share=settings.feature_drift_share[1])
    evidence = assess(
        setup.contract, setup.alpha, setup.reference, window, reviewed, settings, cfg, drift=drift
    )
    return {v.check: v.status for v in _verdicts(settings, evidence)}


def oracle_power(reviewed: list[pd.DataFrame], alpha: float, share: float) -> dict[str, Any]:
    """A ceiling for any procedure: one one-sided CMH test of the drifted region against all
    others, as if the region were known in advance, at the whole `alpha` and at the budget one
    region gets (`alpha * share / regions`); with the mean counts beside it. A level-alpha
    procedure that does not know the region cannot beat the first figure by much (the
    one-sided CMH test is the usual locally most powerful test for a common odds ratio)."""
    from keel.monitoring.process_drift import override_cells, versus_rest
    from keel.monitoring.settings import MonitorSettings

    bands = MonitorSettings().score_bands
    p_values, n, events, rest = [], [], [], []
    for frame in reviewed:
        cells = override_cells(frame, ["region"], bands)
        p_values.append(
            versus_rest("override_rate", cells, "region", OVERRIDE_REGION, len(bands) - 1).p_value
        )
        mine = cells["value"] == OVERRIDE_REGION
        n.append(int(cells["n"][mine].sum()))
        events.append(int(cells["events"][mine].sum()))
        rest.append(float(cells["events"][~mine].sum() / max(int(cells["n"][~mine].sum()), 1)))
    regions = max(1, int(reviewed[0]["region"].nunique())) if reviewed else 1
    budget = alpha * share / regions
    return {
        "known_region_test_at_alpha": rate(sum(p < alpha for p in p_values), len(p_values)),
        "known_region_test_at_one_region_budget": rate(sum(p < budget for p in p_values), len(p_values)),
        "alpha": alpha,
        "one_region_budget": round(budget, 5),
        "mean_reviewed_decided_in_region": round(float(np.mean(n)), 1),
        "mean_overrides_in_region": round(float(np.mean(events)), 1),
        "mean_override_rate_elsewhere": round(float(np.mean(rest)), 4),
    }


def rule_change(
    window: pd.DataFrame, setup: Setup, column: str, value: str, share: float, rng: np.random.Generator
) -> pd.DataFrame:
    """On `share` of the cases with `column` == `value` the true outcome becomes the next class."""
    classes = list(setup.contract.classes)
    hit = (window[column].astype(str) == value).to_numpy() & (rng.random(len(window)) < share)
    truth = window["truth"].to_numpy(dtype=object).copy()
    truth[hit] = [classes[(classes.index(t) + 1) % len(classes)] for t in truth[hit]]
    return window.assign(truth=truth)


def most_common(frame: pd.DataFrame, column: str, rank: int = 0) -> str:
    return str(frame[column].astype(str).value_counts().index[rank])


def single_window(
    setup: Setup,
    cases: int,
    reps: int,
    null_reps: int,
    drift_null_reps: int,
    drift_reps: int,
    rng: np.random.Generator,
    parts: Sequence[str] = FAMILIES,
) -> dict[str, Any]:
    from keel.monitoring.settings import MonitorSettings

    none = setup.pools["none"]
    out: dict[str, Any] = {}
    # No drift: false alarms per check and per run (any check warn or alert). The Evidently
    # checks cost seconds per window, so they run on the first `drift_null_reps` windows only.
    per_check: dict[str, list[bool]] = defaultdict(list)
    runs_all, runs_label = [], []
    from bench.audit_power import AUDIT_CROSS, AUDIT_LOCAL, reviews

    for i in range(null_reps if "no_drift" in parts else 0):
        window = draw(none, cases, rng)
        # Reviewed as audits select them (the same 30% of decided cases, local and cross), so
        # the checks on audit estimates (audited error, practice vs rule) are judged here too.
        reviewed = reviews(window, setup, rng, AUDIT_LOCAL, AUDIT_CROSS)
        statuses = run_checks(setup, window, reviewed, drift=i < drift_null_reps)
        for check, status in statuses.items():
            per_check[check].append(status in ALARM)
        label_only = {c: s for c, s in statuses.items() if c not in DRIFT_CHECKS}
        runs_label.append(any(s in ALARM for s in label_only.values()))
        if i < drift_null_reps:
            runs_all.append(any(s in ALARM for s in statuses.values()))
    out["no_drift"] = (
        {}
        if not runs_label
        else {
            "any_check_all_checks": rate(sum(runs_all), len(runs_all)),
            "any_check_without_evidently_checks": rate(sum(runs_label), len(runs_label)),
            "per_check": {c: rate(sum(v), len(v)) for c, v in sorted(per_check.items())},
        }
    )
    families: dict[str, dict[str, Any]] = defaultdict(dict)

    def record(
        family: str, strength: str, check: str, windows: list[tuple[pd.DataFrame, pd.DataFrame]], drift: bool
    ) -> None:
        hits = [run_checks(setup, w, r, drift) for w, r in windows]
        families[family][strength] = {
            "check": check,
            "target_check": rate(sum(h[check] in ALARM for h in hits), len(hits)),
            "any_check": rate(sum(any(s in ALARM for s in h.values()) for h in hits), len(hits)),
            "checks_run": "all" if drift else "all but the Evidently ones",
        }

    shifted = setup.pools.get("covariate_shift") if "covariate" in parts else None
    if shifted is not None:
        ws = [draw(shifted, cases, rng) for _ in range(drift_reps)]
        record("numeric_covariate_shift", "generator covariate_shift", "important_feature_drift",
               [(w, reviewed_frame(w, setup, rng)) for w in ws], True)  # fmt: skip
    field = "channel" if "channel" in none.frame else setup.contract.segment_fields[0]
    value = most_common(none.frame, field, rank=-1 if none.frame[field].nunique() > 2 else 1)
    for ratio in (1.5, 2.0) if "mix" in parts else ():
        weights = np.where(none.frame[field].astype(str) == value, ratio, 1.0)
        # Weighted draws give `value` share s*ratio/(1 + s*(ratio-1)); solve for "share x ratio".
        s = float((none.frame[field].astype(str) == value).mean())
        target = min(0.95, s * ratio)
        w = target * (1 - s) / (s * (1 - target))
        weights = np.where(none.frame[field].astype(str) == value, w, 1.0)
        ws = [draw(none, cases, rng, weights) for _ in range(reps)]
        record("categorical_mix", f"{field}={value} share x{ratio}", "segment_mix",
               [(w_, reviewed_frame(w_, setup, rng)) for w_ in ws], False)  # fmt: skip
    settings = MonitorSettings()
    for ratio in (2.0, 3.0) if "overrides" in parts else ():
        ws = [draw(none, cases, rng) for _ in range(reps)]
        pairs = [(w, reviewed_frame(w, setup, rng, ratio)) for w in ws]
        strength = f"region {OVERRIDE_REGION} x{ratio}"
        record("segment_overrides", strength, "process_drift", pairs, False)
        families["segment_overrides"][strength]["oracle"] = oracle_power(
            [r for _, r in pairs], settings.process_drift_p, settings.primary_share
        )
    entity = most_common(none.frame, "entity", rank=1) if "entity" in none.frame else None
    if entity is not None:
        for share in (0.1, 0.3) if "concept" in parts else ():
            ws = [
                rule_change(draw(none, cases, rng), setup, "entity", entity, share, rng) for _ in range(reps)
            ]
            record("concept_change", f"entity {entity} share {share}", "concept_drift",
                   [(w, reviewed_frame(w, setup, rng)) for w in ws], False)  # fmt: skip
    out["families"] = families
    return out


def sequential(
    setup: Setup, cases: int, reps: int, null_reps: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Evidence over consecutive windows, folded exactly as successive `keel monitor` runs do."""
    from keel.monitoring.sequential import SequentialState, chunk_statistics
    from keel.monitoring.settings import MonitorSettings

    s = MonitorSettings()
    none = setup.pools["none"]

    def first_alarm(ratio: float, windows: int) -> tuple[int | None, pd.DataFrame]:
        """The window of the first alarm (None: none), and every window's reviewed cases."""
        state = SequentialState(setup.model, "region", s.sequential_alpha, s.sequential_rho)
        seen, alarm = [], None
        for k in range(windows):
            reviewed = reviewed_frame(draw(none, cases, rng), setup, rng, ratio)
            seen.append(reviewed)
            state.add_chunk(chunk_statistics(reviewed, "region", s.score_bands), str(k), str(k + 1))
            if state.alarms and alarm is None:
                alarm = k + 1
                if ratio == 1.0:
                    break
        return alarm, pd.concat(seen, ignore_index=True)

    null = [first_alarm(1.0, 10)[0] for _ in range(null_reps)]
    out: dict[str, Any] = {
        "no_drift_false_alarm_within_10_windows": rate(sum(a is not None for a in null), null_reps)
    }
    for ratio in (2.0, 3.0):
        runs = [first_alarm(ratio, 3) for _ in range(reps)]
        hits = [a for a, _ in runs]
        out[f"region_x{ratio}_detected_within_3_windows"] = rate(sum(a is not None for a in hits), reps)
        out[f"region_x{ratio}_detected_within_1_window"] = rate(sum(a == 1 for a in hits), reps)
        # The fixed-sample ceiling: one test on all three windows at once, region known. An
        # anytime-valid test is also a valid test at the last window, so it cannot beat this.
        out[f"region_x{ratio}_oracle_fixed_sample_3_windows"] = oracle_power(
            [r for _, r in runs], s.sequential_alpha, 1.0
        )
    return out


def parser(families: Sequence[str] = FAMILIES, description: str | None = None) -> argparse.ArgumentParser:
    """The command line of this benchmark (and of `bench.audit_power`, whose default families differ)."""
    parser = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions (tests)")
    parser.add_argument("--models", nargs="+", default=["invoice_classification", "discount_band", "routing"])
    parser.add_argument("--cases", type=int, help="decisions per window (default 3000; quick 400)")
    parser.add_argument("--reps", type=int, help="repetitions per perturbation (default 20; quick 2)")
    parser.add_argument("--null-reps", type=int, help="no-drift repetitions (default 100; quick 3)")
    parser.add_argument(
        "--drift-null-reps",
        type=int,
        help="of those, how many also run the Evidently checks (default 20; quick 2)",
    )
    parser.add_argument(
        "--families",
        nargs="+",
        default=list(families),
        choices=FAMILIES,
        help=f"which parts to run (default {' '.join(families)})",
    )
    parser.add_argument("--drift-reps", type=int, help="repetitions of the covariate shift (default: --reps)")
    parser.add_argument(
        "--audit-reps", type=int, help="windows per audit family scenario (default 50; quick 10)"
    )
    parser.add_argument(
        "--calibration-windows",
        type=int,
        help="windows for the detection-limit calibration (default 200; quick 40)",
    )
    parser.add_argument("--train-rows", type=int, help="training rows per model (default 10000; quick 3000)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--home", help="state folder (default: a temporary one)")
    return parser


def main() -> int:
    return run(parser().parse_args())


def run(args: argparse.Namespace) -> int:
    """Prepare the models' pools, run the chosen families, print the JSON."""
    from bench.audit_power import audit_families, audit_targets

    cases = args.cases or (400 if args.quick else 3000)
    reps = args.reps or (2 if args.quick else 20)
    null_reps = args.null_reps or (3 if args.quick else 100)
    drift_null_reps = min(null_reps, args.drift_null_reps or (2 if args.quick else 20))
    train_rows = args.train_rows or (3000 if args.quick else 10_000)
    pool = {"none": 5 * cases, "covariate_shift": 2 * cases}
    if "covariate" not in args.families:
        del pool["covariate_shift"]
    rng = np.random.default_rng(args.seed)
    # Import every module the runs use now, so one run measures one version of the code.
    import keel.monitoring.monitor
    import keel.monitoring.sequential  # noqa: F401

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="keel-bench-power-") as tmp:
        home = Path(args.home) if args.home else Path(tmp)
        setups = prepare(home, args.models, train_rows, pool, args.seed)
        prep_s = time.perf_counter() - t0
        result: dict[str, Any] = {
            "benchmark": "drift_power",
            "mode": "quick" if args.quick else "full",
            "families": list(args.families),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "cases_per_window": cases,
            "reps": reps,
            "null_reps": null_reps,
            "null_reps_with_evidently_checks": drift_null_reps,
            "review_share_decided": REVIEW_SHARE,
            "pool_sizes": pool,
            "prepare_seconds": round(prep_s, 1),
            "models": {},
        }
        for setup in setups:
            t1 = time.perf_counter()
            result["models"][setup.model] = {
                "alpha": setup.alpha,
                "pool_rows": {k: len(v.frame) for k, v in setup.pools.items()},
                "single_window": single_window(
                    setup,
                    cases,
                    reps,
                    null_reps,
                    drift_null_reps,
                    args.drift_reps or reps,
                    rng,
                    args.families,
                ),
                "sequential": sequential(setup, cases, reps, null_reps, rng)
                if "sequential" in args.families
                else {},
                **audit_families(setup, cases, args, rng),
                "seconds": round(time.perf_counter() - t1, 1),
            }
    result["targets"] = {m: t | audit_targets(result["models"][m]) for m, t in targets(result).items()}
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


def get(part: Any, *keys: str) -> Any:
    """part[k1][k2]..., None where a key is missing."""
    for key in keys:
        part = part.get(key) if isinstance(part, dict) else None
    return part


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each with the measured rate it is judged on (None: not run)."""
    out = {}
    for model, r in result["models"].items():
        sw, seq = r["single_window"], r["sequential"]
        fam = sw["families"]

        def best(family: str, needle: str, fam: dict[str, Any] = fam) -> float | None:
            rows = [v for k, v in fam.get(family, {}).items() if needle in k]
            return rows[0]["target_check"]["rate"] if rows else None

        out[model] = {
            "no_drift_false_alarm_runs<=0.05": get(sw, "no_drift", "any_check_all_checks", "rate"),
            "no_drift_false_alarm_runs_label_checks<=0.05": get(
                sw, "no_drift", "any_check_without_evidently_checks", "rate"
            ),
            "mix_share_x2_detect>=0.9": best("categorical_mix", "x2.0"),
            "region_override_x3_detect>=0.9": best("segment_overrides", "x3.0"),
            "concept_30pct_entity_detect>=0.9": best("concept_change", "0.3"),
            "sequential_x2_within_3_detect>=0.9": get(seq, "region_x2.0_detected_within_3_windows", "rate"),
            "sequential_false_alarm_10_windows<=0.05": get(
                seq, "no_drift_false_alarm_within_10_windows", "rate"
            ),
        }
    return out


if __name__ == "__main__":
    sys.exit(main())
