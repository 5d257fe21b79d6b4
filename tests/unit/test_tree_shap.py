"""The compiled TreeSHAP equals shap.TreeExplainer and LightGBM's pred_contrib on random boosters.

Boosters vary in leaves, depth, categorical splits, missing-value handling (missing type None,
Zero and NaN, either default direction), single-leaf trees, multiclass and binary; the rows
scored hold NaN, exact zeros, values below LightGBM's zero threshold, thresholds themselves,
negative, unseen and fractional categories.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
import shap

from keel.errors import UnsupportedTrees
from keel.models.tree_arrays import read_trees
from keel.models.tree_shap import CompiledTrees, compile_seconds

CASES: list[dict[str, Any]] = [
    {"num_class": 4, "num_leaves": 31},
    {"num_class": 3, "num_leaves": 63, "min_data_in_leaf": 3},
    {"num_class": 5, "num_leaves": 7, "max_depth": 3},
    {"num_class": 3, "num_leaves": 2},
    {"num_class": 4, "num_leaves": 40, "max_depth": 12, "min_data_in_leaf": 2},
    {"num_class": 3, "num_leaves": 15, "zero_as_missing": True},
    {"num_class": 3, "num_leaves": 15, "use_missing": False},
    {"num_class": 3, "num_leaves": 15, "max_cat_to_onehot": 8},  # one-vs-rest categorical splits
    {"num_class": 3, "num_leaves": 15, "min_gain_to_split": 40.0},  # many single-leaf trees
    {"num_class": 1, "num_leaves": 31},  # binary
    {"num_class": 1, "num_leaves": 20, "zero_as_missing": True, "max_depth": 6},
]


def _data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 7))
    x[:, 1] = np.round(x[:, 1], 1)  # ties and exact thresholds
    x[:, 5] = rng.integers(0, 12, size=n)  # categorical
    x[:, 6] = rng.integers(0, 40, size=n)  # categorical with more than 32 values
    x[rng.random(x.shape) < 0.08] = np.nan
    x[rng.random(x.shape) < 0.08] = 0.0
    signal = np.nan_to_num(x[:, 0]) + (np.nan_to_num(x[:, 5]) % 3) - 0.5 * np.isnan(x[:, 2]) + (x[:, 3] == 0)
    return x, signal + (np.nan_to_num(x[:, 6]) > 20) + 0.3 * rng.normal(size=n)


def _booster(case: dict[str, Any], seed: int) -> lgb.Booster:
    x, signal = _data(seed, 1500)
    num_class = case["num_class"]
    if num_class == 1:
        label = (signal > np.median(signal)).astype(int)
        params: dict[str, Any] = {"objective": "binary"}
    else:
        label = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, num_class + 1)[1:-1]))
        params = {"objective": "multiclass", "num_class": num_class}
    params |= {k: v for k, v in case.items() if k != "num_class"}
    params |= {"verbose": -1, "seed": seed, "min_data_per_group": 5, "cat_smooth": 1.0}
    data = lgb.Dataset(x, label, categorical_feature=[5, 6])
    return lgb.train(params, data, num_boost_round=12)


def _rows(booster: lgb.Booster, seed: int) -> np.ndarray:
    x, _ = _data(seed + 1000, 150)
    x[:5, 5] = [-1.0, -0.5, 12.7, 1e9, np.nan]  # negative, truncated-to-zero, fractional, huge, missing
    x[5:10, 6] = [33.0, 64.0, 2.0**31, -3.0, 31.999]
    x[10:15, 0] = [1e-36, -1e-40, 0.0, -0.0, np.nan]  # below LightGBM's zero threshold reads as 0
    thresholds = [
        float(v) for t in booster.dump_model()["tree_info"][:5] for v in _thresholds(t["tree_structure"])
    ]
    for i, v in enumerate(thresholds[:20]):
        x[20 + i, :5] = v  # a value exactly at a split's threshold goes left
    return x


def _thresholds(node: dict[str, Any]) -> list[Any]:
    if "split_index" not in node or node.get("decision_type") != "<=":
        return []
    return [node["threshold"], *_thresholds(node["left_child"]), *_thresholds(node["right_child"])]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_every_class_equals_shap_and_lightgbm(case: int) -> None:
    booster = _booster(CASES[case], seed=case)
    rows = _rows(booster, case)
    trees = CompiledTrees(booster.model_to_string())
    num_class, width = trees.num_class, rows.shape[1] + 1
    lightgbm = np.asarray(booster.predict(rows, pred_contrib=True, num_threads=1)).reshape(
        len(rows), num_class, width
    )
    explainer = shap.TreeExplainer(booster)
    with warnings.catch_warnings():
        # shap warns, for every binary LightGBM model, that its output layout changed in 0.45.
        warnings.filterwarnings("ignore", "LightGBM binary classifier", UserWarning)
        values = np.asarray(explainer.shap_values(rows))
    values = values.reshape(len(rows), rows.shape[1], num_class)  # binary: (n, features)
    expected = np.atleast_1d(np.asarray(explainer.expected_value))
    for k in range(num_class):
        ours = trees.contributions(rows, np.full(len(rows), k))
        np.testing.assert_allclose(ours, lightgbm[:, k, :], rtol=0, atol=1e-9)
        np.testing.assert_allclose(ours[:, :-1], values[:, :, k], rtol=0, atol=1e-9)
        np.testing.assert_allclose(ours[:, -1], expected[k], rtol=0, atol=1e-9)
    # Target 2 reads the same arrays: raw scores as LightGBM's.
    raw = np.asarray(booster.predict(rows, raw_score=True, num_threads=1)).reshape(len(rows), num_class)
    np.testing.assert_allclose(trees.raw_scores(rows), raw, rtol=0, atol=1e-12)


def test_single_leaf_trees_are_in_the_cases() -> None:
    text = _booster(CASES[8], seed=8).model_to_string()
    leaves = [int(line.split("=")[1]) for line in text.splitlines() if line.startswith("num_leaves=")]
    assert 1 in leaves and max(leaves) > 1


def test_mixed_classes_in_one_batch_and_one_row_at_a_time() -> None:
    booster = _booster(CASES[0], seed=0)
    rows = _rows(booster, 0)
    trees = CompiledTrees(booster.model_to_string())
    classes = np.arange(len(rows)) % 4
    batch = trees.contributions(rows, classes)
    for i in range(0, len(rows), 7):
        assert np.array_equal(trees.contributions(rows[i : i + 1], classes[i : i + 1])[0], batch[i])
    assert compile_seconds() is not None


def test_bad_input_is_refused() -> None:
    trees = CompiledTrees(_booster(CASES[3], seed=3).model_to_string())
    rows = _rows(_booster(CASES[3], seed=3), 3)
    with pytest.raises(ValueError, match="one class"):
        trees.contributions(rows[:2], np.array([0, 3]))
    with pytest.raises(ValueError, match="features"):
        trees.contributions(rows[:2, :3], np.array([0, 1]))


def test_linear_trees_are_refused() -> None:
    x, signal = _data(0, 400)
    params = {"objective": "regression", "linear_tree": True, "verbose": -1, "num_leaves": 7}
    booster = lgb.train(params, lgb.Dataset(np.nan_to_num(x[:, :4]), signal), num_boost_round=3)
    with pytest.raises(UnsupportedTrees, match="linear"):
        read_trees(booster.model_to_string())
