"""The alias history's table: every move of a model's aliases, one hash chain of the decision log.

Rows are appended and read only here. Each row is chained like decisions and feedback
(keel.decision_log.chain): HMAC-SHA256 under the chain key of (previous hash, content digest of
ALIAS_COLUMNS), its head in `chain_heads`, covered by `keel verify-log` and its checkpoints.
Appends lock the chain head (PostgreSQL: the head row; SQLite: the database write lock), so
concurrent writers take turns and the UNIQUE `prev_hash` refuses a fork from anything else.

Rows written before the history joined the log's chain (migration 0004) were plain sha256 over
their JSON content; the migration records how many there were (`chain_heads` row
`alias_history.legacy`), and only those rows may verify in that form.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from keel.decision_log.chain import ALIAS_COLUMNS
from keel.decision_log.database import Database
from keel.decision_log.log_key import ChainKeys
from keel.decision_log.outbox import OutboxEvent, stage
from keel.decision_log.rows import append_linked

__all__ = [
    "ALIAS_COLUMNS",
    "LEGACY_HEAD",
    "TABLE",
    "append_move",
    "legacy_alias_hash",
    "legacy_rows",
    "moves",
]

TABLE = "alias_history"
LEGACY_HEAD = "alias_history.legacy"
"""chain_heads row naming the last row chained in the pre-0004 format (seq 0: none)."""


def append_move(
    db: Database,
    keys: ChainKeys,
    move: dict[str, Any],
    events: Callable[[int, str], Sequence[OutboxEvent]] | None = None,
) -> tuple[int, str]:
    """Append one alias move at the chain's head; returns its (seq, row_hash).

    `move` holds ALIAS_COLUMNS; `gates` is a list of dicts, stored as JSON text. `events(seq,
    row_hash)` names the events announcing the move: they are staged in the event outbox in the
    same transaction, so a move is announced exactly when it is recorded."""
    values = tuple(
        json.dumps(list(move["gates"]), sort_keys=True, default=str)
        if c == "gates"
        else bool(move[c])
        if c == "forced"
        else move[c]
        for c in ALIAS_COLUMNS
    )
    key_id, key = keys.current, keys.current_key
    conn = db.connect()
    try:
        with db.transaction(conn, lock_heads=[TABLE]):
            seq, link = append_linked(conn, TABLE, values, key_id, key)
            if events is not None:
                stage(conn, events(seq, link), time.time())
    finally:
        conn.close()
    return seq, link


def moves(db: Database, model: str | None = None) -> list[dict[str, Any]]:
    """Every move (of one model, or all), oldest first, with `gates` parsed and `forced` a bool."""
    where, params = ("WHERE model = ?", (model,)) if model is not None else ("", ())
    sql = f"SELECT seq, {', '.join(ALIAS_COLUMNS)}, row_hash FROM {TABLE} {where} ORDER BY seq"
    with db.reading() as reader:
        rows = reader.all(sql, params)
    out = []
    for r in rows:
        row = dict(zip(("seq", *ALIAS_COLUMNS, "row_hash"), r, strict=True))
        row["gates"] = json.loads(row["gates"] or "[]")
        row["forced"] = bool(row["forced"])
        out.append(row)
    return out


def legacy_alias_hash(prev_hash: str, values: Sequence[Any]) -> str:
    """The pre-0004 row hash: sha256 of the previous hash and the row's content as sorted JSON."""
    content = dict(zip(ALIAS_COLUMNS, values, strict=True))
    content["forced"] = bool(content["forced"])
    content["gates"] = json.loads(content["gates"] or "[]")
    body = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def legacy_rows(db: Database) -> int:
    """How many leading rows are in the pre-0004 format."""
    with db.reading() as reader:
        row = reader.one("SELECT seq FROM chain_heads WHERE name = ?", (LEGACY_HEAD,))
    return int(row[0]) if row else 0
