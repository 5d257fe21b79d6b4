"""Row content digests of archived rows, encoded by Arrow compute a column at a time.

The same digests as `keel.decision_log.chain.content_digest(hashed_values(table, row))`, byte for
byte (the unit tests hold them to it): each value tagged and length-framed by Arrow's kernels
(strings, integers, booleans) instead of a Python call per value, the row's covered prefix chosen
the way `hashed_count` does, then one sha256 per row. Floats are framed by Python (`repr` of a
double is the encoding, and Arrow's formatting is not Python's). `keel verify-archive` spends most
of its time here, so this is what makes it run ahead of `keel verify-log`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from keel.decision_log.chain import CHAINS, LATE_LAST_COLUMN, LIVE, ORIGIN

__all__ = ["batch_digests"]

_NULL = pa.scalar(b"n;")
_EMPTY = pa.scalar(b"")


def _framed(column: pa.Array) -> pa.Array:
    """`chain._encode` of every value of one column, as binary."""
    kind = column.type
    if pa.types.is_floating(kind):
        encoded = [
            b"n;" if v is None else b"f%b;" % float.__repr__(float(v)).encode() for v in column.to_pylist()
        ]
        return pa.array(encoded, pa.binary())
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        text = pc.cast(pc.cast(column, pa.int64()), pa.string()).cast(pa.binary())
        parts = [pa.scalar(b"i"), text, pa.scalar(b";")]
    else:
        data = column.cast(pa.string()).cast(pa.binary())
        size = pc.cast(pc.binary_length(data), pa.string()).cast(pa.binary())
        parts = [pa.scalar(b"s"), size, pa.scalar(b":"), data]
    return pc.fill_null(pc.binary_join_element_wise(*parts, _EMPTY), _NULL)


def batch_digests(table: str, columns: Mapping[str, pa.Array], rows: int) -> list[str]:
    """The content digest of each of `rows` rows; a chain column absent from `columns` (added to
    the chain after the archive was written) is NULL, as in the live log."""
    names = CHAINS[table]
    arrays = [columns[n] if n in columns else pa.nulls(rows, pa.string()) for n in names]
    framed = [_framed(a) for a in arrays]
    if table in LATE_LAST_COLUMN:
        # `hashed_count`: the last column is covered only when set; without it, a decision's
        # origin only when it is not live.
        last_set = pc.is_valid(arrays[-1])
        framed[-1] = pc.if_else(last_set, framed[-1], _EMPTY)
        if table == "decisions":
            live = pc.fill_null(pc.equal(arrays[ORIGIN], LIVE), False)
            uncovered = pc.and_(pc.invert(last_set), live)
            framed[ORIGIN] = pc.if_else(uncovered, _EMPTY, framed[ORIGIN])
    joined = pc.binary_join_element_wise(*framed, _EMPTY)
    sha = hashlib.sha256
    return [sha(b).hexdigest() for b in joined.to_pylist()]
