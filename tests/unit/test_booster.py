"""Exactness of per-class TreeSHAP against shap.TreeExplainer on a real (tiny) LightGBM model."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
import shap

from keel.models.booster import TreeModel, class_model_strings


@pytest.fixture(scope="module")
def multiclass() -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 6))
    x[:, 5] = rng.integers(0, 4, size=3000)  # a categorical column
    x[rng.random(x.shape) < 0.05] = np.nan
    y = (np.nan_to_num(x[:, 0]) > 0).astype(int) + 2 * (np.nan_to_num(x[:, 5]) >= 2)
    params = {"objective": "multiclass", "num_class": 4, "verbose": -1, "num_leaves": 15, "seed": 1}
    booster = lgb.train(params, lgb.Dataset(x, y, categorical_feature=[5]), num_boost_round=40)
    return booster, x


def test_class_contributions_equal_shap_tree_explainer(multiclass: tuple[lgb.Booster, np.ndarray]) -> None:
    booster, x = multiclass
    tree = TreeModel(booster.model_to_string())
    rows = x[:300]
    raw = tree.raw_scores(rows)
    predicted = raw.argmax(axis=1)
    ours = tree.contributions(rows, predicted)
    explainer = shap.TreeExplainer(booster)
    values = np.asarray(explainer.shap_values(rows))  # (n, features, classes)
    expected_value = np.asarray(explainer.expected_value)
    for i, k in enumerate(predicted):
        np.testing.assert_allclose(ours[i, :-1], values[i, :, k], atol=1e-6)
        assert ours[i, -1] == pytest.approx(expected_value[k], abs=1e-6)
    # base value + contributions reproduce the raw score of the explained class
    np.testing.assert_allclose(ours.sum(axis=1), raw[np.arange(len(rows)), predicted], atol=1e-9)


def test_every_class_matches_lightgbm_all_class_contrib(multiclass: tuple[lgb.Booster, np.ndarray]) -> None:
    booster, x = multiclass
    tree = TreeModel(booster.model_to_string())
    full = tree.all_class_contributions(x[:50])
    for k in range(4):
        np.testing.assert_allclose(tree.contributions(x[:50], np.full(50, k)), full[:, k, :], atol=1e-9)


def test_split_rejects_a_tree_count_that_is_not_a_multiple(
    multiclass: tuple[lgb.Booster, np.ndarray],
) -> None:
    booster, _ = multiclass
    with pytest.raises(ValueError, match="do not split"):
        class_model_strings(booster.model_to_string(), 3)
