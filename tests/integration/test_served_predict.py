"""The served models decide with the compiled trees (keel.models.tree_shap), not LightGBM's per-call
predictor, and lose nothing by it: raw scores equal LightGBM's `predict` to 1e-12 on one row and
on batches, the decision path's probabilities are the calibrated softmax of LightGBM's scores,
and the explanations equal shap.TreeExplainer's within 1e-9. (Random boosters: test_tree_shap.)"""

from __future__ import annotations

import numpy as np
import shap

from keel.feature_defs.contract import MODEL_NAMES
from keel.models import registry
from keel.models.calibration import softmax
from keel.models.decision_path import predict_cases
from keel.training.generators import generate
from tests.conftest import Store


def test_served_models_predict_and_explain_as_lightgbm(store: Store, registered: dict[str, str]) -> None:
    for name in MODEL_NAMES:
        model = registry.load_alias(name, registry.CHAMPION, store.home / "cache").model
        assert model.tree.compiled is not None, f"{name} is not on the compiled path"
        frame = generate(name, 300, seed=41)
        matrix = model.contract.validate_frame(frame, extra_ok=list(frame.columns)).matrix
        assert matrix is not None
        booster = model.tree.booster
        lightgbm = np.asarray(booster.predict(matrix, raw_score=True, num_threads=1))
        np.testing.assert_allclose(model.tree.raw_scores(matrix), lightgbm, rtol=0, atol=1e-12)
        for i in range(0, len(matrix), 11):
            one = np.ascontiguousarray(matrix[i : i + 1])
            np.testing.assert_allclose(model.tree.raw_scores(one)[0], lightgbm[i], rtol=0, atol=1e-12)

        batch = predict_cases(model, frame.to_dict("records"), matrix, explain=True)
        expected = softmax(lightgbm, model.temperature)
        np.testing.assert_allclose(batch.probabilities, expected, rtol=0, atol=1e-12)
        assert np.array_equal(batch.predicted, lightgbm.argmax(axis=1))

        explainer = shap.TreeExplainer(booster)
        values = np.asarray(explainer.shap_values(matrix[:100]))  # (n, features, classes)
        k = batch.predicted[:100]
        assert batch.contributions is not None
        np.testing.assert_allclose(
            batch.contributions[:100, :-1], values[np.arange(100), :, k], rtol=0, atol=1e-9
        )
        np.testing.assert_allclose(
            batch.contributions[:100, -1], np.asarray(explainer.expected_value)[k], rtol=0, atol=1e-9
        )
