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
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from keel.decision_log.chain import CHAINS, chain_hash
from keel.decision_log.database import Connection, Database
from keel.decision_log.log_key import ChainKeys, load_keys
from keel.decision_log.prefetch import prefetched
from keel.decision_log.rows import prepare, read_head, write_head
from keel.decision_log.settings import LogSettings

__all__ = ["BulkLoader", "insert_rows"]

BATCH_ROWS = 20_000
"""Rows per transaction: large enough that per-transaction costs vanish, small enough that the
rows of one batch (with their records' JSON) stay a few tens of MB."""


class BulkLoader:
    """Appends many rows to one chain, batch by batch, signed with the log's current chain key."""

    def __init__(self, db: Database, keys: ChainKeys | None = None, settings: LogSettings | None = None):
        self.db = db
        self.keys = keys if keys is not None else load_keys((settings or LogSettings()).key_file)

    def load(self, table: str, rows: Iterable[dict[str, Any]], batch_rows: int = BATCH_ROWS) -> int:
        """Append `rows` (dicts keyed by column, as DecisionLog.append takes them) in order; returns
        how many were written. Each batch commits on its own: after a failure, the batches before
        it stay logged (and the chain stays valid)."""
        self.db.create_schema()
        written = 0
        conn = self.db.connect()
        try:
            for values, digests in _prepared(table, rows, batch_rows):
                self._write(conn, table, values, digests)
                written += len(values)
        finally:
            conn.close()
        return written

    def _write(self, conn: Connection, table: str, values: list[tuple[Any, ...]], digests: list[str]) -> None:
        key_id, key = self.keys.current, self.keys.current_key
        columns = (*CHAINS[table], "prev_hash", "row_hash", "key_id")
        with self.db.transaction(conn, lock_heads=[table]):
            _, prev = read_head(conn, table)
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
    table: str, rows: Iterable[dict[str, Any]], batch_rows: int
) -> Iterator[tuple[list[tuple[Any, ...]], list[str]]]:
    """Batches of (values, digests), built one batch ahead while the database takes the last."""
    it = iter(rows)
    batches = iter(lambda: list(itertools.islice(it, batch_rows)), [])
    return prefetched((prepare(table, chunk) for chunk in batches), name="bulk-prepare")


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
