"""Drift of inputs, predictions and explanations versus a model version's reference, via Evidently.

Evidently chooses and runs the statistical tests. This module declares every column's type from
the contract (Evidently's own inference silently skips nullable dtypes and treats ids as text),
reads the per-column verdicts back out of the snapshot, and adds the plain numbers a reviewer
wants next to them (class shares, rates, SHAP importance ranks). Callers pass frames in the
`monitoring.frames` shape, already sampled; every result records the row counts it used.
Evidently is imported inside functions: importing it costs seconds and ~300 MB.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from keel.errors import InvalidInput
from keel.feature_defs.contract import Contract
from keel.models.frames import shap_column

# Test direction per Evidently stat test (checked against evidently 0.7.23's stattests).
_P_VALUE = {"ks", "chisquare", "z", "fisher_exact", "g_test", "mannw", "t_test", "es", "anderson",
            "cramer_von_mises", "empirical_mmd", "TVD"}  # fmt: skip
_DISTANCE = {"wasserstein", "jensenshannon", "psi", "kl_div", "hellinger", "ed"}


class NotEnoughRows(InvalidInput):
    """A frame is too small for a drift test to mean anything (see DriftConfig.min_rows): the
    input (window or reference sample) cannot support the test, so it is Keel's InvalidInput."""


@dataclass
class DriftConfig:
    """Declarative drift settings; None means Evidently's automatic choice for the column.

    Keys of the per-column maps are frame column names (`shap__<feature>` for explanation drift,
    `most_likely` / `confidence` for prediction drift); keys a run does not use are ignored.
    """

    num_method: str | None = None
    cat_method: str | None = None
    per_column_method: dict[str, str] = field(default_factory=dict)
    per_column_threshold: dict[str, float] = field(default_factory=dict)
    drift_share: float = 0.5
    num_threshold: float | None = None
    cat_threshold: float | None = None
    top_features: int = 5
    """How many of the most important features the explanation rank comparison reports."""
    min_rows: int = 30
    """Fewer rows than this in either frame raises NotEnoughRows instead of a meaningless test."""


@dataclass
class ColumnDrift:
    column: str
    kind: str  # "numerical" | "categorical"
    method: str | None  # Evidently's short stat-test name, e.g. "wasserstein"
    threshold: float | None
    score: float
    score_kind: str | None  # "p_value" (drift when below) | "distance" (drift when above)
    drifted: bool
    reference_count: int  # non-null values the test saw
    current_count: int


@dataclass
class FeatureImportance:
    feature: str
    reference_mean_abs: float
    current_mean_abs: float
    reference_rank: int  # 1 = the feature the model leans on most
    current_rank: int
    rank_change: int  # positive: the feature moved up in the current window


@dataclass
class DriftResult:
    kind: str  # "feature" | "explanation"
    columns: list[ColumnDrift]
    drifted_count: int
    drifted_share: float
    drift_share_threshold: float
    dataset_drift: bool
    reference_rows: int
    current_rows: int
    skipped: dict[str, str] = field(default_factory=dict)
    importance: list[FeatureImportance] = field(default_factory=list)
    importance_shift: float | None = None
    """Total-variation distance between the normalised mean |SHAP| vectors (0 same, 1 disjoint)."""
    top_feature_changed: bool | None = None
    snapshot: Any = field(default=None, repr=False, compare=False)

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def column(self, name: str) -> ColumnDrift:
        return next(c for c in self.columns if c.column == name)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self) | {"drifted_columns": self.drifted_columns}


@dataclass
class RateShift:
    reference: float | None
    current: float | None
    difference: float | None  # current - reference
    p_value: float | None  # two-proportion z-test
    reference_events: int
    current_events: int


@dataclass
class PredictionDriftResult:
    outcome: ColumnDrift | None  # drift of the most likely class (decided or abstained)
    confidence: ColumnDrift | None
    outcome_shares: dict[str, dict[str, float]]  # class -> reference / current / difference
    max_share_change: float
    confidence_mean: dict[str, float | None]
    abstention: RateShift
    policy_intervention: RateShift
    reference_rows: int
    current_rows: int
    skipped: dict[str, str] = field(default_factory=dict)
    snapshot: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


def feature_drift(
    reference: pd.DataFrame, current: pd.DataFrame, contract: Contract, cfg: DriftConfig
) -> DriftResult:
    """Per-input-feature drift; bools count as categorical, like the contract encodes them.

    Derived features (e.g. tax_rate_gap_pp) are checked too, computed from their inputs as the
    model computes them: a gap can move while both of its inputs look unchanged.
    """
    numerical = [f.name for f in contract.feature_fields if f.type in ("float", "int")]
    categorical = [f.name for f in contract.feature_fields if f.type in ("category", "bool")]
    reference, current = with_derived(reference, contract), with_derived(current, contract)
    numerical += [d.name for d in contract.derived if d.name in current]
    return _drift_result("feature", reference, current, numerical, categorical, cfg)


def with_derived(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The frame plus each derived feature (difference of its two inputs) that it lacks."""
    extra = {
        d.name: pd.to_numeric(frame[d.args[0]], errors="coerce")
        - pd.to_numeric(frame[d.args[1]], errors="coerce")
        for d in contract.derived
        if d.name not in frame and d.op == "difference" and all(a in frame for a in d.args)
    }
    return frame.assign(**extra) if extra else frame


def explanation_drift(
    reference: pd.DataFrame, current: pd.DataFrame, contract: Contract, cfg: DriftConfig
) -> DriftResult:
    """Drift of each feature's SHAP contribution, plus how the features' importance ranks moved.

    Contributions are those of each row's most likely class, as logged; a moved outcome mix
    therefore also moves them, which is why prediction drift is read alongside.
    """
    columns = [shap_column(f) for f in contract.feature_names]
    result = _drift_result("explanation", reference, current, columns, [], cfg)
    ref_imp = _mean_abs(reference, contract.feature_names)
    cur_imp = _mean_abs(current, contract.feature_names)
    ref_rank, cur_rank = _ranks(ref_imp), _ranks(cur_imp)
    rows = [
        FeatureImportance(f, ref_imp[f], cur_imp[f], ref_rank[f], cur_rank[f], ref_rank[f] - cur_rank[f])
        for f in contract.feature_names
    ]
    # Report the features that lead in either window: a newcomer at the top is the signal.
    top = {f for f in contract.feature_names if min(ref_rank[f], cur_rank[f]) <= cfg.top_features}
    result.importance = sorted((r for r in rows if r.feature in top), key=lambda r: r.reference_rank)
    result.importance_shift = _total_variation(ref_imp, cur_imp)
    if ref_imp and cur_imp:
        result.top_feature_changed = _first(ref_rank) != _first(cur_rank)
    return result


def prediction_drift(
    reference: pd.DataFrame, current: pd.DataFrame, classes: Sequence[str], cfg: DriftConfig
) -> PredictionDriftResult:
    """Outcome and confidence distribution drift (Evidently) plus abstention/intervention rates."""
    _check_rows(reference, current, cfg)
    snapshot, columns, skipped = _run_evidently(
        "prediction", reference, current, ["confidence"], ["most_likely"], cfg
    )
    ref_share, cur_share = _shares(reference["most_likely"]), _shares(current["most_likely"])
    labels = list(classes) + sorted(set(ref_share) | set(cur_share) - set(classes))
    shares = {c: {"reference": ref_share.get(c, 0.0), "current": cur_share.get(c, 0.0),
                  "difference": cur_share.get(c, 0.0) - ref_share.get(c, 0.0)} for c in labels}  # fmt: skip
    return PredictionDriftResult(
        columns.get("most_likely"), columns.get("confidence"), shares,
        max((abs(s["difference"]) for s in shares.values()), default=0.0),
        {"reference": _mean(reference["confidence"]), "current": _mean(current["confidence"])},
        _rate_shift(reference["abstained"], current["abstained"]),
        _rate_shift(reference["policy_intervened"], current["policy_intervened"]),
        len(reference), len(current), skipped, snapshot=snapshot,
    )  # fmt: skip


# -- Evidently glue -------------------------------------------------------------------------------


def _drift_result(kind: str, reference: pd.DataFrame, current: pd.DataFrame, numerical: list[str],
                  categorical: list[str], cfg: DriftConfig) -> DriftResult:  # fmt: skip
    _check_rows(reference, current, cfg)
    snapshot, columns, skipped = _run_evidently(kind, reference, current, numerical, categorical, cfg)
    drifted = sum(c.drifted for c in columns.values())
    share = drifted / len(columns) if columns else 0.0
    return DriftResult(kind, list(columns.values()), drifted, share, cfg.drift_share,
                       bool(columns) and share >= cfg.drift_share, len(reference), len(current),
                       skipped, snapshot=snapshot)  # fmt: skip


def _run_evidently(
    kind: str, reference: pd.DataFrame, current: pd.DataFrame, numerical: list[str], categorical: list[str],
    cfg: DriftConfig,
) -> tuple[Any, dict[str, ColumnDrift], dict[str, str]]:  # fmt: skip
    """One DataDriftPreset run over the declared columns; returns (snapshot, verdicts, skipped)."""
    skipped: dict[str, str] = {}
    frames: dict[str, dict[str, pd.Series]] = {"reference": {}, "current": {}}
    kinds: dict[str, str] = {}
    for name in numerical + categorical:
        kinds[name] = "numerical" if name in numerical else "categorical"
        if name not in reference or name not in current:
            skipped[name] = "column missing"
            continue
        convert = _as_number if kinds[name] == "numerical" else _as_category
        ref, cur = convert(reference[name]), convert(current[name])
        # Evidently aborts the whole run on a column that is empty on either side.
        if ref.notna().sum() == 0 or cur.notna().sum() == 0:
            skipped[name] = "no values in " + ("reference" if ref.notna().sum() == 0 else "current")
            continue
        frames["reference"][name], frames["current"][name] = ref, cur
    used = list(frames["current"])
    if not used:
        return None, {}, skipped
    num = [c for c in used if kinds[c] == "numerical"]
    cat = [c for c in used if kinds[c] == "categorical"]
    ref_df, cur_df = pd.DataFrame(frames["reference"]), pd.DataFrame(frames["current"])
    with warnings.catch_warnings():
        # Evidently's import and its tests on constant columns warn; none of it is actionable here.
        warnings.simplefilter("ignore")
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        # Every list is declared so nothing is left to Evidently's type inference.
        definition = DataDefinition(
            numerical_columns=num, categorical_columns=cat, text_columns=[], datetime_columns=[],
            unknown_columns=[], list_columns=[],
        )  # fmt: skip
        preset = DataDriftPreset(
            columns=used, drift_share=cfg.drift_share, num_method=cfg.num_method, cat_method=cfg.cat_method,
            num_threshold=cfg.num_threshold, cat_threshold=cfg.cat_threshold,
            per_column_method={k: v for k, v in cfg.per_column_method.items() if k in used} or None,
            per_column_threshold={k: v for k, v in cfg.per_column_threshold.items() if k in used} or None,
        )  # fmt: skip
        snapshot = Report([preset], include_tests=True).run(
            current_data=Dataset.from_pandas(cur_df, data_definition=definition),
            reference_data=Dataset.from_pandas(ref_df, data_definition=definition),
            name=f"{kind} drift",
            metadata={"reference_rows": str(len(ref_df)), "current_rows": str(len(cur_df))},
        )
    verdicts = _extract(snapshot.dict(), kinds, ref_df, cur_df)
    return snapshot, {c: verdicts[c] for c in used if c in verdicts}, skipped


def _extract(snap: dict[str, Any], kinds: dict[str, str], ref: pd.DataFrame,
             cur: pd.DataFrame) -> dict[str, ColumnDrift]:  # fmt: skip
    """Per-column verdicts. The drifted flag is the status of the test Evidently ties to each
    ValueDrift (the snapshot has no flag of its own), which is why reports run with include_tests."""
    failed = {t["metric_config"]["metric_id"] for t in snap.get("tests", [])
              if t.get("id") == "drift" and str(t["status"]).split(".")[-1] == "FAIL"}  # fmt: skip
    out: dict[str, ColumnDrift] = {}
    for metric in snap.get("metrics", []):
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith(":ValueDrift"):
            continue
        name, method, threshold = config["column"], _method_key(config.get("method")), config.get("threshold")
        score_kind = "p_value" if method in _P_VALUE else "distance" if method in _DISTANCE else None
        threshold = None if threshold is None else float(threshold)
        out[name] = ColumnDrift(
            name, kinds[name], method, threshold, float(metric["value"]), score_kind, metric["id"] in failed,
            int(ref[name].notna().sum()), int(cur[name].notna().sum()),
        )  # fmt: skip
    return out


def _method_key(method: str | None) -> str | None:
    """Evidently reports an auto-chosen test by display name ("K-S p_value"); map it to its key."""
    if method is None:
        return None
    from evidently.legacy.calculations.stattests.registry import _registered_stat_tests

    for name, by_type in _registered_stat_tests.items():
        if method == name or any(st.display_name == method for st in by_type.values()):
            return str(name)
    return method


# -- plain numbers ----------------------------------------------------------------------------------


def _check_rows(reference: pd.DataFrame, current: pd.DataFrame, cfg: DriftConfig) -> None:
    if min(len(reference), len(current)) < cfg.min_rows:
        raise NotEnoughRows(
            f"{len(reference)} reference and {len(current)} current rows; need {cfg.min_rows} in each"
        )


def _as_number(s: pd.Series) -> pd.Series:
    out = pd.to_numeric(s, errors="coerce").astype("float64")
    return out.replace([np.inf, -np.inf], np.nan).reset_index(drop=True)


def _as_category(s: pd.Series) -> pd.Series:
    # Strings on both sides: True vs "True" or 1 vs "1" must not count as different categories.
    out = s.astype(object).reset_index(drop=True)
    return out.where(out.isna(), out.astype(str))


def _mean(s: pd.Series) -> float | None:
    values = pd.to_numeric(s, errors="coerce").dropna()
    return float(values.mean()) if len(values) else None


def _shares(s: pd.Series) -> dict[str, float]:
    return {str(k): float(v) for k, v in s.dropna().astype(str).value_counts(normalize=True).items()}


def _rate_shift(reference: pd.Series, current: pd.Series) -> RateShift:
    ref, cur = reference.dropna().astype(bool), current.dropna().astype(bool)
    n1, n2, x1, x2 = len(ref), len(cur), int(ref.sum()), int(cur.sum())
    if not (n1 and n2):
        return RateShift(x1 / n1 if n1 else None, x2 / n2 if n2 else None, None, None, x1, x2)
    r1, r2, pooled = x1 / n1, x2 / n2, (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    p_value = 1.0 if se == 0 else math.erfc(abs(r2 - r1) / se / math.sqrt(2))  # two-sided normal tail
    return RateShift(r1, r2, r2 - r1, p_value, x1, x2)


def _mean_abs(frame: pd.DataFrame, features: list[str]) -> dict[str, float]:
    columns = {f: pd.to_numeric(frame.get(shap_column(f), pd.Series(dtype=float)), errors="coerce")
               for f in features}  # fmt: skip
    return {f: float(v.abs().mean()) if v.notna().any() else 0.0 for f, v in columns.items()}


def _ranks(importance: dict[str, float]) -> dict[str, int]:
    order = sorted(importance, key=lambda f: -importance[f])  # stable: contract order breaks ties
    return {f: i + 1 for i, f in enumerate(order)}


def _first(ranks: dict[str, int]) -> str:
    return next(f for f, r in ranks.items() if r == 1)


def _total_variation(a: dict[str, float], b: dict[str, float]) -> float | None:
    sa, sb = sum(a.values()), sum(b.values())
    if sa <= 0 or sb <= 0:
        return None
    return 0.5 * sum(abs(a[f] / sa - b.get(f, 0.0) / sb) for f in a)


def _plain(result: Any) -> dict[str, Any]:
    # asdict deep-copies every field: drop the (large, not JSON) Evidently snapshot first.
    out: dict[str, Any] = json_safe(asdict(replace(result, snapshot=None)))
    out.pop("snapshot")
    return out


def json_safe(value: Any) -> Any:
    """numpy scalars to Python, NaN/inf to None: strict JSON for summary.json."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
