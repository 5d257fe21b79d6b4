"""DecisionModel: contract + booster + calibration + risk-controlled abstention + exact SHAP."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from keel.errors import InvalidInput, ModelLoadError
from keel.feature_defs.contract import Contract
from keel.models.booster import TreeModel
from keel.models.bundle import Bundle, read_bundle
from keel.models.calibration import softmax
from keel.models.spec import DecisionSpec, decision_spec
from keel.models.thresholds import OVERALL, ThresholdRule


@dataclass
class BatchDecision:
    """Per-case arrays for one validated batch; `contributions` explain each case's arg-max class."""

    classes: tuple[str, ...]
    feature_names: list[str]
    matrix: np.ndarray
    raw: np.ndarray
    probabilities: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    abstained: np.ndarray
    contributions: np.ndarray | None
    thresholds: np.ndarray | None = None
    threshold_applied: list[str] | None = None

    def __len__(self) -> int:
        return len(self.predicted)

    def outcome(self, i: int) -> str | None:
        return None if self.abstained[i] else self.classes[int(self.predicted[i])]

    def applied_threshold(self, i: int) -> dict[str, Any]:
        """The abstention threshold this case was held to and which one it was (overall or segment)."""
        value = None if self.thresholds is None else float(self.thresholds[i])
        return {"value": value, "applied": self.threshold_applied[i] if self.threshold_applied else OVERALL}

    def most_likely(self, i: int) -> str:
        return self.classes[int(self.predicted[i])]

    def probability_map(self, i: int) -> dict[str, float]:
        return {c: float(p) for c, p in zip(self.classes, self.probabilities[i], strict=True)}

    def explanation(self, i: int, contract: Contract, top_k: int | None = None) -> dict[str, Any] | None:
        """Base value plus the top-k SHAP contributions (by magnitude) to the class's raw score."""
        if self.contributions is None:
            return None
        row = self.contributions[i]
        order = np.argsort(-np.abs(row[:-1]), kind="stable")[:top_k].tolist()
        shap, values, names = row.tolist(), self.matrix[i].tolist(), self.feature_names  # plain floats
        k = int(self.predicted[i])
        return {
            "class": self.classes[k],
            "output": "raw_score",
            "base_value": shap[-1],
            "raw_score": float(self.raw[i, k]),
            "contributions": [
                {
                    "feature": names[j],
                    "value": contract.decode_value(names[j], values[j]),
                    "contribution": shap[j],
                }
                for j in order
            ],
        }


class DecisionModel:
    """Loads a sealed bundle and decides validated batches; raises on a failed load."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.spec: DecisionSpec = decision_spec(bundle)
        self.contract = self.spec.contract
        self.feature_names = self.contract.feature_names  # built once, not per decided batch
        self.classes = self.spec.classes
        self.tree = TreeModel(bundle.booster_text)
        if self.tree.num_class != len(self.classes):
            raise ModelLoadError(f"booster has {self.tree.num_class} classes, contract {len(self.classes)}")
        if self.tree.booster.num_feature() != len(self.contract.feature_names):
            raise ModelLoadError("booster and contract disagree on the number of features")
        self.temperature = self.spec.temperature
        self.threshold = self.spec.threshold
        self.threshold_rule = ThresholdRule.from_abstention(bundle.abstention)
        self.alpha = self.spec.alpha
        self.delta = self.spec.delta

    @classmethod
    def load(cls, path: str | Path, expected: Mapping[str, str] | None = None) -> DecisionModel:
        return cls(read_bundle(path, expected))

    @property
    def name(self) -> str:
        return self.bundle.model_name

    def predict_matrix(
        self, matrix: np.ndarray, explain: bool = True, segment_values: Sequence[object] | None = None
    ) -> BatchDecision:
        """`segment_values`: each case's value of the segment field of a per-segment-certified model."""
        raw = self.tree.raw_scores(matrix)
        proba = softmax(raw, self.temperature)
        predicted = raw.argmax(axis=1)
        confidence = proba[np.arange(len(proba)), predicted]
        thresholds, applied = self.threshold_rule.applies(segment_values, len(matrix))
        return BatchDecision(
            classes=self.classes,
            feature_names=self.feature_names,
            matrix=matrix,
            raw=raw,
            probabilities=proba,
            predicted=predicted,
            confidence=confidence,
            abstained=confidence < thresholds,
            contributions=self.tree.contributions(matrix, predicted) if explain else None,
            thresholds=thresholds,
            threshold_applied=applied,
        )

    def predict_records(self, records: Sequence[Mapping[str, Any]], explain: bool = True) -> BatchDecision:
        result = self.contract.validate_records(records)
        if result.matrix is None:
            raise InvalidInput(f"{len(result.errors)} field error(s) in the cases", result.errors)
        seg = self.threshold_rule.field
        return self.predict_matrix(result.matrix, explain, [r.get(seg) for r in records] if seg else None)

    def predict_frame(self, frame: pd.DataFrame, explain: bool = False) -> BatchDecision:
        extra = [c for c in frame.columns if c not in self.contract.field_names]
        result = self.contract.validate_frame(frame, extra_ok=extra)
        if result.matrix is None:
            raise InvalidInput(f"{len(result.errors)} field error(s) in the frame", result.errors)
        seg = self.threshold_rule.field
        return self.predict_matrix(result.matrix, explain, frame[seg].tolist() if seg else None)
