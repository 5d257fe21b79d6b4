"""The single-row fast path gives exactly what `Booster.predict` gives, and is safe across threads."""

from __future__ import annotations

import threading

import lightgbm as lgb
import numpy as np
import pytest

from keel.models.booster import TreeModel
from keel.models.fast_predict import PREDICT_CONTRIB, PREDICT_RAW_SCORE, SingleRowPredictor


@pytest.fixture(scope="module")
def tree() -> tuple[TreeModel, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 5))
    x[:, 4] = rng.integers(0, 3, size=2000)  # a categorical column
    x[rng.random(x.shape) < 0.05] = np.nan
    x[rng.random(x.shape) < 0.05] = 0.0  # zeros take LightGBM's sparse path: must match too
    y = (np.nan_to_num(x[:, 0]) > 0).astype(int) + (np.nan_to_num(x[:, 4]) >= 1)
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1, "num_leaves": 15, "seed": 2}
    booster = lgb.train(params, lgb.Dataset(x, y, categorical_feature=[4]), num_boost_round=30)
    return TreeModel(booster.model_to_string()), x


def test_one_row_raw_scores_and_contributions_equal_the_batch_path(
    tree: tuple[TreeModel, np.ndarray],
) -> None:
    model, x = tree
    batch_raw = np.asarray(model.booster.predict(x[:200], raw_score=True, num_threads=1))
    fast_raw = SingleRowPredictor(model.booster, PREDICT_RAW_SCORE, x.shape[1])
    for i in range(200):
        row = x[i : i + 1].copy()
        assert np.array_equal(fast_raw.predict(row[0]), batch_raw[i])
        raw = model.raw_scores(row)  # the compiled trees: the same bits
        assert raw.shape == (1, 3)
        assert np.array_equal(raw[0], batch_raw[i])
        for k in range(3):
            batch = model.class_boosters[k].predict(row, pred_contrib=True, num_threads=1)
            assert np.array_equal(model.lightgbm_contributions(row, np.array([k])), batch)


def test_many_threads_share_one_predictor(tree: tuple[TreeModel, np.ndarray]) -> None:
    model, x = tree
    predictor = SingleRowPredictor(model.class_boosters[1], PREDICT_CONTRIB, x.shape[1])
    expected = model.class_boosters[1].predict(x[:64], pred_contrib=True, num_threads=1)
    errors: list[str] = []

    def work() -> None:
        for _ in range(20):
            for i in range(64):
                if not np.array_equal(predictor.predict(np.ascontiguousarray(x[i])), expected[i]):
                    errors.append(f"row {i}")

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_a_malformed_row_is_refused(tree: tuple[TreeModel, np.ndarray]) -> None:
    model, x = tree
    predictor = SingleRowPredictor(model.booster, PREDICT_RAW_SCORE, x.shape[1])
    with pytest.raises(ValueError):
        predictor.predict(x[0, :3].copy())
    with pytest.raises(ValueError):
        predictor.predict(x[0].astype(np.float32))
