"""validate -> time-ordered split -> LightGBM -> calibration -> risk control -> evaluation -> bundle.

Splits, in time order: train 60% (its last sixth is early-stopping validation), calibration 20%
(first half fits the temperature and fixes the threshold search order, second half certifies
the threshold), test 20%.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from keel.errors import InvalidInput
from keel.feature_defs.contract import Contract
from keel.models.booster import TreeModel
from keel.models.bundle import (
    ABSTENTION,
    BOOSTER,
    CALIBRATION,
    CONTRACT,
    EVALUATION,
    REFERENCE,
    seal_bundle,
    write_json,
)
from keel.models.calibration import TemperatureScaler
from keel.models.thresholds import ThresholdRule
from keel.training.data import check_training_frame, fingerprint
from keel.training.evaluation import classification_metrics, segment_metrics
from keel.training.importance import plot_importance
from keel.training.risk_control import (
    RiskControl,
    SegmentControl,
    abstention_record,
    select_segment_thresholds,
    select_threshold,
)
from keel.training.settings import TrainingSettings

# Stage messages at INFO: `keel train` shows them as its live status line.
_log = logging.getLogger(__name__)


@dataclass
class Splits:
    train: np.ndarray
    valid: np.ndarray
    calib_fit: np.ndarray
    risk: np.ndarray
    test: np.ndarray


FIT_SHARE = 0.6
"""Leading share of the time-ordered rows that only fits the booster (train + early stopping);
calibration, risk control and test come after it."""


def time_splits(n: int) -> Splits:
    cut = [int(n * q) for q in (0.5, FIT_SHARE, 0.7, 0.8)]
    idx = np.arange(n)
    return Splits(
        idx[: cut[0]], idx[cut[0] : cut[1]], idx[cut[1] : cut[2]], idx[cut[2] : cut[3]], idx[cut[3] :]
    )


@dataclass
class TrainResult:
    contract: Contract
    bundle_dir: Path
    hashes: dict[str, str]
    params: dict[str, Any]
    metrics: dict[str, float]
    segments: dict[str, Any]
    risk: RiskControl
    data_fingerprint: str
    best_iteration: int
    extra: dict[str, Any] = field(default_factory=dict)
    segment_control: SegmentControl | None = None


def lgb_params(contract: Contract, s: TrainingSettings) -> dict[str, Any]:
    return {
        "objective": "multiclass",
        "num_class": len(contract.classes),
        "learning_rate": s.learning_rate,
        "num_leaves": s.num_leaves,
        "min_data_in_leaf": s.min_data_in_leaf,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "seed": s.seed,
        "deterministic": True,
        "num_threads": 2,
        "verbose": -1,
    }


def fit_booster(
    contract: Contract,
    x: np.ndarray,
    y: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    s: TrainingSettings,
) -> lgb.Booster:
    names = contract.feature_names
    cats = contract.categorical_features
    train_set = lgb.Dataset(x, y, feature_name=names, categorical_feature=cats, free_raw_data=False)
    valid_set = lgb.Dataset(x_valid, y_valid, reference=train_set)
    return lgb.train(
        lgb_params(contract, s),
        train_set,
        num_boost_round=s.num_boost_round,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(s.early_stopping_rounds, verbose=False)],
    )


def check_class_counts(contract: Contract, frame: pd.DataFrame, minimum: int) -> None:
    """Refuse data with a class rarer than `minimum` rows: its splits could not calibrate or certify it."""
    counts = frame[contract.target].value_counts()
    short = {c: int(counts.get(c, 0)) for c in contract.classes if counts.get(c, 0) < minimum}
    if short:
        listed = ", ".join(f"{c} {n}" for c, n in short.items())
        raise InvalidInput(
            f"{contract.name}: too few training rows per class ({listed}); need at least {minimum} "
            f"each (KEEL_TRAIN_MIN_ROWS_PER_CLASS); nothing registered"
        )


def train(contract: Contract, frame: pd.DataFrame, out_dir: Path, s: TrainingSettings) -> TrainResult:
    """Fit, calibrate, certify and evaluate one model and write its sealed bundle to `out_dir`."""
    _log.info("validating %d rows against the contract", len(frame))
    frame = check_training_frame(contract, frame)
    check_class_counts(contract, frame, s.min_rows_per_class)
    matrix = contract.validate_frame(frame, extra_ok=list(frame.columns)).matrix
    assert matrix is not None  # check_training_frame raised otherwise
    y, _ = contract.encode_target(list(frame[contract.target]))
    sp = time_splits(len(frame))
    _log.info("fitting LightGBM on %d rows", len(sp.train))
    booster = fit_booster(contract, matrix[sp.train], y[sp.train], matrix[sp.valid], y[sp.valid], s)
    model_text = booster.model_to_string(num_iteration=booster.best_iteration)
    tree = TreeModel(model_text)

    _log.info("calibrating and certifying the abstention threshold")
    scaler = TemperatureScaler().fit(tree.raw_scores(matrix[sp.calib_fit]), y[sp.calib_fit])
    order_proba = scaler.predict_proba(tree.raw_scores(matrix[sp.calib_fit]))
    order_conf = order_proba.max(axis=1)
    risk_proba = scaler.predict_proba(tree.raw_scores(matrix[sp.risk]))
    certified = certify(
        contract,
        frame,
        sp,
        s,
        (risk_proba.max(axis=1), risk_proba.argmax(axis=1) == y[sp.risk]),
        (order_conf, order_proba.argmax(axis=1) == y[sp.calib_fit]),
    )
    risk = certified.overall if isinstance(certified, SegmentControl) else certified
    seg_control = certified if isinstance(certified, SegmentControl) else None
    abstention = abstention_record(risk, seg_control)
    rule = ThresholdRule.from_abstention(abstention)
    _log.info("evaluating on %d held-out rows", len(sp.test))
    test_proba = scaler.predict_proba(tree.raw_scores(matrix[sp.test]))
    test_thresholds, _ = rule.applies(
        frame.loc[sp.test, rule.field].tolist() if rule.field else None, len(sp.test)
    )
    metrics = classification_metrics(test_proba, y[sp.test], test_thresholds)
    segments = segment_metrics(
        test_proba,
        y[sp.test],
        test_thresholds,
        frame.loc[sp.test, contract.segment_fields].reset_index(drop=True),
    )

    _log.info("writing the bundle and the SHAP importance plot")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / BOOSTER).write_text(model_text)
    write_json(out_dir / CALIBRATION, {"method": "temperature", "temperature": scaler.temperature_})
    write_json(out_dir / ABSTENTION, abstention)
    (out_dir / CONTRACT).write_text(contract.source)
    # Held-out rows: on its own training rows the model is over-confident, which would make every
    # later window look like confidence and explanation drift.
    reference = frame.loc[sp.test].sample(n=min(s.reference_rows, len(sp.test)), random_state=s.seed)
    reference.sort_index().to_parquet(out_dir / REFERENCE, index=False)
    sample = matrix[sp.test][: min(2000, len(sp.test))]
    plot_importance(tree, sample, contract.feature_names, out_dir / "shap_importance.png")
    evaluation = {
        "model": contract.name,
        "contract_version": contract.version,
        "rows": {
            "train": len(sp.train),
            "valid": len(sp.valid),
            "calibration": len(sp.calib_fit),
            "risk_control": len(sp.risk),
            "test": len(sp.test),
        },
        "best_iteration": booster.best_iteration,
        "temperature": scaler.temperature_,
        "risk_control": abstention,
        "test": metrics,
        "test_by_segment": segments,
    }
    write_json(out_dir / EVALUATION, evaluation)
    data_fp = fingerprint(frame)
    hashes = seal_bundle(
        out_dir,
        contract.name,
        {
            "classes": list(contract.classes),
            "feature_names": contract.feature_names,
            "contract_version": contract.version,
            "data_fingerprint": data_fp,
        },
    )
    params = {
        **lgb_params(contract, s),
        "rows": len(frame),
        "alpha": s.alpha,
        "delta": s.delta,
        "num_boost_round": s.num_boost_round,
        "early_stopping_rounds": s.early_stopping_rounds,
    }
    return TrainResult(
        contract,
        out_dir,
        hashes,
        params,
        metrics,
        segments,
        risk,
        data_fp,
        booster.best_iteration,
        segment_control=seg_control,
    )


Scored = tuple[np.ndarray, np.ndarray]
"""Confidence and correctness of a split's cases."""


def certify(
    contract: Contract, frame: pd.DataFrame, sp: Splits, s: TrainingSettings, risk: Scored, order: Scored
) -> RiskControl | SegmentControl:
    """The overall threshold, or overall plus per-segment ones when the model has a segment field."""
    seg = s.segment_fields.get(contract.name)
    if not seg:
        return select_threshold(
            risk[0],
            risk[1],
            s.alpha,
            s.delta,
            order[0],
            s.min_decided,
            order_correct=order[1],
            primary_share=s.risk_primary_share,
        )
    if seg not in contract.segment_fields:
        raise InvalidInput(
            f"{contract.name}: segment control field {seg!r} is not a segment field of the contract"
        )
    return select_segment_thresholds(
        risk[0],
        risk[1],
        frame.loc[sp.risk, seg].tolist(),
        order[0],
        order[1],
        frame.loc[sp.calib_fit, seg].tolist(),
        field_name=seg,
        alpha=s.alpha,
        delta=s.delta,
        min_cases=s.segment_min_cases,
        fallback=s.segment_fallback,
        min_decided=s.min_decided,
        primary_share=s.risk_primary_share,
        known_values=contract.spec(seg).categories,
    )
