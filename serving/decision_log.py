"""The decision log: append-only, hash-chained, group-committed.

Callers hand rows to one writer thread and wait; the writer drains everything queued, writes it
in one transaction and commits once, so concurrent requests share an fsync (group commit). A
caller hears back only after its commit, so an acknowledged decision is durable. Threads wait
with `append`; coroutines await `append_async`, which the writer completes through the event
loop (`call_soon_threadsafe`, once per loop and batch) so no thread is parked per request.

Each row's hash chains it to the previous row (serving/log_chain.py); `verify` walks the chains
and compares their ends with `chain_heads`, so edited, deleted or truncated rows show.

Work is kept off the writer, which holds the database's write lock: callers serialise each
record to JSON and hash the row content before queueing, and the writer returns the caller's
own rows instead of reading back what it wrote. With SQLite the writer does not let a WAL
checkpoint run inside a commit (that would hold the commit's waiters for the checkpoint's
copying and fsync); it checkpoints between batches instead, after answering its waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from keel.serving.database import GENESIS, Connection, Database
from keel.serving.log_chain import (
    CHAINS,
    DECISION_COLUMNS,
    FEEDBACK_COLUMNS,
    VerifyResult,
    chain_hash,
    content_digest,
    row_hash,
    verify,
)

from keel.errors import Conflict, KeelError

__all__ = [
    "CHAINS",
    "DECISION_COLUMNS",
    "FEEDBACK_COLUMNS",
    "DecisionLog",
    "LogUnavailable",
    "VerifyResult",
    "reject_changed_replay",
    "row_hash",
]

CHECKPOINT_SECONDS = 0.5
"""SQLite: checkpoint the WAL this often while writing; at the rates one process reaches the WAL
stays a few MB. Each checkpoint runs right after a batch was answered, so it only delays the
requests that queue up meanwhile, and they are then committed together."""

log = logging.getLogger("keel.log")

Replay = Callable[[Connection], list[dict[str, Any]] | None]
"""Looks up an earlier identical write (idempotency); its rows are returned instead."""


class LogUnavailable(KeelError):
    status_code = 503


@dataclass(eq=False)
class _Submission:
    table: str
    values: list[tuple[Any, ...]]
    digests: list[str]
    rows: list[dict[str, Any]]
    """What the caller gets back once the values are committed."""
    replay: Replay | None = None
    future: Future[list[dict[str, Any]]] | None = None  # a waiting thread
    loop: asyncio.AbstractEventLoop | None = None  # or a waiting coroutine
    waiter: asyncio.Future[list[dict[str, Any]]] | None = None
    result: list[dict[str, Any]] | None = None
    error: BaseException | None = None


class DecisionLog:
    """Appends decisions and feedback durably; reads them back for lookups and monitoring."""

    def __init__(self, db: Database, max_batch: int = 1024, timeout: float = 30.0) -> None:
        self.db = db
        self.max_batch = max_batch
        self.timeout = timeout
        self._queue: queue.SimpleQueue[_Submission | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._unchecked = False  # SQLite: commits since the last WAL checkpoint
        self._checkpointed = time.monotonic()
        self._local = threading.local()
        self.on_commit: Callable[[int, float], None] | None = None
        self.on_failure: Callable[[int], None] | None = None  # rows that could not be written
        """Called after each commit with (rows written, seconds): metrics hook."""

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> DecisionLog:
        self.db.create_schema()
        self._writer = threading.Thread(target=self._run, name="decision-log-writer", daemon=True)
        self._writer.start()
        return self

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=self.timeout)
            self._writer = None

    # -- writes ----------------------------------------------------------------------------
    def append(
        self, table: str, rows: list[dict[str, Any]], replay: Replay | None = None
    ) -> list[dict[str, Any]]:
        """Write rows (dicts keyed by column) and block until committed; returns the stored rows."""
        sub = self._submission(table, rows, replay)
        sub.future = Future()
        self._queue.put(sub)
        try:
            return sub.future.result(timeout=self.timeout)
        except TimeoutError as exc:
            raise LogUnavailable("the decision log did not confirm the write in time") from exc

    async def append_async(
        self, table: str, rows: list[dict[str, Any]], replay: Replay | None = None
    ) -> list[dict[str, Any]]:
        """`append` for coroutines: the event loop keeps serving while the commit is under way."""
        return await self.submit(table, rows, replay)

    def submit(
        self, table: str, rows: list[dict[str, Any]], replay: Replay | None = None
    ) -> asyncio.Future[list[dict[str, Any]]]:
        """Queue rows now, from the event loop; the future completes once they are committed.

        Queueing before awaiting lets the caller do other work (render its response) while the
        writer commits; nothing may be acknowledged before the future completes.
        """
        sub = self._submission(table, rows, replay)
        sub.loop = loop = asyncio.get_running_loop()
        sub.waiter = waiter = loop.create_future()
        self._queue.put(sub)
        timer = loop.call_later(self.timeout, _expire, waiter)
        waiter.add_done_callback(lambda _: timer.cancel())
        return waiter

    def _submission(self, table: str, rows: list[dict[str, Any]], replay: Replay | None) -> _Submission:
        if self._writer is None:
            raise LogUnavailable("the decision log is not open")
        columns = CHAINS[table]
        values = [tuple(_to_db(col, row.get(col)) for col in columns) for row in rows]
        stored = [_stored(columns, row) for row in rows]
        return _Submission(table, values, [content_digest(v) for v in values], stored, replay)

    def _run(self) -> None:
        conn = self._connect_writer()
        try:
            while True:
                try:
                    first = self._queue.get(timeout=CHECKPOINT_SECONDS if self._unchecked else None)
                except queue.Empty:  # idle: a good moment to checkpoint what was written
                    self._checkpoint(conn, force=True)
                    continue
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < self.max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                conn = self._write_batch(conn, batch)
                if stop:
                    return
                self._checkpoint(conn)
        finally:
            self._checkpoint(conn, force=True)
            conn.close()

    def _checkpoint(self, conn: Connection, force: bool = False) -> None:
        """SQLite: copy committed WAL pages into the database file so the WAL can restart.

        PASSIVE never waits for readers; pages a reader still needs stay for the next round.
        A failed checkpoint loses nothing (the pages stay in the WAL), so it is only logged.
        """
        if not self._unchecked:
            return
        if not force and time.monotonic() - self._checkpointed < CHECKPOINT_SECONDS:
            return
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception:
            log.warning("WAL checkpoint failed; the next one retries", exc_info=True)
        self._unchecked = False
        self._checkpointed = time.monotonic()

    def _connect_writer(self) -> Connection:
        conn = self.db.connect()
        if not self.db.is_postgres:
            # A checkpoint inside a commit would hold every waiting request for its copying
            # and fsyncs; `_checkpoint` runs them between batches instead.
            conn.execute("PRAGMA wal_autocheckpoint=0")
        return conn

    def _write_batch(self, conn: Connection, batch: list[_Submission]) -> Connection:
        started = time.perf_counter()
        self._unchecked = not self.db.is_postgres
        try:
            results = self._commit(conn, batch)
        except Exception:
            # One bad submission must not fail its neighbours: retry each on its own.
            conn = self._reconnect(conn)
            for sub in batch:
                try:
                    sub.result = self._commit(conn, [sub])[0]
                except Exception as exc:
                    conn = self._reconnect(conn)
                    sub.error = exc if isinstance(exc, KeelError) else LogUnavailable(str(exc))
                    if self.on_failure is not None and not isinstance(exc, KeelError):
                        self.on_failure(len(sub.values))
            _deliver(batch)
            return conn
        if self.on_commit is not None:
            self.on_commit(sum(len(s.values) for s in batch), time.perf_counter() - started)
        for sub, result in zip(batch, results, strict=True):
            sub.result = result
        _deliver(batch)
        return conn

    def _reconnect(self, conn: Connection) -> Connection:
        try:
            conn.rollback()
            return conn
        except Exception:
            conn.close()
            return self._connect_writer()

    def _commit(self, conn: Connection, batch: list[_Submission]) -> list[list[dict[str, Any]]]:
        tables = sorted({s.table for s in batch})
        results: list[list[dict[str, Any]]] = []
        with self.db.transaction(conn, lock_heads=tables):
            heads = {t: _read_head(conn, t) for t in tables}
            for sub in batch:
                earlier = sub.replay(conn) if sub.replay else None
                if earlier is not None:
                    results.append(earlier)
                    continue
                columns = CHAINS[sub.table]
                sql = (
                    f"INSERT INTO {sub.table} ({', '.join(columns)}, prev_hash, row_hash) "
                    f"VALUES ({', '.join('?' * (len(columns) + 2))}) RETURNING seq"
                )
                seq, prev = heads[sub.table]
                for values, digest in zip(sub.values, sub.digests, strict=True):
                    link = chain_hash(prev, digest)
                    seq, prev = int(conn.execute(sql, (*values, prev, link)).fetchone()[0]), link
                heads[sub.table] = (seq, prev)
                results.append(sub.rows)
            for table, (seq, link) in heads.items():
                conn.execute(
                    "UPDATE chain_heads SET seq = ?, row_hash = ? WHERE name = ?", (seq, link, table)
                )
        return results

    # -- reads -----------------------------------------------------------------------------
    def reader(self) -> Connection:
        """A connection for the calling thread (reads run beside the writer)."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.db.connect()
            self._local.conn = conn
        return conn

    def query(
        self, sql: str, params: tuple[Any, ...] = (), conn: Connection | None = None
    ) -> list[dict[str, Any]]:
        c = conn or self.reader()
        try:
            cur = c.execute(sql, params)
            names = [d[0] for d in cur.description]
            rows = [_from_db(dict(zip(names, r, strict=True))) for r in cur.fetchall()]
        finally:
            if conn is None:
                c.commit()  # end the read transaction (PostgreSQL opens one implicitly)
        return rows

    def get_decision(self, decision_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM decisions WHERE decision_id = ?", (decision_id,))
        return rows[0] if rows else None

    def feedback_for(self, decision_id: str) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM feedback WHERE decision_id = ? ORDER BY seq", (decision_id,))

    def verify(self, batch_size: int = 5000) -> VerifyResult:
        """Recompute every hash in both chains; report the first row that does not fit."""
        return verify(self.db, batch_size)


def _deliver(batch: list[_Submission]) -> None:
    """Wake every waiter of a written batch: threads directly, each event loop once."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Submission]] = {}
    for sub in batch:
        if sub.future is not None:
            if sub.error is not None:
                sub.future.set_exception(sub.error)
            else:
                sub.future.set_result(sub.result or [])
        elif sub.loop is not None:
            by_loop.setdefault(sub.loop, []).append(sub)
    for loop, subs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, subs)


def _settle(subs: list[_Submission]) -> None:
    for sub in subs:
        waiter = sub.waiter
        if waiter is None or waiter.done():
            continue
        if sub.error is not None:
            waiter.set_exception(sub.error)
        else:
            waiter.set_result(sub.result or [])


def _expire(waiter: asyncio.Future[list[dict[str, Any]]]) -> None:
    if not waiter.done():
        waiter.set_exception(LogUnavailable("the decision log did not confirm the write in time"))


def _read_head(conn: Connection, table: str) -> tuple[int, str]:
    row = conn.execute("SELECT seq, row_hash FROM chain_heads WHERE name = ?", (table,)).fetchone()
    if row is None:
        conn.execute("INSERT INTO chain_heads (name, seq, row_hash) VALUES (?, 0, ?)", (table, GENESIS))
        return 0, GENESIS
    return int(row[0]), str(row[1])


def _to_db(column: str, value: Any) -> Any:
    if column == "record":
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    if column == "abstained":
        return int(bool(value))
    return value


def _stored(columns: tuple[str, ...], row: dict[str, Any]) -> dict[str, Any]:
    """The row as a read would return it, without the round trip through JSON."""
    out = {col: row.get(col) for col in columns}
    if "abstained" in out:
        out["abstained"] = bool(out["abstained"])
    return out


def _from_db(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    if isinstance(out.get("record"), str):
        out["record"] = json.loads(out["record"])
    if "abstained" in out:
        out["abstained"] = bool(out["abstained"])
    return out


def reject_changed_replay(stored: list[dict[str, Any]], request_hash: str) -> list[dict[str, Any]]:
    """An idempotency key reused with a different request body is a client error."""
    if any(r.get("request_hash") != request_hash for r in stored):
        raise Conflict("this Idempotency-Key was used before with a different request body")
    return stored
