"""Exact path-dependent TreeSHAP of one class per row, compiled with numba, in O(nodes x depth/2).

This computes the same numbers as LightGBM's `pred_contrib` (which `shap.TreeExplainer` calls
for LightGBM boosters), by another route. For a leaf l with value v and, for each distinct
feature m on its path, the merged cover fraction z_m and the indicator o_m that the row
follows every split on m, path-dependent TreeSHAP gives feature j

    phi_j += v (o_j - z_j) * sum_S |S|! (d-1-|S|)! / d! * prod_{m in S} o_m * prod_{m not in S, m != j} z_m

and since |S|!(d-1-|S|)!/d! is the Beta integral of t^|S| (1-t)^(d-1-|S|) over [0, 1], the sum
is the integral over [0, 1] of prod_{m != j} (z_m + (o_m - z_m) t), a polynomial of degree d-1:
Gauss-Legendre quadrature with ceil(d/2) nodes integrates it exactly. Holding each node's
product at the quadrature points lets one top-down pass (products along the path) and one
bottom-up pass (sums over the leaves below each edge) give every feature's value, with a
telescoping difference at each edge for features split more than once on a path. The work is
O(nodes x depth/2) per tree instead of O(leaves x depth^2) for the path algorithm LightGBM runs,
there is no 2^depth table (Keel's leaf-wise trees have no depth limit), and only the decided
class's trees are walked. The quadrature weights are positive and every factor lies in (0, 1];
the one cancellation is the telescoping difference, and on the served models the values stay
within 5e-14 of LightGBM's (tests hold them to shap.TreeExplainer within 1e-9).

The kernels compile when the first model loads (`compile_seconds` says how long), never on a
request, and release the GIL while they run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np

from keel.models.tree_arrays import CATEGORICAL, read_trees

__all__ = ["CompiledTrees", "compile_seconds"]

_F = TypeVar("_F", bound=Callable[..., Any])

# LightGBM reads a dense row through its sparse path, which keeps only |x| > kZeroThreshold
# (1e-35 as a float32); smaller values reach the trees as 0.
_ZERO = float(np.float32(1e-35))
_INT_LIMIT = 2147483648.0


def _compiled(fn: _F) -> _F:
    """numba's decorator is untyped; the kernel keeps its Python signature for mypy.

    Compiled code is cached on disk (beside this file, or in the user's cache directory where the
    install is read-only), so only the first process on a machine pays the seconds of compiling:
    every `keel` command, replica and Spark worker after it loads the machine code. Where numba
    finds nowhere to write, it compiles in memory as before."""
    try:
        return cast(_F, numba.njit(nogil=True, cache=True)(fn))
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return cast(_F, numba.njit(nogil=True, cache=False)(fn))


def _inlined(fn: _F) -> _F:
    """A helper inlined into its callers at numba's level: a call passing a dozen arrays costs
    more than the decision it makes (it is compiled, and cached, inside them)."""
    return cast(_F, numba.njit(nogil=True, cache=False, inline="always")(fn))


@_inlined
def _left(
    v: float,
    threshold: float,
    kind: int,
    nan_left: int,
    zero_left: int,
    cat_start: int,
    cat_words: int,
    cat_bits: np.ndarray,
) -> int:
    """1 if value `v` goes left at a split with these parameters, else 0.

    Without a data-dependent branch in the common case (a numerical split on an ordinary value):
    which way a row goes is a coin toss to the CPU's branch predictor. The callers pass the
    node's scalars, not the arrays: an array handed to a helper gets its reference count bumped
    and dropped on every call, which made the whole kernel 1.6x slower (measured on routing).
    """
    # Numerical: v <= threshold, except NaN and (as LightGBM reads a dense row) |v| <= 1e-35,
    # which go where the node's missing type sends them (a rare, well-predicted branch).
    numerical = np.int64(v <= threshold)
    if not abs(v) > _ZERO:
        numerical = np.int64(nan_left if np.isnan(v) else zero_left)
    # Categorical: bit int(v) of the node's bitset; NaN, negative and out-of-range categories go
    # right, as LightGBM's cast to int sends them. Both are worked out and one picked: a
    # numerical node has an empty bitset, read harmlessly at its first word.
    valid = -1.0 < v < _INT_LIMIT
    c = np.int64(v if valid else 0.0)
    word = c >> 5
    inside = valid and word < cat_words
    bit = (np.int64(cat_bits[cat_start + (word if inside else 0)]) >> (c & 31)) & 1
    categorical = np.int64(inside) * bit
    return int(categorical if kind == CATEGORICAL else numerical)


@_compiled
def _explain_rows(
    rows: np.ndarray,
    classes: np.ndarray,
    out: np.ndarray,
    num_class: int,
    tree_offset: np.ndarray,
    splits: tuple[np.ndarray, ...],
    paths: tuple[np.ndarray, ...],
    max_nodes: int,
    max_quad: int,
) -> None:
    """out[i] = SHAP values of rows[i]'s raw score for class classes[i], base value last."""
    parent, value, zero, inv_zero, previous, zero_previous, expected = paths[:7]
    quad_offset, quad_t, quad_w, inv_cold, inv_hot, hot_offset = paths[7:]
    right, feature, threshold, kind, nan_left, zero_left, cat_start, cat_words, cat_bits = splits
    num_trees = len(tree_offset) - 1
    num_feature = rows.shape[1]
    hot = np.zeros(max_nodes, dtype=np.int64)  # each internal node's child on the row's path
    # Row max_nodes stands for "no earlier split on this feature" (previous[g] == max_nodes): its
    # o and 1/a are 1, so the same arithmetic serves both cases without a branch.
    one = np.ones(max_nodes + 1)  # o of the edge into each node, merged over its feature's splits
    # One row per tree node, one column per quadrature node t:
    inv = np.ones((max_nodes + 1, max_quad))  # 1 / a, a = z + (o - z) t, of the edge into the node
    prod = np.ones((max_nodes, max_quad))  # product of the path's factors a down to the node
    below = np.zeros((max_nodes, max_quad))  # sum over the leaves below of weight x value x product
    for i in range(rows.shape[0]):
        x = rows[i]
        phi = out[i]
        phi[:] = 0.0
        base = 0.0
        for t in range(classes[i], num_trees, num_class):
            base += expected[t]
            start = tree_offset[t]
            n = tree_offset[t + 1] - start
            if n == 1:
                continue
            q0 = quad_offset[t]
            nq = quad_offset[t + 1] - q0
            tq = quad_t[q0 : q0 + nq]
            wq = quad_w[q0 : q0 + nq]
            cq = inv_cold[q0 : q0 + nq]
            h = hot_offset[t]
            for c in range(n):
                g = start + c
                if c > 0:
                    p = parent[g]
                    pr = previous[g]
                    o = np.float64(hot[p] == c) * one[pr]
                    one[c] = o
                    z = zero[g]
                    slope = o - z
                    cold = (1.0 - o) * inv_zero[g]
                    v = value[g]  # 0 at internal nodes
                    for q in range(nq):
                        ic = o * inv_hot[h + c * nq + q] + cold * cq[q]
                        inv[c, q] = ic
                        pc = prod[p, q] * (z + slope * tq[q]) * inv[pr, q]
                        prod[c, q] = pc
                        below[c, q] = wq[q] * v * pc
                if feature[g] >= 0:
                    left = _left(
                        x[feature[g]],
                        threshold[g],
                        kind[g],
                        nan_left[g],
                        zero_left[g],
                        cat_start[g],
                        cat_words[g],
                        cat_bits,
                    )
                    hot[c] = right[g] + left * (c + 1 - right[g])  # arithmetic, not a branch
            for c in range(n - 1, 0, -1):
                g = start + c
                p = parent[g]
                pr = previous[g]
                slope = one[c] - zero[g]
                slope_previous = one[pr] - zero_previous[g]
                total = 0.0
                for q in range(nq):
                    b = below[c, q]
                    total += (slope * inv[c, q] - slope_previous * inv[pr, q]) * b
                    below[p, q] += b
                phi[feature[start + p]] += total
        phi[num_feature] = base


@_compiled
def _raw_rows(
    rows: np.ndarray,
    out: np.ndarray,
    num_class: int,
    tree_offset: np.ndarray,
    splits: tuple[np.ndarray, ...],
    value: np.ndarray,
) -> None:
    """out[i, k] = raw score of class k for rows[i], summed over trees in LightGBM's order."""
    right, feature, threshold, kind, nan_left, zero_left, cat_start, cat_words, cat_bits = splits
    num_trees = len(tree_offset) - 1
    for i in range(rows.shape[0]):
        x = rows[i]
        for k in range(num_class):
            out[i, k] = 0.0
        for t in range(num_trees):
            start = tree_offset[t]
            c = 0
            while feature[start + c] >= 0:
                g = start + c
                v = x[feature[g]]
                # Unlike TreeSHAP, which decides every node, a walk down one path is a chain of
                # dependent loads: a branch lets the CPU run ahead on its guess, and an ordinary
                # numerical split takes it (1.5x faster than the branch-free decision here).
                if kind[g] != CATEGORICAL and abs(v) > _ZERO:
                    c = c + 1 if v <= threshold[g] else right[g]
                else:
                    left = _left(
                        v,
                        threshold[g],
                        kind[g],
                        nan_left[g],
                        zero_left[g],
                        cat_start[g],
                        cat_words[g],
                        cat_bits,
                    )
                    c = c + 1 if left else right[g]
            out[i, t % num_class] += value[start + c]


_compile_lock = threading.Lock()
_compile_seconds: float | None = None


def compile_seconds() -> float | None:
    """How long compiling the kernels took in this process; None before the first model load."""
    return _compile_seconds


class CompiledTrees:
    """One booster's trees as flat arrays, explained and predicted by the compiled kernels."""

    def __init__(self, model_text: str) -> None:
        """Raises UnsupportedTrees for boosters the kernels do not read (see tree_arrays)."""
        self.arrays = read_trees(model_text)
        self.num_class = self.arrays.num_class
        self.num_feature = self.arrays.num_feature
        a = self.arrays
        # Worked out once: a call's set-up is most of the cost of explaining one row.
        self._explain_args = (a.num_class, a.tree_offset, a.splits, a.paths, a.max_nodes, a.max_quad)
        self._raw_args = (a.num_class, a.tree_offset, a.splits, a.value)
        _compile_once(self)

    def contributions(self, matrix: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Exact SHAP values of each row's raw score for its own class; last column is the base value.

        The layout of one class's block of LightGBM's `pred_contrib` output: (n, features + 1).
        """
        rows = _rows(matrix, self.num_feature)
        wanted = np.ascontiguousarray(classes, dtype=np.int64)
        if len(wanted) != len(rows) or (len(wanted) and (wanted.min() < 0 or wanted.max() >= self.num_class)):
            raise ValueError(f"need one class in [0, {self.num_class}) per row")
        out = np.empty((len(rows), self.num_feature + 1))
        _explain_rows(rows, wanted, out, *self._explain_args)
        return out

    def raw_scores(self, matrix: np.ndarray) -> np.ndarray:
        """Raw scores (n, num_class), as LightGBM's `predict(raw_score=True)`."""
        rows = _rows(matrix, self.num_feature)
        out = np.empty((len(rows), self.num_class))
        _raw_rows(rows, out, *self._raw_args)
        return out


def _rows(matrix: np.ndarray, num_feature: int) -> np.ndarray:
    rows = np.ascontiguousarray(matrix, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != num_feature:
        raise ValueError(f"expected rows of {num_feature} features, got shape {rows.shape}")
    return rows


def _compile_once(trees: CompiledTrees) -> None:
    """Compile both kernels on the first model loaded in this process, so no request pays for it."""
    global _compile_seconds
    with _compile_lock:
        if _compile_seconds is not None:
            return
        t0 = time.perf_counter()
        row = np.zeros((1, trees.num_feature))
        trees.contributions(row, np.zeros(1, dtype=np.int64))
        trees.raw_scores(row)
        _compile_seconds = time.perf_counter() - t0
