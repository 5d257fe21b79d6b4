"""The decision log's hash chains: how a row is hashed, and the walk that checks them.

A row's hash is sha256(previous row's hash, "\\n", sha256(row content)). The content digest
covers every logged column, each value tagged with its type and length-framed so no two
different rows encode alike. It is computed where the row is built (the request thread), from
the record's JSON text exactly as stored, so the log writer only hashes 130 bytes per row while
it holds the write lock. Logs written before this format (the row content re-encoded as one JSON
array and hashed with the previous hash) still verify: `verify` accepts a row that matches
either format, and both bind the row's content and its predecessor.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from keel.serving.database import GENESIS, Connection, Database

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
)
CHAINS = {"decisions": DECISION_COLUMNS, "feedback": FEEDBACK_COLUMNS}


def _encode(value: Any) -> bytes:
    """One column value, tagged and framed; ints and floats as the database returns them."""
    if value is None:
        return b"n;"
    if isinstance(value, str):
        data = value.encode()
        return b"s%d:%b" % (len(data), data)
    if isinstance(value, bool | int):
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


def chain_hash(prev_hash: str, digest: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{digest}".encode()).hexdigest()


def row_hash(prev_hash: str, values: tuple[Any, ...]) -> str:
    """The hash a row with these column values gets after a row whose hash is `prev_hash`."""
    return chain_hash(prev_hash, content_digest(values))


def legacy_row_hash(prev_hash: str, values: tuple[Any, ...]) -> str:
    """The first format: the values re-encoded as one JSON array, hashed with the previous hash."""
    content = json.dumps(list(values), separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{prev_hash}\n{content}".encode()).hexdigest()


@dataclass
class VerifyResult:
    ok: bool
    rows_checked: int
    table: str | None = None
    bad_seq: int | None = None
    problem: str | None = None


def verify(db: Database, batch_size: int = 5000) -> VerifyResult:
    """Recompute every hash in both chains; report the first row that does not fit."""
    checked = 0
    conn = db.connect()
    try:
        for table, columns in CHAINS.items():
            prev, last_seq = GENESIS, 0
            for row in _stream(
                conn,
                f"SELECT seq, {', '.join(columns)}, prev_hash, row_hash FROM {table} ORDER BY seq",
                batch_size,
            ):
                seq, values, stored_prev, stored_hash = row[0], tuple(row[1:-2]), row[-2], row[-1]
                checked += 1
                if stored_prev != prev:
                    return VerifyResult(
                        False,
                        checked,
                        table,
                        seq,
                        "previous-hash link broken (a row before it was deleted or altered)",
                    )
                if row_hash(prev, values) != stored_hash and legacy_row_hash(prev, values) != stored_hash:
                    return VerifyResult(False, checked, table, seq, "row content does not match its hash")
                prev, last_seq = stored_hash, seq
            head = conn.execute("SELECT seq, row_hash FROM chain_heads WHERE name = ?", (table,)).fetchone()
            head_seq, head_hash = (int(head[0]), head[1]) if head else (0, GENESIS)
            if (head_seq, head_hash) != (last_seq, prev):
                return VerifyResult(
                    False,
                    checked,
                    table,
                    head_seq or None,
                    f"chain ends at seq {last_seq} but its recorded head is seq {head_seq} "
                    "(rows were removed from the end)",
                )
        conn.commit()
    finally:
        conn.close()
    return VerifyResult(True, checked)


def _stream(conn: Connection, sql: str, batch_size: int) -> Iterator[tuple[Any, ...]]:
    cur = conn.execute(sql)
    while True:
        rows = cur.fetchmany(batch_size)
        if not rows:
            return
        yield from rows
