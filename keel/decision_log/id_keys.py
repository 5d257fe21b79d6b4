"""Who holds an idempotency key: `decision_ids` (migration 0011), filled by the decisions trigger.

A key belongs to a decision in the live log. When its month leaves the live log the key expires
(`expire_keys`): the caller may send it again, so a newer live decision may hold it by the time the
month is restored for an investigation. Restored rows come back exactly as archived (their hashes
cover the key), so such a key stays with the live decision that holds it: the restored decision
keeps the key in its row but not in `decision_ids`, an idempotent replay of the key still answers
with the live decision, and the restore event lists each pair (`KeyConflict`). Neither
`keel verify-log` nor `keel verify-archive` reads `decision_ids`, so both verify unchanged.

The pairs are found in the restore's transaction (which holds the decisions chain's head, so no
writer can take a key meanwhile), set-wise: the restored keys are staged in a temporary table and
joined with `decision_ids` on its unique index, before any row goes in. The restore never fails
halfway on a key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from keel.decision_log.bulk import insert_rows
from keel.decision_log.database import Connection

__all__ = ["KeyConflict", "expire_keys", "return_held_keys", "set_aside_held_keys"]

_STAGED = "keel_restored_keys"
_COLUMNS = ("seq", "decision_id", "caller", "model", "idempotency_key", "request_index")


@dataclass(frozen=True)
class KeyConflict:
    """A restored decision whose idempotency key a live decision holds: the live one keeps it."""

    restored: str
    """The restored (archived) decision's id."""
    held_by: str
    """The live decision that holds the key."""
    caller: str
    model: str
    idempotency_key: str
    request_index: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def expire_keys(conn: Connection, through_seq: int) -> None:
    """The keys of decisions up to `through_seq` (leaving the live log) may be used again."""
    conn.execute(
        "UPDATE decision_ids SET idempotency_key = NULL WHERE seq <= ? AND idempotency_key IS NOT NULL",
        (through_seq,),
    )


def set_aside_held_keys(conn: Connection, postgres: bool, fs: Any, paths: Sequence[str]) -> list[KeyConflict]:
    """Before archived decisions (`paths`: their Parquet files) are restored: the keys they carry
    that live decisions hold, oldest restored row first. Those holders' keys are set aside until
    `return_held_keys` (the insert's trigger records every restored row's key, and would refuse a
    held one)."""
    conn.execute(
        f"CREATE TEMPORARY TABLE {_STAGED} (seq BIGINT, decision_id TEXT, caller TEXT, model TEXT, "
        "idempotency_key TEXT, request_index INTEGER)"
    )
    for path in paths:
        with fs.open(path, "rb") as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=20_000, columns=list(_COLUMNS)):
                keyed = batch.filter(pc.is_valid(batch.column("idempotency_key")))
                if keyed.num_rows:
                    columns = [keyed.column(c).to_pylist() for c in _COLUMNS]
                    insert_rows(conn, postgres, _STAGED, _COLUMNS, list(zip(*columns, strict=True)))
    found = conn.execute(
        f"SELECT r.decision_id, i.decision_id, r.caller, r.model, r.idempotency_key, r.request_index "
        f"FROM {_STAGED} r JOIN decision_ids i ON i.caller = r.caller AND i.model = r.model "
        "AND i.idempotency_key = r.idempotency_key AND i.request_index = r.request_index "
        "WHERE i.idempotency_key IS NOT NULL AND i.decision_id <> r.decision_id ORDER BY r.seq"
    ).fetchall()
    conn.execute(f"DROP TABLE {_STAGED}")
    conflicts = [KeyConflict(str(a), str(b), str(c), str(d), str(e), int(f)) for a, b, c, d, e, f in found]
    for conflict in conflicts:
        conn.execute(
            "UPDATE decision_ids SET idempotency_key = NULL WHERE decision_id = ?", (conflict.held_by,)
        )
    return conflicts


def return_held_keys(conn: Connection, conflicts: Sequence[KeyConflict]) -> None:
    """After the restored rows are in: each set-aside key back to the live decision holding it."""
    for conflict in conflicts:
        conn.execute(
            "UPDATE decision_ids SET idempotency_key = NULL WHERE decision_id = ?", (conflict.restored,)
        )
    for conflict in conflicts:
        conn.execute(
            "UPDATE decision_ids SET idempotency_key = ? WHERE decision_id = ?",
            (conflict.idempotency_key, conflict.held_by),
        )
