"""Bulk loading into the decision log: the same rows, hashes and chain heads as DecisionLog,
written tens of thousands at a time.

For backfills, imports and benchmarks of logs with millions of decisions, where one INSERT per
row (the online writer's way, right for latency) costs hours. Rows go through the writer's own
conversion and digests (keel.decision_log.rows) and are linked with the chain's own hash, so a
bulk-loaded log is stored exactly as if the writer had logged the same rows in the same order
and `keel verify-log` passes on it. PostgreSQL receives each batch by COPY; SQLite by
executemany. Each batch is one transaction holding the chain's head (as the writer does), so
online writers of the same log may run meanwhile: they interleave between batches, the chain
stays one. There is no idempotent replay here: a decision id logged before is refused by the
unique index and fails the batch.

Where the time goes: converting a row and digesting its content (the record's JSON, kilobytes)
costs several times what linking it does, and rows do not depend on each other until they are
linked. So when a load has more than one batch, batches are converted and digested (and, for
PostgreSQL, encoded as COPY text) in worker processes, in order, a few batches ahead; this
process only links each row to the one before (one HMAC of 130 bytes) and sends the batch.
On PostgreSQL the batch's values are TOAST-compressed with lz4 where the server has it (the
stored values are the same; lz4 costs the server a fraction of pglz's time, which is most of
its work per row after the indexes).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from keel.decision_log.chain import CHAINS, chain_hash, content_digest, hashed_count, hashed_values
from keel.decision_log.database import Connection, Database
from keel.decision_log.log_key import ChainKeys, load_keys
from keel.decision_log.prefetch import prefetched
from keel.decision_log.rows import prepare, read_head, to_db, write_head
from keel.decision_log.settings import LogSettings

__all__ = ["BulkLoader", "insert_rows"]

BATCH_ROWS = 20_000
"""Rows per transaction: large enough that per-transaction costs vanish, small enough that the
rows of one batch (with their records' JSON) stay a few tens of MB."""
MAX_WORKERS = 4
"""Worker processes at most, by default."""
SPARE_CORES = 2
"""Cores left to the database server's backend and this process by default. On two cores, worker
processes give little (each batch is pickled to them and back, and this process still makes the
rows): the backend, not the preparation, is the slower half (about 77 us against 58 us of CPU per
decision row, docs/benchmarks.md)."""

Prepared = tuple[list[bytes] | None, list[tuple[Any, ...]] | None, list[str]]
"""A batch ready to link: its rows as COPY text lines (PostgreSQL, when every value has a text
form here) or as column values, and each row's content digest."""


class BulkLoader:
    """Appends many rows to one chain, batch by batch, signed with the log's current chain key."""

    def __init__(
        self,
        db: Database,
        keys: ChainKeys | None = None,
        settings: LogSettings | None = None,
        workers: int | None = None,
    ):
        self.db = db
        self.keys = keys if keys is not None else load_keys((settings or LogSettings()).key_file)
        spare = (os.cpu_count() or 1) - SPARE_CORES
        self.workers = workers if workers is not None else max(0, min(MAX_WORKERS, spare))
        """Processes converting and digesting batches (0: a thread of this process)."""

    def load(self, table: str, rows: Iterable[dict[str, Any]], batch_rows: int = BATCH_ROWS) -> int:
        """Append `rows` (dicts keyed by column, as DecisionLog.append takes them) in order; returns
        how many were written. Each batch commits on its own: after a failure, the batches before
        it stay logged (and the chain stays valid)."""
        self.db.create_schema()
        written = 0
        conn = self.db.connect()
        try:
            lz4 = self.db.is_postgres and _has_lz4(conn)
            for lines, values, digests in _prepared(
                table, self.db.is_postgres, rows, batch_rows, self.workers
            ):
                self._write(conn, table, lines, values, digests, lz4)
                written += len(digests)
        finally:
            conn.close()
        return written

    def _write(
        self,
        conn: Connection,
        table: str,
        lines: list[bytes] | None,
        values: list[tuple[Any, ...]] | None,
        digests: list[str],
        lz4: bool,
    ) -> None:
        key_id, key = self.keys.current, self.keys.current_key
        columns = (*CHAINS[table], "prev_hash", "row_hash", "key_id")
        with self.db.transaction(conn, lock_heads=[table]):
            _, prev = read_head(conn, table)
            if lz4:
                conn.execute("SET LOCAL default_toast_compression = lz4")
            if lines is not None:
                conn.execute("SET LOCAL client_encoding = 'UTF8'")  # the lines' encoding
                tail = b"\\N\n" if key_id is None else key_id.translate(_COPY_ESCAPES).encode() + b"\n"
                text = bytearray()
                for line, digest in zip(lines, digests, strict=True):
                    link = chain_hash(prev, digest, key)
                    text += b"%b\t%b\t%b\t%b" % (line, prev.encode(), link.encode(), tail)
                    prev = link
                _copy_text(conn, table, columns, text)
            else:
                assert values is not None
                linked = []
                for row, digest in zip(values, digests, strict=True):
                    link = chain_hash(prev, digest, key)
                    linked.append((*row, prev, link, key_id))
                    prev = link
                insert_rows(conn, self.db.is_postgres, table, columns, linked)
            # The head lock serialises this chain's writers, so the highest seq is this batch's last.
            (last,) = conn.execute(f"SELECT MAX(seq) FROM {table}").fetchone()
            write_head(conn, table, int(last), prev)


def _prepared(
    table: str, postgres: bool, rows: Iterable[dict[str, Any]], batch_rows: int, workers: int
) -> Iterator[Prepared]:
    """Batches ready to link, in order, made ahead while the database takes the last: by
    `workers` processes (at most two batches each ahead), or with none by a thread of this
    process (the database's work and ours then overlap, as this thread waits on its socket with
    the GIL released). Memory stays bounded however long the input."""
    it = iter(rows)
    batches = iter(lambda: list(itertools.islice(it, batch_rows)), [])
    if workers < 1:
        yield from prefetched((prepare_batch(table, postgres, b) for b in batches), name="bulk-prepare")
        return
    first = next(batches, None)
    if first is None:
        return
    if len(first) < batch_rows:  # one batch (most tests, small imports): no processes to start
        yield prepare_batch(table, postgres, first)
        return
    # fork starts at once and needs no importable main module, but is safe only with one thread;
    # a caller holding threads (a server, a prefetching reader) gets spawned workers.
    start = "fork" if threading.active_count() == 1 else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(start)) as pool:
        ahead: deque[Future[Prepared]] = deque()
        try:
            for batch in itertools.chain([first], batches):
                ahead.append(pool.submit(prepare_batch, table, postgres, batch))
                if len(ahead) > 2 * workers:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:
            for future in ahead:
                future.cancel()


def prepare_batch(table: str, postgres: bool, rows: list[dict[str, Any]]) -> Prepared:
    """One batch's column values as written (rows.to_db) and digests; for PostgreSQL, the values
    as COPY text lines (without the chain's three columns, which linking appends)."""
    if not postgres:
        values, digests = prepare(table, rows)
        return None, values, digests
    columns = CHAINS[table]
    values = [tuple([to_db(col, row.get(col)) for col in columns]) for row in rows]
    try:
        lines, digests = _copy_lines(table, values)
    except TypeError:  # a value only the driver knows how to send: it sends the batch
        return None, values, [content_digest(hashed_values(table, v)) for v in values]
    return lines, None, digests


def _copy_lines(table: str, values: list[tuple[Any, ...]]) -> tuple[list[bytes], list[str]]:
    """Each row as a COPY text line and its content digest (chain.content_digest), from one
    encoding of each value: the record's JSON is kilobytes, encoded once instead of twice."""
    lines, digests = [], []
    sha256 = hashlib.sha256
    for row in values:
        framed, text = [], []
        for value in row:
            if value is None:
                framed.append(b"n;")
                text.append(b"\\N")
            elif type(value) is str:
                data = value.encode()
                framed.append(b"s%d:%b" % (len(data), data))
                if b"\\" in data or b"\t" in data or b"\n" in data or b"\r" in data:
                    data = value.translate(_COPY_ESCAPES).encode()
                text.append(data)
            elif type(value) is int:
                framed.append(b"i%d;" % value)
                text.append(b"%d" % value)
            elif type(value) is float:
                framed.append(b"f%b;" % float.__repr__(value).encode())
                text.append(_copy_float(value))
            else:
                raise TypeError(type(value).__name__)
        digests.append(sha256(b"".join(framed[: hashed_count(table, row)])).hexdigest())
        lines.append(b"\t".join(text))
    return lines, digests


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_float(value: float) -> bytes:
    """A double in COPY's text format: the shortest text that reads back as the same double."""
    if math.isfinite(value):
        return float.__repr__(value).encode()
    return b"NaN" if math.isnan(value) else b"Infinity" if value > 0 else b"-Infinity"


def _has_lz4(conn: Connection) -> bool:
    row = conn.execute(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    ).fetchone()
    conn.rollback()
    return bool(row and row[0])


def _copy_text(conn: Connection, table: str, columns: Sequence[str], text: bytearray) -> None:
    raw: Any = conn
    with (
        raw.driver.cursor() as cur,
        cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        view = memoryview(text)
        for lo in range(0, len(view), 1 << 20):
            copy.write(view[lo : lo + (1 << 20)])


def insert_rows(
    conn: Connection, postgres: bool, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """Many rows in one go, in order (seq is assigned in that order unless given), in the open
    transaction: COPY on PostgreSQL, executemany on SQLite."""
    raw: Any = conn
    if not postgres:
        placeholders = ", ".join("?" * len(columns))
        raw.driver.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", rows)
        return
    with (
        raw.driver.cursor() as cur,
        cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
