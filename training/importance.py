"""Global SHAP importance plot (mean |SHAP| of each case's predicted class) for the registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keel.models.booster import TreeModel


def mean_abs_shap(tree: TreeModel, matrix: np.ndarray) -> np.ndarray:
    predicted = tree.raw_scores(matrix).argmax(axis=1)
    contrib = tree.contributions(matrix, predicted)
    values: np.ndarray = np.abs(contrib[:, :-1]).mean(axis=0)
    return values


def plot_importance(tree: TreeModel, matrix: np.ndarray, names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = mean_abs_shap(tree, matrix)
    order = np.argsort(values)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    ax.barh([names[i] for i in order], values[order], color="#3b6ea8")
    ax.set_xlabel("mean |SHAP| on the predicted class's raw score")
    ax.set_title(f"Global feature importance ({len(matrix)} test cases)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
