"""The decision log: append-only, hash-chained, group-committed.

Request threads hand rows to one writer thread and wait; the writer drains everything
queued, writes it in one transaction and commits once, so concurrent requests share an fsync
(group commit). A request is answered only after its commit, so an acknowledged decision is
durable. Each row's hash covers its content and the previous row's hash; `verify` walks the
chains and compares their ends with `chain_heads`, so edited, deleted or truncated rows show.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from keel.errors import Conflict, KeelError
from serving.database import GENESIS, Connection, Database

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


class LogUnavailable(KeelError):
    status_code = 503


def row_hash(prev_hash: str, values: tuple[Any, ...]) -> str:
    content = json.dumps(list(values), separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{prev_hash}\n{content}".encode()).hexdigest()


@dataclass
class _Submission:
    table: str
    rows: list[tuple[Any, ...]]
    future: Future[list[dict[str, Any]]] = field(default_factory=Future)
    replay: Callable[[Connection], list[dict[str, Any]] | None] | None = None
    """Looks up an earlier identical write (idempotency); its rows are returned instead."""


@dataclass
class VerifyResult:
    ok: bool
    rows_checked: int
    table: str | None = None
    bad_seq: int | None = None
    problem: str | None = None


class DecisionLog:
    """Appends decisions and feedback durably; reads them back for lookups and monitoring."""

    def __init__(self, db: Database, max_batch: int = 1024, timeout: float = 30.0) -> None:
        self.db = db
        self.max_batch = max_batch
        self.timeout = timeout
        self._queue: queue.Queue[_Submission | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._local = threading.local()
        self.on_commit: Callable[[int, float], None] | None = None
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
        self,
        table: str,
        rows: list[dict[str, Any]],
        replay: Callable[[Connection], list[dict[str, Any]] | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Write rows (dicts keyed by column) and block until committed; returns the stored rows."""
        if self._writer is None:
            raise LogUnavailable("the decision log is not open")
        columns = CHAINS[table]
        values = [tuple(_to_db(col, row.get(col)) for col in columns) for row in rows]
        sub = _Submission(table, values, replay=replay)
        self._queue.put(sub)
        try:
            return sub.future.result(timeout=self.timeout)
        except TimeoutError as exc:
            raise LogUnavailable("the decision log did not confirm the write in time") from exc

    def _run(self) -> None:
        conn = self.db.connect()
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < self.max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._queue.put(None)
                        break
                    batch.append(nxt)
                conn = self._write_batch(conn, batch)
        finally:
            conn.close()

    def _write_batch(self, conn: Connection, batch: list[_Submission]) -> Connection:
        started = time.perf_counter()
        try:
            results = self._commit(conn, batch)
        except Exception:
            # One bad submission must not fail its neighbours: retry each on its own.
            conn = self._reconnect(conn)
            for sub in batch:
                try:
                    sub.future.set_result(self._commit(conn, [sub])[0])
                except Exception as exc:
                    conn = self._reconnect(conn)
                    sub.future.set_exception(exc if isinstance(exc, KeelError) else LogUnavailable(str(exc)))
            return conn
        if self.on_commit is not None:
            self.on_commit(sum(len(s.rows) for s in batch), time.perf_counter() - started)
        for sub, result in zip(batch, results, strict=True):
            sub.future.set_result(result)
        return conn

    def _reconnect(self, conn: Connection) -> Connection:
        try:
            conn.rollback()
            return conn
        except Exception:
            conn.close()
            return self.db.connect()

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
                stored = []
                seq, prev = heads[sub.table]
                for values in sub.rows:
                    digest = row_hash(prev, values)
                    cur = conn.execute(
                        f"INSERT INTO {sub.table} ({', '.join(columns)}, prev_hash, row_hash) "
                        f"VALUES ({', '.join('?' * (len(columns) + 2))}) RETURNING seq",
                        (*values, prev, digest),
                    )
                    seq, prev = int(cur.fetchone()[0]), digest
                    stored.append(dict(zip(columns, values, strict=True)))
                heads[sub.table] = (seq, prev)
                results.append([_from_db(r) for r in stored])
            for table, (seq, digest) in heads.items():
                conn.execute(
                    "UPDATE chain_heads SET seq = ?, row_hash = ? WHERE name = ?", (seq, digest, table)
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
        checked = 0
        conn = self.db.connect()
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
                    if row_hash(prev, values) != stored_hash:
                        return VerifyResult(False, checked, table, seq, "row content does not match its hash")
                    prev, last_seq = stored_hash, seq
                head = conn.execute(
                    "SELECT seq, row_hash FROM chain_heads WHERE name = ?", (table,)
                ).fetchone()
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


def _read_head(conn: Connection, table: str) -> tuple[int, str]:
    row = conn.execute("SELECT seq, row_hash FROM chain_heads WHERE name = ?", (table,)).fetchone()
    if row is None:
        conn.execute("INSERT INTO chain_heads (name, seq, row_hash) VALUES (?, 0, ?)", (table, GENESIS))
        return 0, GENESIS
    return int(row[0]), str(row[1])


def _stream(conn: Connection, sql: str, batch_size: int) -> Iterator[tuple[Any, ...]]:
    cur = conn.execute(sql)
    while True:
        rows = cur.fetchmany(batch_size)
        if not rows:
            return
        yield from rows


def _to_db(column: str, value: Any) -> Any:
    if column == "record":
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    if column == "abstained":
        return int(bool(value))
    return value


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
