"""The decision log's writer: append-only, hash-chained, group-committed, supervised.

Callers hand rows to one writer thread; it drains what is queued (up to `batch_rows` rows),
writes it in one transaction and commits once, so concurrent requests share an fsync (group
commit). A caller hears back only after its commit, so an acknowledged decision is durable.
Threads wait with `append`; coroutines await `submit`, which the writer completes through the
event loop (`call_soon_threadsafe`, once per loop and batch) so no thread is parked per request.

The writer never dies. On a database error it fails the batch in hand (503, outcome unknown: the
commit may have happened), drops its connection and reconnects with backoff; until a connection
proves it can write, `ready` is false and new writes are refused at once (503 with Retry-After,
outcome known: not recorded). The queue is bounded in rows for the same reason: a stalled
database must not turn into minutes-long waits.

Work is kept off the writer, which holds the database's write lock: callers serialise each
record to JSON and hash the row content before queueing. With SQLite the writer does not let a
WAL checkpoint run inside a commit: a thread of its own checkpoints beside the writer
(keel.decision_log.checkpointer), and the writer takes a turn between batches only when the WAL
has grown long under a load that never pauses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from keel.decision_log import reads
from keel.decision_log.chain import CHAINS, chain_hash
from keel.decision_log.checkpointer import Checkpointer, checkpoint
from keel.decision_log.database import Connection, Database, discard, is_alive
from keel.decision_log.errors import NOT_RECORDED, UNKNOWN, LogUnavailable
from keel.decision_log.log_key import ChainKeys, load_keys
from keel.decision_log.rows import prepare, read_head, stored, write_head
from keel.decision_log.settings import LogSettings
from keel.decision_log.submission import Replay, Submission, deliver, expire
from keel.errors import KeelError

__all__ = ["DecisionLog", "Replay"]

BACKOFF = (0.1, 1.0)
"""Reconnect delays: first and longest; recovery after the database returns takes at most ~1 s."""

log = logging.getLogger("keel.log")


class _Broken(Exception):
    """The connection failed mid-batch: the batch's outcome is unknown."""


class DecisionLog:
    """Appends decisions and feedback durably; reads them back for lookups and monitoring."""

    def __init__(
        self,
        db: Database,
        max_batch: int | None = None,
        timeout: float | None = None,
        settings: LogSettings | None = None,
    ) -> None:
        self.settings = settings = settings or LogSettings()
        self.db = db
        self.max_batch = max_batch or settings.batch_rows
        self.timeout = timeout or settings.commit_timeout
        self.keys: ChainKeys = load_keys(settings.key_file)
        self._queue: queue.SimpleQueue[Submission | None] = queue.SimpleQueue()
        self._queued_rows = 0
        self._count_lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._healthy = threading.Event()
        self._tried = threading.Event()  # the writer's first connection attempt is over
        self._checkpointer: Checkpointer | None = None
        self.on_commit: Callable[[int, float], None] | None = None
        """Called after each commit with (rows written, seconds): metrics hook."""
        self.on_failure: Callable[[], None] | None = None
        """Called once for each submission the database failed to commit: metrics hook."""

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> DecisionLog:
        self.db.create_schema()
        if not self.db.is_postgres:
            self._checkpointer = Checkpointer(self.db).start()
        self._writer = threading.Thread(target=self._supervise, name="decision-log-writer", daemon=True)
        self._writer.start()
        # Give the first connection its chance, so writes right after `open` are not refused;
        # a database that is away now is retried in the background (`ready` stays false).
        self._tried.wait(timeout=self.db.connect_timeout * 2 + 1)
        return self

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=self.timeout)
            self._writer = None
        if self._checkpointer is not None:
            self._checkpointer.stop(timeout=self.timeout)
            self._checkpointer = None

    @property
    def ready(self) -> bool:
        """The writer runs and its connection has committed (or proved it can): writes will land."""
        return self._writer is not None and self._writer.is_alive() and self._healthy.is_set()

    # -- writes ----------------------------------------------------------------------------
    def append(
        self, table: str, rows: list[dict[str, Any]], replay: Replay | None = None
    ) -> list[dict[str, Any]]:
        """Write rows (dicts keyed by column) and block until committed; returns the stored rows."""
        sub = self._submission(table, rows, replay)
        sub.future = Future()
        self._enqueue(sub)
        try:
            return sub.future.result(timeout=self.timeout)
        except TimeoutError as exc:
            raise self._timed_out() from exc

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
        self._enqueue(sub)
        timer = loop.call_later(self.timeout, expire, waiter, self._timed_out())
        waiter.add_done_callback(lambda _: timer.cancel())
        return waiter

    def _timed_out(self) -> LogUnavailable:
        return LogUnavailable(
            "the decision log did not confirm the write in time", UNKNOWN, self.settings.retry_after
        )

    def _refuse(self, why: str) -> LogUnavailable:
        return LogUnavailable(why, NOT_RECORDED, self.settings.retry_after)

    def _submission(self, table: str, rows: list[dict[str, Any]], replay: Replay | None) -> Submission:
        if self._writer is None:
            raise self._refuse("the decision log is not open")
        if not self.ready:
            raise self._refuse("the decision log cannot commit at the moment")
        values, digests = prepare(table, rows)
        return Submission(table, values, digests, [stored(CHAINS[table], row) for row in rows], replay)

    def _enqueue(self, sub: Submission) -> None:
        n = len(sub.values)
        with self._count_lock:
            if self._queued_rows and self._queued_rows + n > self.settings.queue_rows:
                raise self._refuse("the decision log's queue is full")
            self._queued_rows += n
        self._queue.put(sub)

    def _take(self, timeout: float | None) -> tuple[list[Submission], bool]:
        """The next batch (blocking up to `timeout`), capped by rows; and whether to stop after it."""
        first = self._queue.get(timeout=timeout)
        if first is None:
            return [], True
        batch, rows = [first], len(first.values)
        # This thread is the queue's only reader: what `empty` says is there stays there.
        while rows < self.max_batch and not self._queue.empty():
            nxt = self._queue.get_nowait()
            if nxt is None:
                return batch, True
            batch.append(nxt)
            rows += len(nxt.values)
            if rows >= self.max_batch:
                break
        with self._count_lock:
            self._queued_rows -= rows
        return batch, False

    # -- the writer thread -----------------------------------------------------------------
    def _supervise(self) -> None:
        """Run the writer; whatever goes wrong, reconnect with backoff and carry on."""
        delay = BACKOFF[0]
        conn: Connection | None = None
        while True:
            if conn is None:
                try:
                    conn = self._connect_writer()
                    self._healthy.set()
                    self._tried.set()
                    delay = BACKOFF[0]
                except Exception as exc:
                    self._healthy.clear()
                    self._tried.set()
                    log.warning("decision log unavailable (%s); retrying in %.1fs", type(exc).__name__, delay)
                    if self._refuse_queued(delay):
                        return
                    delay = min(delay * 2, BACKOFF[1])
                    continue
            try:
                if self._serve(conn):
                    self._close(conn)
                    return
            except Exception:
                log.exception("decision log writer lost its connection; reconnecting")
            self._healthy.clear()
            discard(conn)
            conn = None

    def _serve(self, conn: Connection) -> bool:
        """Write batches until told to stop (True) or the connection breaks (raises)."""
        while True:
            batch, stop = self._take(None)
            if batch:
                self._write_batch(conn, batch)
            if stop:
                return True
            if self._checkpointer is not None and self._checkpointer.wants_restart:
                self._checkpoint_here(conn)

    def _refuse_queued(self, seconds: float) -> bool:
        """While the database is away: answer queued writes with 503 for `seconds`; True on stop."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                batch, stop = self._take(left)
            except queue.Empty:
                return False
            for sub in batch:
                sub.error = self._refuse("the decision log cannot commit at the moment")
            deliver(batch)
            if stop:
                return True
        return False

    def _close(self, conn: Connection) -> None:
        with contextlib.suppress(Exception):
            conn.close()

    def _checkpoint_here(self, conn: Connection) -> None:
        """SQLite, a long WAL: checkpoint between batches, after answering them, so that the WAL
        starts over at the next commit (the checkpointer's thread has copied all but the newest
        frames). A failed checkpoint loses nothing: the pages stay in the WAL."""
        assert self._checkpointer is not None
        try:
            frames, copied = checkpoint(conn)
            self._checkpointer.wants_restart = frames > copied
        except Exception:
            log.warning("WAL checkpoint failed; the next one retries", exc_info=True)

    def _connect_writer(self) -> Connection:
        conn = self.db.connect()
        try:
            if not self.db.is_postgres:
                # A checkpoint inside a commit would hold every waiting request for its copying
                # and fsyncs; the checkpointer's thread runs them beside the writer instead.
                conn.execute("PRAGMA wal_autocheckpoint=0")
            # Prove the connection can write (a read-only file or a read-only replica cannot):
            # take the write lock and touch the heads, then roll back.
            with contextlib.ExitStack() as undo:
                undo.callback(conn.rollback)
                if not self.db.is_postgres:
                    conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE chain_heads SET seq = seq WHERE name = ?", ("decisions",))
        except Exception:
            discard(conn)
            raise
        return conn

    def _write_batch(self, conn: Connection, batch: list[Submission]) -> None:
        started = time.perf_counter()
        if self._checkpointer is not None:
            self._checkpointer.written()  # a batch that fails may still have committed
        try:
            results = self._commit(conn, batch)
        except Exception as exc:
            if not is_alive(conn):
                for sub in batch:
                    sub.error = self._timed_out_by(exc)
                deliver(batch)
                raise _Broken from exc
            # One bad submission must not fail its neighbours: retry each on its own.
            failed_by_db = 0
            for sub in batch:
                try:
                    sub.result = self._commit(conn, [sub])[0]
                except KeelError as err:
                    sub.error = err
                except Exception as err:
                    failed_by_db += 1
                    log.warning("decision log write failed: %s", err)
                    sub.error = self._timed_out_by(err)
                    if not is_alive(conn):
                        for rest in batch:
                            if rest.result is None and rest.error is None:
                                rest.error = self._timed_out_by(err)
                        deliver(batch)
                        raise _Broken from err
            deliver(batch)
            if failed_by_db == len(batch):
                raise _Broken from exc  # the database refuses every write (read-only, full disk...)
            return
        elapsed = time.perf_counter() - started
        hook, written = self.on_commit, sum(len(s.values) for s in batch)
        for sub, result in zip(batch, results, strict=True):
            sub.result = result
        deliver(batch, None if hook is None else lambda: hook(written, elapsed))

    def _timed_out_by(self, exc: BaseException) -> LogUnavailable:
        # The database's own words stay in the server log; the client hears only the outcome.
        log.warning("decision log write failed (%s)", type(exc).__name__)
        if self.on_failure is not None:
            self.on_failure()
        return LogUnavailable(
            "the decision log could not commit the write", UNKNOWN, self.settings.retry_after
        )

    def _commit(self, conn: Connection, batch: list[Submission]) -> list[list[dict[str, Any]]]:
        tables = sorted({s.table for s in batch})
        results: list[list[dict[str, Any]]] = []
        key_id, key = self.keys.current, self.keys.current_key
        with self.db.transaction(conn, lock_heads=tables):
            heads = {t: read_head(conn, t) for t in tables}
            for sub in batch:
                earlier = sub.replay(conn) if sub.replay else None
                if earlier is not None:
                    results.append(earlier)
                    continue
                columns = CHAINS[sub.table]
                sql = (
                    f"INSERT INTO {sub.table} ({', '.join(columns)}, prev_hash, row_hash, key_id) "
                    f"VALUES ({', '.join('?' * (len(columns) + 3))}) RETURNING seq"
                )
                seq, prev = heads[sub.table]
                for values, digest in zip(sub.values, sub.digests, strict=True):
                    link = chain_hash(prev, digest, key)
                    seq, prev = int(conn.execute(sql, (*values, prev, link, key_id)).fetchone()[0]), link
                heads[sub.table] = (seq, prev)
                results.append(sub.rows)
            for table, (seq, link) in heads.items():
                write_head(conn, table, seq, link)
        return results

    # -- reads -----------------------------------------------------------------------------
    def query(
        self, sql: str, params: tuple[Any, ...] = (), conn: Connection | None = None
    ) -> list[dict[str, Any]]:
        """Rows of `sql` as dicts (records parsed); on `conn` inside a write, else on a pooled one."""
        if conn is not None:
            return reads.as_dicts(conn, sql, params)
        with self.db.reading() as reader:
            return reads.as_dicts(reader.conn, sql, params)

    def get_decision(self, decision_id: str) -> dict[str, Any] | None:
        return reads.decision(self.db, decision_id)

    def feedback_for(self, decision_id: str, decision: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return reads.feedback_for(self.db, decision_id, decision)

    def verify(self, batch_size: int = 5000) -> Any:
        """Recompute every hash in both chains on one snapshot; report the first row that does not fit."""
        from keel.decision_log.verify import verify

        return verify(self.db, self.keys, batch_size)
