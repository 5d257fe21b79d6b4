"""Records kept for years: archived months leave the live log, come back for an investigation, and
every such step is an entry of the `retention_events` hash chain (what, when, who, under which
policy), verified with the rest of the log by `keel verify-log`.

Removal (`remove_months`): only a month whose archive verifies (signature, files, every row) and
whose segment continues the live log's start, oldest first, never one under legal hold. Its rows
with seq up to the segment's end leave `decisions` and `feedback` (PostgreSQL: whole partitions are
detached and dropped; the few rows of a partition that straddles the cut are deleted), their ids stay
in `decision_ids` / `feedback_ids` (the id-to-month index; idempotency keys expire with the month),
and a `remove` event records the segments, the archive URL and the live chains' new start (`bases`):
`keel verify-log` walks each chain from there, the archive holds everything before.

Restore (`restore_months`): the archived months from the one asked back to the live log's start are
read from the archive (verified first) and inserted as they were (same seq, hashes and key ids), so
the live chain again starts earlier and verifies whole; a `restore` event records it. Restoring
always extends the live log backwards without a gap, so one `bases` per chain says where it starts.
An idempotency key a restored decision carries that a newer live decision holds stays with the live
one (keel.decision_log.id_keys); the event counts and lists those pairs.

Holds (`hold` / `release`) and archive deletions (`delete_archived`) are events too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec
import pyarrow.parquet as pq

from keel.decision_log.archive_format import SEGMENTED, Part, month_folders, parts_of, read_manifest
from keel.decision_log.archive_verify import verify_archive
from keel.decision_log.bulk import insert_rows
from keel.decision_log.chain import RETENTION_COLUMNS
from keel.decision_log.database import GENESIS, Connection, Database, Reader
from keel.decision_log.id_keys import KeyConflict, expire_keys, return_held_keys, set_aside_held_keys
from keel.decision_log.log_key import ChainKeys
from keel.decision_log.months import month_bounds
from keel.decision_log.partitions import partition_name
from keel.decision_log.rows import append_linked

__all__ = [
    "TABLE",
    "Restored",
    "RetentionError",
    "bases",
    "delete_archived",
    "events",
    "held_months",
    "hold",
    "release",
    "remove_months",
    "restore_months",
]

TABLE = "retention_events"
MOVES = ("remove", "restore")
"""Events that move where the live chains start (they carry `bases`)."""


class RetentionError(Exception):
    """A removal, restore, hold or deletion refused (what is wrong is said)."""


LISTED_CONFLICTS = 1000
"""Key conflicts a restore event lists by name (their count is always recorded)."""


@dataclass(frozen=True)
class Restored:
    months: list[str]
    key_conflicts: list[KeyConflict]
    """Restored decisions whose idempotency key a live decision holds (keel.decision_log.id_keys)."""


@dataclass(frozen=True)
class Event:
    seq: int
    action: str
    month: str | None
    detail: dict[str, Any]
    policy: dict[str, Any]
    actor: str
    reason: str
    created_at: str


def events(reader: Reader, actions: Sequence[str] = ()) -> list[Event]:
    """The chain's events (of `actions`, or all), oldest first."""
    where = f"WHERE action IN ({', '.join('?' * len(actions))})" if actions else ""
    rows = reader.all(
        f"SELECT seq, {', '.join(RETENTION_COLUMNS)} FROM {TABLE} {where} ORDER BY seq", actions
    )
    return [Event(int(r[0]), r[1], r[2], json.loads(r[3]), json.loads(r[4]), r[5], r[6], r[7]) for r in rows]


def bases(reader: Reader) -> dict[str, tuple[int, str]]:
    """Where each segmented chain starts in the live log: (seq before its first row, the hash that
    row links to). (0, GENESIS) until a month is removed."""
    moves = events(reader, MOVES)
    found = moves[-1].detail["bases"] if moves else {}
    return {t: (int(found[t][0]), str(found[t][1])) if t in found else (0, GENESIS) for t in SEGMENTED}


def held_months(reader: Reader) -> set[str]:
    held: set[str] = set()
    for event in events(reader, ("hold", "release")):
        (held.add if event.action == "hold" else held.discard)(str(event.month))
    return held


def _append(
    conn: Connection, keys: ChainKeys, action: str, month: str | None, detail: dict[str, Any], **who: Any
) -> None:
    values = (
        action,
        month,
        json.dumps(detail, sort_keys=True),
        json.dumps(who.get("policy") or {}, sort_keys=True),
        who["actor"],
        who.get("reason") or "",
        datetime.now(UTC).isoformat(),
    )
    append_linked(conn, TABLE, values, keys.current, keys.current_key)


@contextmanager
def _write(db: Database, tables: Sequence[str]) -> Iterator[Connection]:
    """One write transaction holding the heads of `tables` and of the events chain."""
    conn = db.connect()
    try:
        with db.transaction(conn, lock_heads=[*tables, TABLE]):
            yield conn
    finally:
        conn.close()


def hold(db: Database, keys: ChainKeys, month: str, actor: str, reason: str) -> None:
    """Put a month under legal hold: never removed from the live log nor deleted from archives."""
    with _write(db, ()) as conn:
        _append(conn, keys, "hold", month, {}, actor=actor, reason=reason)


def release(db: Database, keys: ChainKeys, month: str, actor: str, reason: str) -> None:
    with _write(db, ()) as conn:
        with_reader = Reader(conn, db.is_postgres)
        if month not in held_months(with_reader):
            raise RetentionError(f"{month} is not under legal hold")
        _append(conn, keys, "release", month, {}, actor=actor, reason=reason)


def _archived(url: str, keys: ChainKeys, db: Database) -> dict[str, dict[str, Part]]:
    """Every month of a verified archive that continues the live log: its segments."""
    report = verify_archive(url, keys, live=db)
    if not report.ok:
        raise RetentionError(f"the archive at {url} does not verify: {report.where}: {report.problem}")
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    return {m: parts_of(read_manifest(fs, root, m), "segments") for m in month_folders(fs, root)}


def remove_months(
    db: Database,
    keys: ChainKeys,
    url: str,
    through: str,
    actor: str,
    reason: str = "",
    policy: dict[str, Any] | None = None,
    stop_at_hold: bool = False,
) -> list[str]:
    """Remove every archived month up to `through` (YYYY-MM) not yet removed, oldest first; returns
    the months removed. Refuses a held month and the months after it (with `stop_at_hold`, stops
    there quietly: a retention run)."""
    if keys.current is None:
        raise RetentionError("removals are signed into the log's chain: set KEEL_LOG_KEY_FILE")
    archived = _archived(url, keys, db)
    removed: list[str] = []
    for month, parts in archived.items():
        if month > through:
            break
        with _write(db, SEGMENTED) as conn:
            reader = Reader(conn, db.is_postgres)
            start = bases(reader)
            if all(parts[t].last_seq <= start[t][0] for t in SEGMENTED):
                continue  # removed before
            if month in held_months(reader):
                if stop_at_hold:
                    return removed
                raise RetentionError(f"{month} is under legal hold: it stays in the live log (keel log hold)")
            for table in SEGMENTED:
                if parts[table].prev_hash != start[table][1]:
                    raise RetentionError(
                        f"{url}/{month} does not continue the live {table} chain (which starts after "
                        f"seq {start[table][0]}): remove the months before it first"
                    )
            emptied = [] if db.is_postgres else _emptied(reader, parts)
            if emptied:
                if stop_at_hold:
                    return removed
                raise RetentionError(
                    f"{month} holds the last row of the {' and '.join(emptied)} chain: removing it would "
                    "leave the table empty, and SQLite numbers the next row of an empty table 1 again. "
                    "On SQLite the month stays live until a later row is logged"
                )
            for table in SEGMENTED:
                _drop(conn, db.is_postgres, table, month, parts[table].last_seq)
            new = {t: [parts[t].last_seq, parts[t].last_hash] for t in SEGMENTED}
            detail = {"url": url, "segments": {t: p.to_json() for t, p in parts.items()}, "bases": new}
            _append(conn, keys, "remove", month, detail, actor=actor, reason=reason, policy=policy)
            removed.append(month)
    return removed


def _emptied(reader: Reader, parts: dict[str, Part]) -> list[str]:
    """The chains whose live table the removal would empty (SQLite's seq is its rowid: max + 1)."""
    out = []
    for table in SEGMENTED:
        head = reader.one("SELECT seq FROM chain_heads WHERE name = ?", (table,))
        if parts[table].last_seq and head and int(head[0]) <= parts[table].last_seq:
            out.append(table)
    return out


def _drop(conn: Connection, postgres: bool, table: str, month: str, last_seq: int) -> None:
    """Rows up to `last_seq` leave the live table; their ids stay in the id table."""
    if postgres:
        # A month's partition whose rows all fall in the removed range goes whole (no row by row
        # delete, no dead tuples); partitions of earlier months left from strays go the same way.
        for name in _partitions_up_to(conn, table, month):
            top = conn.execute(f"SELECT max(seq) FROM {name}").fetchone()[0]
            if top is None or int(top) <= last_seq:
                conn.execute(f"ALTER TABLE {table} DETACH PARTITION {name}")
                conn.execute(f"DROP TABLE {name}")
    conn.execute(f"DELETE FROM {table} WHERE seq <= ?", (last_seq,))
    if table == "decisions":
        expire_keys(conn, last_seq)


def _partitions_up_to(conn: Connection, table: str, month: str) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = CAST(? AS regclass) ORDER BY c.relname",
        (table,),
    ).fetchall()
    last = partition_name(table, month)
    return [str(r[0]) for r in rows if str(r[0]) <= last and not str(r[0]).endswith("_default")]


def restore_months(
    db: Database, keys: ChainKeys, url: str, month: str, actor: str, reason: str = ""
) -> Restored:
    """Bring back every removed month from `month` to the live log's start, in one transaction."""
    if keys.current is None:
        raise RetentionError("restores are signed into the log's chain: set KEEL_LOG_KEY_FILE")
    archived = _archived(url, keys, db)
    with db.reading() as reader:
        start = bases(reader)
    back = [
        m
        for m, parts in archived.items()
        if m >= month and all(parts[t].last_seq <= start[t][0] for t in SEGMENTED)
    ]
    if not back or back[0] != month:
        raise RetentionError(f"{month} is not a removed month archived at {url}")
    last = archived[back[-1]]
    if any(last[t].last_seq != start[t][0] or last[t].last_hash != start[t][1] for t in SEGMENTED):
        raise RetentionError(
            f"the months {back[0]}..{back[-1]} at {url} do not end where the live log starts"
        )
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    with _write(db, SEGMENTED) as conn:
        paths = [f"{root}/{m}/decisions.parquet" for m in back]
        conflicts = set_aside_held_keys(conn, db.is_postgres, fs, paths)
        for m in back:
            for table in SEGMENTED:
                _insert(conn, db.is_postgres, fs, f"{root}/{m}/{table}.parquet", table, m)
        return_held_keys(conn, conflicts)
        first = archived[back[0]]
        new = {t: [(first[t].first_seq or first[t].last_seq + 1) - 1, first[t].prev_hash] for t in SEGMENTED}
        detail = {
            "url": url,
            "months": back,
            "bases": new,
            "key_conflicts": len(conflicts),
            "keys_kept_by_live": [c.to_json() for c in conflicts[:LISTED_CONFLICTS]],
        }
        _append(conn, keys, "restore", month, detail, actor=actor, reason=reason)
    return Restored(back, conflicts)


def _insert(conn: Connection, postgres: bool, fs: Any, path: str, table: str, month: str) -> None:
    """An archived segment's rows back in place, as they were (seq, hashes, key ids)."""
    ids = "decision_ids" if table == "decisions" else "feedback_ids"
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        names = parquet.schema_arrow.names
        if postgres and parquet.metadata.num_rows:
            _month_partition(conn, table, month)
        for batch in parquet.iter_batches(batch_size=20_000):
            columns = [batch.column(n).to_pylist() for n in names]
            seqs = columns[0]
            # The id rows stayed when the month left; the insert's trigger records them again.
            conn.execute(f"DELETE FROM {ids} WHERE seq >= ? AND seq <= ?", (min(seqs), max(seqs)))
            insert_rows(conn, postgres, table, names, list(zip(*columns, strict=True)))


def _month_partition(conn: Connection, table: str, month: str) -> None:
    name = partition_name(table, month)
    if conn.execute("SELECT to_regclass(?)", (name,)).fetchone()[0] is None:
        start, end = month_bounds(month)
        conn.execute(f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ('{start}') TO ('{end}')")


def delete_archived(
    db: Database, keys: ChainKeys, url: str, through: str, actor: str, policy: dict[str, Any] | None = None
) -> list[str]:
    """Delete the archive's oldest months up to `through`, stopping at a held month (the archive
    stays one unbroken sequence) and at a month still in the live log; returns them."""
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    deleted: list[str] = []
    for month in month_folders(fs, root):
        if month > through:
            break
        parts = parts_of(read_manifest(fs, root, month), "segments")
        with _write(db, ()) as conn:
            reader = Reader(conn, db.is_postgres)
            if month in held_months(reader):
                return deleted
            if any(parts[t].last_seq > bases(reader)[t][0] for t in SEGMENTED):
                return deleted  # still (or again) in the live log: remove it first
            _append(conn, keys, "delete_archive", month, {"url": url}, actor=actor, policy=policy)
            fs.rm(f"{root}/{month}", recursive=True)
        deleted.append(month)
    return deleted
