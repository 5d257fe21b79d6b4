"""Evaluation of a calibrated, abstaining classifier: overall and per segment."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, log_loss


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins."""
    conf = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def classification_metrics(
    proba: np.ndarray, y: np.ndarray, threshold: float | np.ndarray
) -> dict[str, float]:
    """`threshold`: one for all cases, or one per case (segment-conditional abstention)."""
    pred = proba.argmax(axis=1)
    conf = proba.max(axis=1)
    decided = conf >= threshold
    n_dec = int(decided.sum())
    k = proba.shape[1]
    return {
        "n": float(len(y)),
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1_score(y, pred, average="macro", labels=list(range(k)), zero_division=0)),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-15, 1.0), labels=list(range(k)))),
        "ece": expected_calibration_error(proba, y),
        "coverage": float(decided.mean()),
        "selective_error": float((pred[decided] != y[decided]).mean()) if n_dec else 0.0,
    }


def segment_metrics(
    proba: np.ndarray,
    y: np.ndarray,
    threshold: float | np.ndarray,
    segments: pd.DataFrame,
    min_rows: int = 30,
) -> dict[str, dict[str, dict[str, float]]]:
    """The same metrics per value of every segment field (values with fewer rows are skipped)."""
    per_case = np.broadcast_to(np.asarray(threshold, dtype=float), (len(y),))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for column in segments.columns:
        values = segments[column].to_numpy()
        per: dict[str, dict[str, float]] = {}
        for value in pd.unique(values):
            m = values == value
            if m.sum() >= min_rows:
                per[str(value)] = classification_metrics(proba[m], y[m], per_case[m])
        out[column] = per
    return out


def flatten_metrics(prefix: str, nested: dict[str, Any]) -> dict[str, float]:
    """`{"region": {"EMEA": {"accuracy": .9}}}` -> `{"prefix.region.EMEA.accuracy": .9}` for MLflow."""
    flat: dict[str, float] = {}
    for key, value in nested.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten_metrics(name, value))
        else:
            flat[name] = float(value)
    return flat
