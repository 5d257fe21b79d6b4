"""Exactness of per-class TreeSHAP against shap.TreeExplainer on a real (tiny) LightGBM model, the
fallback to LightGBM's own TreeSHAP for boosters the compiled code does not read, and the refusal
of boosters nothing explains exactly."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
import shap

from keel.errors import ModelLoadError
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
        np.testing.assert_allclose(ours[i, :-1], values[i, :, k], rtol=0, atol=1e-9)
        assert ours[i, -1] == pytest.approx(expected_value[k], rel=0, abs=1e-9)
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


def test_compiled_path_serves_a_plain_booster(multiclass: tuple[lgb.Booster, np.ndarray]) -> None:
    booster, x = multiclass
    tree = TreeModel(booster.model_to_string())
    assert tree.compiled is not None
    k = tree.raw_scores(x[:40]).argmax(axis=1)
    np.testing.assert_allclose(
        tree.contributions(x[:40], k), tree.lightgbm_contributions(x[:40], k), atol=1e-9
    )


def test_raw_scores_are_lightgbm_s_to_the_last_bit(multiclass: tuple[lgb.Booster, np.ndarray]) -> None:
    booster, x = multiclass
    tree = TreeModel(booster.model_to_string())
    expected = np.asarray(booster.predict(x, raw_score=True, num_threads=1))
    assert np.array_equal(tree.raw_scores(x), expected)
    for i in range(0, 300, 13):
        assert np.array_equal(tree.raw_scores(np.ascontiguousarray(x[i : i + 1]))[0], expected[i])


def test_an_unsupported_booster_falls_back_to_lightgbm_treeshap() -> None:
    """A random forest (LightGBM averages its trees) is not read by the compiled code: the model
    still loads and explains exactly, through LightGBM's pred_contrib of the class's trees."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(800, 4))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)
    params = {
        "objective": "multiclass",
        "num_class": 3,
        "boosting": "rf",
        "bagging_freq": 1,
        "bagging_fraction": 0.7,
        "num_leaves": 7,
        "verbose": -1,
        "seed": 5,
    }
    booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=8)
    tree = TreeModel(booster.model_to_string())
    assert tree.compiled is None
    k = tree.raw_scores(x[:60]).argmax(axis=1)
    ours = tree.contributions(x[:60], k)
    values = np.asarray(shap.TreeExplainer(booster).shap_values(x[:60]))
    np.testing.assert_allclose(ours[:, :-1], values[np.arange(60), :, k], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.sum(axis=1), tree.raw_scores(x[:60])[np.arange(60), k], atol=1e-9)
    one = tree.contributions(np.ascontiguousarray(x[:1]), k[:1])
    np.testing.assert_allclose(one, ours[:1], atol=1e-12)


def test_linear_trees_are_refused_at_load() -> None:
    """LightGBM has no TreeSHAP for linear trees either: the load fails and says why."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(600, 3))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0)
    params = {"objective": "multiclass", "num_class": 3, "linear_tree": True, "num_leaves": 5, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=3)
    with pytest.raises(ModelLoadError, match="linear trees"):
        TreeModel(booster.model_to_string())
