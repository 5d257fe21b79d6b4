"""A LightGBM model text read into flat per-node arrays for compiled TreeSHAP and prediction.

Read from the booster text that is the registry artefact (never a pickle), once per model
load. Each tree's nodes are laid out in pre-order (a parent before its children, a node's left
child right after it), so one forward loop walks the tree top-down and one backward loop
bottom-up, without recursion. Everything that does not depend on the row is worked out here:
each edge's cover fraction merged with earlier splits on the same feature, the edge that last
split on that feature above it, each tree's expected value and its Gauss-Legendre nodes.

What LightGBM can write but this does not read (linear trees, random-forest averaging, zero
data counts, which make path-dependent SHAP divide by zero) raises `UnsupportedTrees`; the
caller then keeps LightGBM's own `pred_contrib`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from keel.errors import UnsupportedTrees

__all__ = ["CATEGORICAL", "NUMERICAL", "TreeArrays", "read_trees"]

NUMERICAL = 0
CATEGORICAL = 1
_CATEGORICAL_MASK = 1
_DEFAULT_LEFT_MASK = 2
_MISSING_ZERO = 1
_MISSING_NAN = 2


@dataclass(frozen=True)
class TreeArrays:
    """All trees of one booster; node arrays are indexed by `tree_offset[t] + pre-order position`."""

    num_class: int
    num_feature: int
    tree_offset: np.ndarray  # int64 (T+1): first node of each tree
    parent: np.ndarray  # int32: parent's position within its tree, -1 at the root
    right: np.ndarray  # int32: right child's position (the left child is position + 1), -1 at a leaf
    feature: np.ndarray  # int32: split feature, -1 at a leaf
    threshold: np.ndarray  # float64: numerical threshold
    kind: np.ndarray  # int8: NUMERICAL or CATEGORICAL
    nan_left: np.ndarray  # int8: 1 where a NaN goes left (by its missing type and default direction)
    zero_left: np.ndarray  # int8: 1 where a zero goes left
    cat_start: np.ndarray  # int32: first word of the node's category bitset in `cat_bits`
    cat_words: np.ndarray  # int32: bitset length in 32-bit words
    cat_bits: np.ndarray  # uint32
    value: np.ndarray  # float64: leaf output
    zero: (
        np.ndarray
    )  # float64: cover fraction of the edge into the node, merged over the feature's splits above
    previous: (
        np.ndarray
    )  # int32: position of the edge above that last split on the same feature, else max_nodes
    zero_previous: np.ndarray  # float64: that edge's zero, 1.0 if none
    expected: np.ndarray  # float64 (T): each tree's cover-weighted mean output
    quad_offset: np.ndarray  # int64 (T+1): each tree's Gauss-Legendre nodes in quad_t / quad_w
    quad_t: np.ndarray  # float64: nodes on [0, 1]
    quad_w: np.ndarray  # float64: weights on [0, 1]
    inv_zero: np.ndarray  # float64: 1 / zero, per node
    inv_cold: np.ndarray  # float64: 1 / (1 - t), beside quad_t
    inv_hot: np.ndarray  # float64: 1 / (z + (1 - z) t) per node and quadrature node (see _hot_factors)
    hot_offset: np.ndarray  # int64 (T): where each tree's inv_hot values start

    @property
    def num_trees(self) -> int:
        return len(self.tree_offset) - 1

    @property
    def splits(self) -> tuple[np.ndarray, ...]:
        """What a row's way through a node depends on, in the order the kernels unpack it."""
        return (
            self.right,
            self.feature,
            self.threshold,
            self.kind,
            self.nan_left,
            self.zero_left,
            self.cat_start,
            self.cat_words,
            self.cat_bits,
        )

    @property
    def paths(self) -> tuple[np.ndarray, ...]:
        """What TreeSHAP reads besides the splits, in the order the kernel unpacks it."""
        return (
            self.parent,
            self.value,
            self.zero,
            self.inv_zero,
            self.previous,
            self.zero_previous,
            self.expected,
            self.quad_offset,
            self.quad_t,
            self.quad_w,
            self.inv_cold,
            self.inv_hot,
            self.hot_offset,
        )

    @property
    def max_quad(self) -> int:
        return int(np.diff(self.quad_offset).max(initial=1))

    @property
    def max_nodes(self) -> int:
        return int(np.diff(self.tree_offset).max(initial=1))


def _header(text: str) -> dict[str, str]:
    head = text.split("\nTree=", 1)[0]
    return dict(line.split("=", 1) for line in head.splitlines() if "=" in line)


def _tree_blocks(text: str) -> list[dict[str, str]]:
    body = text.split("\nend of trees", 1)[0]
    blocks = []
    for chunk in body.split("\nTree=")[1:]:
        fields = dict(line.split("=", 1) for line in chunk.splitlines()[1:] if "=" in line)
        blocks.append(fields)
    return blocks


def _numbers(fields: dict[str, str], key: str, dtype: type) -> np.ndarray:
    raw = fields.get(key, "").split()
    return np.array([float(v) for v in raw] if dtype is float else [int(v) for v in raw], dtype=dtype)


@dataclass
class _Builder:
    parent: list[int]
    right: list[int]
    feature: list[int]
    threshold: list[float]
    kind: list[int]
    nan_left: list[int]
    zero_left: list[int]
    cat_start: list[int]
    cat_words: list[int]
    value: list[float]
    zero: list[float]
    previous: list[int]


def _add_tree(out: _Builder, fields: dict[str, str], cat_base: int) -> tuple[float, int]:
    """Append one tree in pre-order; returns its expected value and its deepest unique path."""
    num_leaves = int(fields["num_leaves"])
    leaf_value = _numbers(fields, "leaf_value", float)
    if num_leaves == 1:
        out.parent.append(-1)
        out.right.append(-1)
        out.feature.append(-1)
        out.threshold.append(0.0)
        out.zero.append(1.0)
        for icol in (out.kind, out.nan_left, out.zero_left, out.cat_start, out.cat_words):
            icol.append(0)
        out.value.append(float(leaf_value[0]))
        out.previous.append(-1)
        return float(leaf_value[0]), 0
    split_feature = _numbers(fields, "split_feature", int)
    threshold = _numbers(fields, "threshold", float)
    decision = _numbers(fields, "decision_type", int)
    left = _numbers(fields, "left_child", int)
    right = _numbers(fields, "right_child", int)
    leaf_count = _numbers(fields, "leaf_count", float)
    internal_count = _numbers(fields, "internal_count", float)
    cat_boundaries = _numbers(fields, "cat_boundaries", int)
    if (leaf_count <= 0).any() or (internal_count <= 0).any():
        raise UnsupportedTrees(
            "a tree has a node without data (zero count): path-dependent SHAP is undefined"
        )

    def count(node: int) -> float:
        return float(internal_count[node] if node >= 0 else leaf_count[~node])

    total = count(0)
    expected = 0.0
    for i in range(num_leaves):  # the same sum, in the same order, as LightGBM's base value
        expected += (leaf_count[i] / total) * leaf_value[i]

    start = len(out.parent)
    deepest = 0
    # (LightGBM node, parent position, zero fraction of the edge, feature -> (position, zero) above)
    stack: list[tuple[int, int, float, dict[int, tuple[int, float]]]] = [(0, -1, 1.0, {})]
    while stack:
        node, parent, edge_zero, seen = stack.pop()
        pos = len(out.parent) - start
        out.parent.append(parent)
        if parent >= 0:
            split = int(out.feature[start + parent])
            earlier = seen.get(split)
            merged = edge_zero * (earlier[1] if earlier else 1.0)
            out.zero.append(merged)
            out.previous.append(earlier[0] if earlier else -1)
            seen = {**seen, split: (pos, merged)}
        else:
            out.zero.append(1.0)
            out.previous.append(-1)
        if node < 0:
            deepest = max(deepest, len(seen))
            out.right.append(-1)
            out.feature.append(-1)
            out.threshold.append(0.0)
            for icol in (out.kind, out.nan_left, out.zero_left, out.cat_start, out.cat_words):
                icol.append(0)
            out.value.append(float(leaf_value[~node]))
            continue
        dtype = int(decision[node])
        categorical = bool(dtype & _CATEGORICAL_MASK)
        out.feature.append(int(split_feature[node]))
        out.threshold.append(float(threshold[node]))
        out.kind.append(CATEGORICAL if categorical else NUMERICAL)
        out.nan_left.append(_nan_left(dtype, float(threshold[node])))
        out.zero_left.append(_zero_left(dtype, float(threshold[node])))
        if categorical:
            cat = int(threshold[node])
            out.cat_start.append(cat_base + int(cat_boundaries[cat]))
            out.cat_words.append(int(cat_boundaries[cat + 1] - cat_boundaries[cat]))
        else:
            out.cat_start.append(0)
            out.cat_words.append(0)
        out.value.append(0.0)
        out.right.append(-2)  # filled in when the right child is placed
        here = count(node)
        # Right pushed first so the left child is placed right after its parent.
        stack.append((int(right[node]), pos, count(int(right[node])) / here, seen))
        stack.append((int(left[node]), pos, count(int(left[node])) / here, seen))
    for pos in range(len(out.parent) - start):
        parent = out.parent[start + pos]
        if parent >= 0 and pos != parent + 1:
            out.right[start + parent] = pos
    return expected, deepest


def _nan_left(decision_type: int, threshold: float) -> int:
    """Where LightGBM sends NaN at a numerical split: the default side when missing is NaN,
    otherwise NaN is read as 0."""
    if (decision_type >> 2) & 3 == _MISSING_NAN:
        return 1 if decision_type & _DEFAULT_LEFT_MASK else 0
    return _zero_left(decision_type, threshold)


def _zero_left(decision_type: int, threshold: float) -> int:
    """Where LightGBM sends 0 (and |x| <= 1e-35) at a numerical split."""
    if (decision_type >> 2) & 3 == _MISSING_ZERO:
        return 1 if decision_type & _DEFAULT_LEFT_MASK else 0
    return 1 if threshold >= 0.0 else 0


def read_trees(model_text: str) -> TreeArrays:
    """Flat arrays of every tree in a LightGBM model text; raises UnsupportedTrees."""
    header = _header(model_text)
    if "average_output" in model_text.split("\nTree=", 1)[0].splitlines():
        raise UnsupportedTrees("random-forest averaging is not supported")
    num_class = int(header.get("num_tree_per_iteration", header.get("num_class", "1")))
    num_feature = int(header["max_feature_idx"]) + 1
    blocks = _tree_blocks(model_text)
    if not blocks or len(blocks) % num_class:
        raise UnsupportedTrees(f"{len(blocks)} trees do not split into {num_class} outputs")
    out = _Builder([], [], [], [], [], [], [], [], [], [], [], [])
    offsets, expected, quad_offsets = [0], [], [0]
    quad_t: list[float] = []
    quad_w: list[float] = []
    cat_bits: list[int] = []
    for fields in blocks:
        if fields.get("is_linear", "0") != "0":
            raise UnsupportedTrees("linear trees are not supported")
        tree_expected, deepest = _add_tree(out, fields, len(cat_bits))
        cat_bits.extend(int(v) for v in fields.get("cat_threshold", "").split())
        offsets.append(len(out.parent))
        expected.append(tree_expected)
        # The integrand of a leaf with d distinct features on its path has degree d - 1:
        # ceil(d / 2) Gauss-Legendre nodes integrate it exactly.
        t, w = _gauss_legendre(max(1, (deepest + 1) // 2))
        quad_t.extend(t)
        quad_w.extend(w)
        quad_offsets.append(len(quad_t))
    previous = np.array(out.previous, dtype=np.int64)
    max_nodes = int(np.diff(offsets).max())
    return TreeArrays(
        num_class=num_class,
        num_feature=num_feature,
        tree_offset=np.array(offsets, dtype=np.int64),
        parent=np.array(out.parent, dtype=np.int32),
        right=np.array(out.right, dtype=np.int32),
        feature=np.array(out.feature, dtype=np.int32),
        threshold=np.array(out.threshold, dtype=np.float64),
        kind=np.array(out.kind, dtype=np.int8),
        nan_left=np.array(out.nan_left, dtype=np.int8),
        zero_left=np.array(out.zero_left, dtype=np.int8),
        cat_start=np.array(out.cat_start, dtype=np.int32),
        cat_words=np.array(out.cat_words, dtype=np.int32),
        cat_bits=np.array(cat_bits or [0], dtype=np.uint32),
        value=np.array(out.value, dtype=np.float64),
        zero=np.array(out.zero, dtype=np.float64),
        previous=np.where(previous < 0, max_nodes, previous).astype(np.int32),
        zero_previous=_zero_previous(offsets, previous, out.zero),
        expected=np.array(expected, dtype=np.float64),
        quad_offset=np.array(quad_offsets, dtype=np.int64),
        quad_t=np.array(quad_t, dtype=np.float64),
        quad_w=np.array(quad_w, dtype=np.float64),
        **_hot_factors(offsets, quad_offsets, out.zero, quad_t),
    )


def _hot_factors(
    offsets: list[int], quad_offsets: list[int], zero: list[float], quad_t: list[float]
) -> dict[str, np.ndarray]:
    """The divisions that do not depend on the row, done once: 1 / (z + (1 - z) t) of each edge at
    its tree's quadrature nodes (where the row follows the edge), 1 / z and 1 / (1 - t) (where it
    does not: a = z (1 - t)). Tree t's value for its node c at its q-th quadrature node is at
    hot_offset[t] + c * nq(t) + q."""
    z = np.array(zero, dtype=np.float64)
    t_all = np.array(quad_t, dtype=np.float64)
    hot_offset = np.zeros(len(offsets) - 1, dtype=np.int64)
    parts = []
    at = 0
    for tree in range(len(offsets) - 1):
        t = t_all[quad_offsets[tree] : quad_offsets[tree + 1]]
        nodes = z[offsets[tree] : offsets[tree + 1]]
        hot_offset[tree] = at
        parts.append((1.0 / (nodes[:, None] + (1.0 - nodes[:, None]) * t[None, :])).ravel())
        at += len(t) * len(nodes)
    return {
        "inv_zero": 1.0 / z,
        "inv_cold": 1.0 / (1.0 - t_all),
        "inv_hot": np.concatenate(parts),
        "hot_offset": hot_offset,
    }


def _zero_previous(offsets: list[int], previous: np.ndarray, zero: list[float]) -> np.ndarray:
    starts = np.repeat(np.array(offsets[:-1]), np.diff(offsets))
    z = np.array(zero, dtype=np.float64)
    return np.where(previous < 0, 1.0, z[starts + np.maximum(previous, 0)])


@functools.cache
def _gauss_legendre(n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Cached: a booster asks for a handful of sizes once per tree, and numpy's leggauss (an
    # eigenvalue problem each call) was about a third of reading a 306-tree booster.
    x, w = np.polynomial.legendre.leggauss(n)
    return tuple(((x + 1.0) / 2.0).tolist()), tuple((w / 2.0).tolist())
