"""Rows as the log stores them: column values, content digests and chain heads.

Shared by the group-committing writer (keel.decision_log.writer) and the bulk loader
(keel.decision_log.bulk), so a row logged either way is stored, and hashed, exactly alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from keel.decision_log.chain import CHAINS, LIVE, ORIGINS, chain_hash, content_digest, hashed_values
from keel.decision_log.database import GENESIS, Connection
from keel.decision_log.strict_json import dumps

if TYPE_CHECKING:
    from keel.decision_log.records import DecisionRecord

__all__ = [
    "append_linked",
    "log_row",
    "prepare",
    "process_instance",
    "read_head",
    "stored",
    "to_db",
    "write_head",
]


def to_db(column: str, value: Any) -> Any:
    """One column value as written: the record as strict JSON, `abstained` as 0/1, origin checked."""
    if column == "record":
        return dumps(value)
    if column == "abstained":
        return int(bool(value))
    if column == "origin":
        if value is None:
            return LIVE
        if value not in ORIGINS:
            raise ValueError(f"unknown decision origin {value!r}; one of {ORIGINS}")
    return value


def stored(columns: tuple[str, ...], row: dict[str, Any]) -> dict[str, Any]:
    """The row as a read would return it, without the round trip through JSON."""
    out = {col: row.get(col) for col in columns}
    if "origin" in out and out["origin"] is None:
        out["origin"] = LIVE
    if "abstained" in out:
        out["abstained"] = bool(out["abstained"])
    return out


def prepare(table: str, rows: list[dict[str, Any]]) -> tuple[list[tuple[Any, ...]], list[str]]:
    """The rows' column values (in CHAINS order) and the content digest of each."""
    columns = CHAINS[table]
    values = [tuple(to_db(col, row.get(col)) for col in columns) for row in rows]
    return values, [content_digest(hashed_values(table, v)) for v in values]


def read_head(conn: Connection, table: str) -> tuple[int, str]:
    """A chain's last (seq, hash); a chain without a head row gets one at (0, GENESIS)."""
    row = conn.execute("SELECT seq, row_hash FROM chain_heads WHERE name = ?", (table,)).fetchone()
    if row is None:
        conn.execute("INSERT INTO chain_heads (name, seq, row_hash) VALUES (?, 0, ?)", (table, GENESIS))
        return 0, GENESIS
    return int(row[0]), str(row[1])


def write_head(conn: Connection, table: str, seq: int, row_hash: str) -> None:
    """Move a chain's head to its newest row (inside the transaction that wrote the row)."""
    conn.execute("UPDATE chain_heads SET seq = ?, row_hash = ? WHERE name = ?", (seq, row_hash, table))


def append_linked(
    conn: Connection, table: str, values: tuple[Any, ...], key_id: str | None, key: bytes | None
) -> tuple[int, str]:
    """Append one row (values in CHAINS order) at the chain's head, inside a transaction that holds
    the head (Database.transaction with lock_heads); returns its (seq, row_hash). The hash covers
    chain.hashed_values: a column added late counts only when set."""
    _, prev = read_head(conn, table)
    columns = CHAINS[table]
    link = chain_hash(prev, content_digest(hashed_values(table, values)), key)
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}, prev_hash, row_hash, key_id) "
        f"VALUES ({', '.join('?' * (len(columns) + 3))}) RETURNING seq"
    )
    seq = int(conn.execute(sql, (*values, prev, link, key_id)).fetchone()[0])
    write_head(conn, table, seq, link)
    return seq, link


def process_instance(context: Mapping[str, Any] | None) -> str | None:
    """The process instance a correlation context names (keel.client.context), if any: the value
    of the rows' searchable `process_instance` column."""
    value = context.get("process_instance_id") if context else None
    return None if value is None else str(value)


def log_row(
    record: DecisionRecord,
    index: int,
    caller: str,
    key: str | None,
    digest: str | None,
    segment_fields: Sequence[str],
    origin: str = LIVE,
) -> dict[str, Any]:
    """The decision-log row for a decision record (columns monitoring reads without the record);
    `segment_fields` come from the spec of the version that decided it, `origin` says whether it
    was answered online, logged by a batch run or scored in shadow (keel.decision_log.chain)."""
    segments = {f: record["inputs"].get(f) for f in segment_fields}
    return {
        "decision_id": record["decision_id"],
        "model": record["model"],
        "model_version": record["versions"]["model_version"],
        "created_at": record["created_at"],
        "caller": caller,
        "case_id": record["case_id"],
        "idempotency_key": key,
        "request_hash": digest,
        "request_index": index,
        "outcome": record["outcome"],
        "abstained": record["abstained"],
        "route": record["route"],
        "confidence": record["confidence"],
        "segments": json.dumps(segments, sort_keys=True, separators=(",", ":")),
        "intervened": int(bool(record["rules_fired"])),
        "record": record,
        "origin": origin,
        "process_instance": process_instance(record.get("context")),
    }
