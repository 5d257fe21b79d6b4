"""LightGBM multiclass booster with exact per-class TreeSHAP.

A multiclass booster holds one tree per class per iteration, so the raw score of class k is
the sum of every K-th tree. Explanations walk only the decided class's trees, in compiled code
over arrays read from the booster text at load (keel.models.tree_shap, docs/explanations.md).
A booster that code does not read (linear trees, say) keeps the earlier route: the class's
trees cut into their own one-output booster, explained by LightGBM's exact TreeSHAP
(`pred_contrib`, what `shap.TreeExplainer` runs for LightGBM) at about 1/K of the all-class cost.
"""

from __future__ import annotations

import logging
import re
from functools import cached_property

import lightgbm as lgb
import numpy as np

from keel.errors import ModelLoadError, UnsupportedTrees
from keel.models.fast_predict import PREDICT_CONTRIB, PREDICT_RAW_SCORE, SingleRowPredictor
from keel.models.tree_shap import CompiledTrees

log = logging.getLogger("keel.models")

_TREE_HEADER = re.compile(r"^Tree=\d+", flags=re.MULTILINE)


def class_model_strings(model_text: str, num_class: int) -> list[str]:
    """Split a multiclass model text into one regression-model text per class."""
    head, _, body = model_text.partition("\nTree=")
    trees_text, _, tail = ("Tree=" + body).partition("\nend of trees")
    blocks = [b.strip("\n") for b in trees_text.split("\n\n\n") if b.strip()]
    if len(blocks) % num_class:
        raise ValueError(f"{len(blocks)} trees do not split into {num_class} classes")
    header_lines = []
    for line in head.split("\n"):
        if line.startswith("tree_sizes="):
            continue  # sizes index the original tree list; LightGBM parses without them
        if line.startswith("num_class="):
            line = "num_class=1"
        elif line.startswith("num_tree_per_iteration="):
            line = "num_tree_per_iteration=1"
        elif line.startswith("objective="):
            line = "objective=regression"
        header_lines.append(line)
    header = "\n".join(header_lines)
    out = []
    for k in range(num_class):
        mine = blocks[k::num_class]
        trees = "\n\n\n".join(_TREE_HEADER.sub(f"Tree={i}", b, count=1) for i, b in enumerate(mine))
        out.append(f"{header}\n{trees}\n\n\nend of trees{tail}")
    return out


class TreeModel:
    """A multiclass booster loaded from its text, with compiled exact TreeSHAP of one class."""

    def __init__(self, model_text: str) -> None:
        self.model_text = model_text
        self.booster = lgb.Booster(model_str=model_text)
        self.num_class = int(self.booster.num_model_per_iteration())
        if self.num_class < 2:
            raise ValueError("expected a multiclass booster")
        # Most decide requests carry one case: LightGBM's single-row fast path skips the
        # per-call predictor set-up that dominates `predict` on one row (same numbers).
        ncol = self.booster.num_feature()
        self._raw_one = SingleRowPredictor(self.booster, PREDICT_RAW_SCORE, ncol)
        self.compiled: CompiledTrees | None
        try:
            self.compiled = CompiledTrees(model_text)
        except UnsupportedTrees as exc:
            log.warning("explanations fall back to LightGBM's pred_contrib: %s", exc)
            self.compiled = None
            try:
                _ = self._contrib_one  # build the fallback at load, not on the first request
            except lgb.basic.LightGBMError as lgb_exc:  # linear trees: LightGBM has no TreeSHAP either
                raise ModelLoadError(f"no exact explanation for this booster: {exc}; {lgb_exc}") from lgb_exc

    @cached_property
    def class_boosters(self) -> list[lgb.Booster]:
        """One one-output booster per class: the fallback explainer's input."""
        return [lgb.Booster(model_str=s) for s in class_model_strings(self.model_text, self.num_class)]

    @cached_property
    def _contrib_one(self) -> list[SingleRowPredictor]:
        ncol = self.booster.num_feature()
        return [SingleRowPredictor(b, PREDICT_CONTRIB, ncol) for b in self.class_boosters]

    def raw_scores(self, matrix: np.ndarray) -> np.ndarray:
        """Raw scores (n, K), as LightGBM's `predict(raw_score=True)` gives them, to the last bit:
        the compiled trees sum the same leaf values in the same order, without the per-call
        set-up that is most of LightGBM's cost on one row."""
        if self.compiled is not None:
            return self.compiled.raw_scores(matrix)
        return self.lightgbm_raw_scores(matrix)

    def lightgbm_raw_scores(self, matrix: np.ndarray) -> np.ndarray:
        """LightGBM's own raw scores, through its single-row fast path for one row: the fallback for
        trees the compiled code does not read, and the baseline bench.models compares."""
        if len(matrix) == 1 and matrix.dtype == np.float64 and matrix.flags.c_contiguous:
            return self._raw_one.predict(matrix[0]).reshape(1, self.num_class)
        raw = np.asarray(self.booster.predict(matrix, raw_score=True, num_threads=1))
        return raw.reshape(len(matrix), self.num_class)

    def contributions(self, matrix: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Exact SHAP values of each row's raw score for its own class; last column is the base value."""
        if self.compiled is not None:
            return self.compiled.contributions(matrix, classes)
        return self.lightgbm_contributions(matrix, classes)

    def lightgbm_contributions(self, matrix: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """The fallback: LightGBM's TreeSHAP over the class's own booster (same numbers)."""
        if len(matrix) == 1 and matrix.dtype == np.float64 and matrix.flags.c_contiguous:
            return self._contrib_one[int(classes[0])].predict(matrix[0]).reshape(1, matrix.shape[1] + 1)
        out = np.empty((len(matrix), matrix.shape[1] + 1), dtype=np.float64)
        for k in np.unique(classes):
            rows = np.flatnonzero(classes == k)
            out[rows] = self.class_boosters[int(k)].predict(matrix[rows], pred_contrib=True, num_threads=1)
        return out

    def all_class_contributions(self, matrix: np.ndarray) -> np.ndarray:
        """LightGBM's own all-class TreeSHAP, shape (n, K, F+1): the baseline the benchmark compares."""
        full = np.asarray(self.booster.predict(matrix, pred_contrib=True, num_threads=1))
        return full.reshape(len(matrix), self.num_class, matrix.shape[1] + 1)
