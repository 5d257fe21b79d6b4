"""The event outbox's table, `event_outbox`: events waiting for delivery, and what became of them.

An event is staged in the same transaction as the fact it announces (an alias-history row, a
monitor run), so it exists exactly when its cause does; a dispatcher (keel.events.dispatcher)
delivers it later, off the path of the action. Only this module writes the table's SQL.

Claiming takes a lease: the claim's transaction picks due rows and stamps them with the worker
and a lease end, then commits, and delivery happens outside any transaction. On PostgreSQL the
pick is `SELECT ... FOR UPDATE SKIP LOCKED`, so replicas claiming together take disjoint rows
instead of waiting on each other; on SQLite the claim holds the database's single write lock.
A worker that dies mid-delivery leaves its rows to the next claim once the lease ends, which is
why delivery is at least once: receivers dedupe on the event id, stable across attempts.

A settled row's `next_attempt_at` is when it was settled (delivered, or given up as failed), so
the purge of old settled rows reads the same (status, next_attempt_at) index as the claim.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from keel.decision_log.database import Connection, Database

__all__ = [
    "DELIVERED",
    "FAILED",
    "PENDING",
    "STATUSES",
    "TABLE",
    "Claimed",
    "OutboxEvent",
    "claim",
    "counts",
    "listing",
    "purge",
    "requeue",
    "settle",
    "stage",
]

TABLE = "event_outbox"
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATUSES = (PENDING, DELIVERED, FAILED)
_EVENT_COLUMNS = ("event_id", "type", "source", "subject", "time", "data")
_LISTED = ("seq", *_EVENT_COLUMNS, "status", "attempts", "next_attempt_at", "delivered_at", "last_error")


@dataclass(frozen=True)
class OutboxEvent:
    """One CloudEvent's attributes and JSON data, as staged; the id is fixed here, once."""

    type: str
    source: str
    subject: str | None
    data: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="microseconds"))


@dataclass(frozen=True)
class Claimed:
    """A claimed row: the event, its attempts so far, and the sinks (by id) that already have it."""

    seq: int
    event: OutboxEvent
    attempts: int
    delivered_to: frozenset[str]


def stage(conn: Connection, events: Sequence[OutboxEvent], now: float) -> None:
    """Add events inside the caller's open write transaction (its commit is theirs), due at `now`."""
    sql = (
        f"INSERT INTO {TABLE} ({', '.join(_EVENT_COLUMNS)}, status, attempts, next_attempt_at, "
        f"delivered_to) VALUES ({', '.join('?' * len(_EVENT_COLUMNS))}, ?, 0, ?, '[]')"
    )
    for e in events:
        data = json.dumps(e.data, sort_keys=True, separators=(",", ":"), default=str)
        conn.execute(sql, (e.id, e.type, e.source, e.subject, e.time, data, PENDING, now))


def claim(
    db: Database,
    worker: str,
    limit: int,
    lease_seconds: float,
    now: float,
    types: Collection[str] | None = None,
) -> list[Claimed]:
    """Lease up to `limit` due pending rows (oldest first; of `types` only, unless None) to
    `worker` until now + lease."""
    if types is not None and not types:
        return []
    kinds = sorted(types or ())
    of_type = f"AND type IN ({', '.join('?' * len(kinds))}) " if kinds else ""
    pick = (
        f"SELECT seq FROM {TABLE} WHERE status = ? AND next_attempt_at <= ? {of_type}"
        "AND (claimed_until IS NULL OR claimed_until < ?) ORDER BY seq LIMIT ?"
    )
    if db.is_postgres:
        pick += " FOR UPDATE SKIP LOCKED"
    conn = db.connect()
    try:
        with db.transaction(conn):
            params = (PENDING, now, *kinds, now, limit)
            seqs = [int(r[0]) for r in conn.execute(pick, params).fetchall()]
            if not seqs:
                return []
            marks = ", ".join("?" * len(seqs))
            conn.execute(
                f"UPDATE {TABLE} SET claimed_by = ?, claimed_until = ? WHERE seq IN ({marks})",
                (worker, now + lease_seconds, *seqs),
            )
            rows = conn.execute(
                f"SELECT seq, {', '.join(_EVENT_COLUMNS)}, attempts, delivered_to FROM {TABLE} "
                f"WHERE seq IN ({marks}) ORDER BY seq",
                seqs,
            ).fetchall()
    finally:
        conn.close()
    return [
        Claimed(
            seq=int(r[0]),
            event=OutboxEvent(
                id=r[1], type=r[2], source=r[3], subject=r[4], time=r[5], data=json.loads(r[6])
            ),
            attempts=int(r[7]),
            delivered_to=frozenset(json.loads(r[8] or "[]")),
        )
        for r in rows
    ]


def settle(
    db: Database,
    worker: str,
    claimed: Claimed,
    delivered_to: frozenset[str],
    status: str,
    next_attempt_at: float,
    error: str | None,
) -> bool:
    """Record one attempt on a row `worker` still holds and release it; False if its lease was
    lost (another worker took it over, and its outcome is the one that counts)."""
    delivered_at = datetime.now(UTC).isoformat(timespec="seconds") if status == DELIVERED else None
    conn = db.connect()
    try:
        with db.transaction(conn):
            cur = conn.execute(
                f"UPDATE {TABLE} SET status = ?, attempts = attempts + 1, next_attempt_at = ?, "
                "delivered_to = ?, last_error = ?, delivered_at = ?, claimed_by = NULL, "
                "claimed_until = NULL WHERE seq = ? AND claimed_by = ?",
                (
                    status,
                    next_attempt_at,
                    json.dumps(sorted(delivered_to)),
                    error,
                    delivered_at,
                    claimed.seq,
                    worker,
                ),
            )
            return int(cur.rowcount) == 1
    finally:
        conn.close()


def listing(db: Database, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest rows (of one status, or all), newest first, `data` parsed."""
    where, params = ("WHERE status = ?", [status]) if status else ("", [])
    sql = f"SELECT {', '.join(_LISTED)} FROM {TABLE} {where} ORDER BY seq DESC LIMIT ?"
    with db.reading() as reader:
        rows = reader.all(sql, (*params, limit))
    out = []
    for r in rows:
        row = dict(zip(_LISTED, r, strict=True))
        row["data"] = json.loads(row["data"])
        out.append(row)
    return out


def counts(db: Database) -> dict[str, int]:
    """How many rows are in each status (every status named, zeros included)."""
    with db.reading() as reader:
        rows = reader.all(f"SELECT status, COUNT(*) FROM {TABLE} GROUP BY status")
    return {s: 0 for s in STATUSES} | {str(s): int(n) for s, n in rows}


def purge(db: Database, status: str, settled_before: float, limit: int) -> int:
    """Delete up to `limit` rows of a settled `status` (delivered or failed) settled before the
    epoch second `settled_before`, in one short transaction; how many."""
    if status == PENDING:
        raise ValueError("pending events are never purged")
    sql = (
        f"DELETE FROM {TABLE} WHERE seq IN (SELECT seq FROM {TABLE} WHERE status = ? "
        "AND next_attempt_at < ? LIMIT ?)"
    )
    conn = db.connect()
    try:
        with db.transaction(conn):
            return int(conn.execute(sql, (status, settled_before, limit)).rowcount)
    finally:
        conn.close()


def requeue(db: Database, now: float) -> int:
    """Make every failed row pending again, due now, its attempts counted afresh; how many."""
    conn = db.connect()
    try:
        with db.transaction(conn):
            cur = conn.execute(
                f"UPDATE {TABLE} SET status = ?, attempts = 0, next_attempt_at = ? WHERE status = ?",
                (PENDING, now, FAILED),
            )
            return int(cur.rowcount)
    finally:
        conn.close()
