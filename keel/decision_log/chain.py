"""The decision log's hash chains (decisions, feedback, alias moves): which columns a row's hash
covers and how it is computed.

A row's hash links it to the previous row: HMAC-SHA256 under the chain key named in the row's
`key_id` of (previous hash, "\\n", sha256 of the row content). Rows written before the log had a
key (`key_id` NULL) used plain sha256 of the same input and still verify, reported as unkeyed.
The content digest covers every logged column, each value tagged with its type and
length-framed so no two different rows encode alike. It is computed where the row is built (the
request thread), from the record's JSON text exactly as stored, so the log writer only hashes
130 bytes per row while it holds the write lock. Logs written before this format (the content
re-encoded as one JSON array) still verify: see `legacy_row_hash`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import numbers
from typing import Any

__all__ = [
    "ALIAS_COLUMNS",
    "BATCH",
    "BATCH_CALLER_PREFIX",
    "CHAINS",
    "DECISION_COLUMNS",
    "FEEDBACK_COLUMNS",
    "LIVE",
    "ORIGIN",
    "ORIGINS",
    "RETENTION_COLUMNS",
    "SHADOW",
    "chain_hash",
    "chain_hashes",
    "column_digests",
    "content_digest",
    "hashed_count",
    "hashed_values",
    "legacy_row_hash",
    "row_hash",
]

DECISION_COLUMNS = (
    "decision_id",
    "model",
    "model_version",
    "created_at",
    "caller",
    "case_id",
    "idempotency_key",
    "request_hash",
    "request_index",
    "outcome",
    "abstained",
    "route",
    "confidence",
    "segments",
    "intervened",
    "record",
    "origin",
    "process_instance",
)
FEEDBACK_COLUMNS = (
    "feedback_id",
    "decision_id",
    "model",
    "created_at",
    "caller",
    "actor",
    "final_outcome",
    "kind",
    "record",
    "process_instance",
)
ALIAS_COLUMNS = (
    "model",
    "alias",
    "action",
    "from_version",
    "to_version",
    "actor",
    "reason",
    "forced",
    "gates",
    "created_at",
)
"""An alias move (keel.decision_log.alias_history): `forced` a boolean, `gates` JSON text."""
AUDIT_PLAN_COLUMNS = (
    "model",
    "version",
    "field",
    "probabilities",
    "default_probability",
    "cross_share",
    "seed",
    "created_at",
    "actor",
    "reason",
    "detect_ratio",
)
"""An audit plan (keel.decision_log.audit_plans): `probabilities` as sorted JSON text; `detect_ratio`
(migration 0012, the plan's --detect target) is covered only when set."""
RETENTION_COLUMNS = ("action", "month", "detail", "policy", "actor", "reason", "created_at")
"""A records event (keel.decision_log.retention): `detail` and `policy` as sorted JSON text."""
CHAINS = {
    "decisions": DECISION_COLUMNS,
    "feedback": FEEDBACK_COLUMNS,
    "alias_history": ALIAS_COLUMNS,
    "audit_plans": AUDIT_PLAN_COLUMNS,
    "retention_events": RETENTION_COLUMNS,
}

BATCH_CALLER_PREFIX = "batch:"
"""Callers of decisions logged by `keel score --log` (their origin is `batch`)."""
LIVE, BATCH, SHADOW = "live", "batch", "shadow"
ORIGINS = (LIVE, BATCH, SHADOW)
"""Where a decision came from: answered on the online route (live), logged by `keel score --log`
(batch), or scored beside the champion and never returned (shadow). Monitoring counts live ones."""
ORIGIN = DECISION_COLUMNS.index("origin")
"""Where a decision row's `origin` sits among its values."""
CORRELATED = ("decisions", "feedback")
"""Chains whose last column is `process_instance` (migration 0008): the caller's process instance,
copied from the record's correlation context so a process's decisions are found by index."""
LATE_LAST_COLUMN = (*CORRELATED, "audit_plans")
"""Chains whose last column was added after rows were chained (0008's `process_instance`, 0012's
`detect_ratio` of audit plans): covered by the hash only when set."""


def hashed_values(table: str, values: tuple[Any, ...]) -> tuple[Any, ...]:
    """The column values a row's hash covers (in CHAINS order).

    Columns added after rows were chained are covered only when they hold something: rows logged
    before they existed verify unchanged, and setting or clearing one still breaks its hash (the
    encoding is self-delimiting, so a value more or less never encodes alike). A row with a
    `process_instance` is covered whole; without one, a decision's `origin` is covered only when
    it is not `live`. An audit plan's `detect_ratio` is covered when set.
    """
    return values[: hashed_count(table, values)]


def hashed_count(table: str, values: tuple[Any, ...]) -> int:
    """How many of a row's leading values its hash covers (always a prefix: see hashed_values)."""
    if table in LATE_LAST_COLUMN:
        if values[-1] is not None:
            return len(values)
        if table == "decisions" and values[ORIGIN] == LIVE:
            return ORIGIN
        return len(values) - 1
    return len(values)


_INTS = (bool, int)  # a tuple built once: `bool | int` in isinstance is built on every call


def _encode(value: Any) -> bytes:
    """One column value, tagged and framed; ints and floats as the database returns them."""
    if value is None:
        return b"n;"
    if isinstance(value, str):
        data = value.encode()
        return b"s%d:%b" % (len(data), data)
    if isinstance(value, _INTS):
        return b"i%d;" % int(value)
    if isinstance(value, float):
        return b"f%b;" % float.__repr__(value).encode()  # repr round-trips a double exactly
    # numpy scalars and the like: hashed as the int or float the database hands back
    if isinstance(value, numbers.Integral):
        return _encode(int(value))
    if isinstance(value, numbers.Real):
        return _encode(float(value))
    return _encode(str(value))


def content_digest(values: tuple[Any, ...]) -> str:
    """sha256 of one row's logged column values (in CHAINS column order)."""
    return hashlib.sha256(b"".join(_encode(v) for v in values)).hexdigest()


def _encoded_column(values: list[Any], kind: str) -> list[bytes]:
    """`_encode` over a column whose type is known ("str", "int" or "float"): the same bytes, without
    the per-value type dispatch (a column from Parquet holds one type, or None)."""
    if kind == "str":
        return [b"n;" if v is None else b"s%d:%b" % (len(e), e) for v in values for e in (str(v).encode(),)]
    if kind == "int":
        return [b"n;" if v is None else b"i%d;" % int(v) for v in values]
    return [b"n;" if v is None else b"f%b;" % float.__repr__(float(v)).encode() for v in values]


def column_digests(table: str, columns: list[list[Any]], kinds: list[str]) -> list[str]:
    """`content_digest(hashed_values(table, row))` for every row of columns given in CHAINS order:
    the same digests, built a column at a time (several times faster for the long scans of archives)."""
    encoded = [_encoded_column(values, kind) for values, kind in zip(columns, kinds, strict=True)]
    sha = hashlib.sha256
    counts = _hashed_counts(table, columns)
    if counts is None:
        return [sha(b"".join(parts)).hexdigest() for parts in zip(*encoded, strict=True)]
    return [
        sha(b"".join(parts[:n])).hexdigest()
        for parts, n in zip(zip(*encoded, strict=True), counts, strict=True)
    ]


def _hashed_counts(table: str, columns: list[list[Any]]) -> list[int] | None:
    """`hashed_count` of every row, from the two columns it depends on (None: every column, always)."""
    if table not in LATE_LAST_COLUMN:
        return None
    width, last = len(columns), columns[-1]
    if table == "decisions":
        return [
            width if v is not None else ORIGIN if o == LIVE else width - 1
            for v, o in zip(last, columns[ORIGIN], strict=True)
        ]
    return [width if v is not None else width - 1 for v in last]


def chain_hash(prev_hash: str, digest: str, key: bytes | None = None) -> str:
    """The link from the previous row: HMAC-SHA256 under `key`, or sha256 for an unkeyed row."""
    message = f"{prev_hash}\n{digest}".encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.digest(key, message, "sha256").hex()


def chain_hashes(prev_hashes: list[str], digests: list[str], key: bytes) -> list[str]:
    """`chain_hash` of many keyed rows at once (each with its own stored previous hash)."""
    digest = hmac.digest
    return [
        digest(key, f"{p}\n{d}".encode(), "sha256").hex() for p, d in zip(prev_hashes, digests, strict=True)
    ]


def row_hash(prev_hash: str, values: tuple[Any, ...], key: bytes | None = None) -> str:
    """The hash a row with these column values gets after a row whose hash is `prev_hash`."""
    return chain_hash(prev_hash, content_digest(values), key)


def legacy_row_hash(prev_hash: str, values: tuple[Any, ...]) -> str:
    """The first format: the values re-encoded as one JSON array, hashed with the previous hash."""
    content = json.dumps(list(values), separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{prev_hash}\n{content}".encode()).hexdigest()
