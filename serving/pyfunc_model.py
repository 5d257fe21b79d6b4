"""MLflow models-from-code entry: `mlflow.pyfunc.load_model` on a Keel version runs this file.

No pickle is involved: MLflow executes this module and our code (shipped with the model as
code_paths) reads the bundle's data files, checked against the hashes recorded at registration.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from keel.models.decision_model import DecisionModel
from keel.models.registry import pyfunc_expected_hashes


class KeelPyfunc(PythonModel):
    """Takes a frame of cases (contract fields) and returns decisions and calibrated probabilities."""

    def load_context(self, context: Any) -> None:
        expected = pyfunc_expected_hashes(dict(context.model_config or {}))
        self.model = DecisionModel.load(context.artifacts["bundle"], expected)

    # pd.DataFrame is the one input hint MLflow neither validates nor infers a schema from, so
    # the registered signature (from the contract's example) still governs input; unannotated,
    # MLflow warns at every log_model that predict lacks type hints.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        batch = self.model.predict_frame(pd.DataFrame(model_input), explain=False)
        out = pd.DataFrame(
            {
                "outcome": [batch.outcome(i) for i in range(len(batch))],
                "most_likely": [batch.most_likely(i) for i in range(len(batch))],
                "abstained": batch.abstained,
                "confidence": batch.confidence,
            }
        )
        for j, name in enumerate(batch.classes):
            out[f"p_{name}"] = batch.probabilities[:, j]
        if params and params.get("keel_versions"):
            out["record"] = _records(self.model, model_input, params)
        return out


def _records(model: DecisionModel, frame: pd.DataFrame, params: dict[str, Any]) -> list[str]:
    """Each case's full decision record as JSON, built by the online path's code (`keel score
    --engine spark` asks for it by passing the `versions` the driver resolved)."""
    from keel.serving.batch_spark import records_json

    return records_json(model, pd.DataFrame(frame), params["keel_versions"])


mlflow.models.set_model(KeelPyfunc())
