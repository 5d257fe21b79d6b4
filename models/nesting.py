"""How segment fields nest in the data: every entity lies in one region.

Read from cases rather than declared, so a contract needs no hierarchy of its own: monitoring
nests an entity's findings under its region's, and counterfactual audits move an entity with its
region (and give a region one of its entities)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

__all__ = ["SegmentParents", "segment_parents"]

SegmentParents = dict[tuple[str, str], tuple[str, str]]
"""(field, value) -> (coarser field, its value that holds every case of it)."""


def segment_parents(frame: pd.DataFrame, segments: Sequence[str]) -> SegmentParents:
    """Which segment values nest inside a value of another segment field (entity -> region).

    A field nests under another when every one of its values occurs with exactly one value of
    the other, which has fewer values: a hierarchy in the data, not a coincidence of one value.
    The closest parent (the coarser field with most values) wins when there are several."""
    fields = [f for f in segments if f in frame.columns]
    distinct = {f: frame[f].nunique(dropna=True) for f in fields}
    out: SegmentParents = {}
    for child in fields:
        parents = [p for p in fields if p != child and 1 < distinct[p] < distinct[child]]
        for parent in sorted(parents, key=lambda p: -distinct[p]):
            pairs = frame[[child, parent]].dropna().astype(str).drop_duplicates()
            if len(pairs) and not pairs[child].duplicated().any():
                out |= {(child, c): (parent, p) for c, p in pairs.itertuples(index=False)}
                break
    return out
