"""One small seam over SQLite and PostgreSQL: connections, placeholders, schema.

SQLite runs in WAL mode with synchronous=FULL so a committed transaction survives power
loss; PostgreSQL runs with synchronous_commit=on. Both hold the same tables.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse


class Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    seq {serial} PRIMARY KEY,
    decision_id TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    model_version TEXT NOT NULL,
    created_at TEXT NOT NULL,
    caller TEXT NOT NULL,
    case_id TEXT,
    idempotency_key TEXT,
    request_hash TEXT,
    request_index INTEGER NOT NULL,
    outcome TEXT,
    abstained INTEGER NOT NULL,
    route TEXT NOT NULL,
    confidence DOUBLE PRECISION,
    segments TEXT,
    intervened INTEGER NOT NULL DEFAULT 0,
    record TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    row_hash TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS decisions_idempotency
    ON decisions (caller, model, idempotency_key, request_index)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS decisions_model_time ON decisions (model, created_at);
-- Covers every column monitoring aggregates, so a window of a million decisions is counted
-- from the index without reading the (large) records.
CREATE INDEX IF NOT EXISTS decisions_monitoring ON decisions
    (model, created_at, model_version, outcome, abstained, route, confidence, intervened, segments);
CREATE TABLE IF NOT EXISTS feedback (
    seq {serial} PRIMARY KEY,
    feedback_id TEXT NOT NULL UNIQUE,
    decision_id TEXT NOT NULL,
    model TEXT NOT NULL,
    created_at TEXT NOT NULL,
    caller TEXT NOT NULL,
    actor TEXT NOT NULL,
    final_outcome TEXT NOT NULL,
    kind TEXT NOT NULL,
    record TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    row_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_decision ON feedback (decision_id);
CREATE TABLE IF NOT EXISTS chain_heads (
    name TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    row_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    roles TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
"""


@dataclass(frozen=True)
class Database:
    """Where the decision log lives; opens connections of the right kind."""

    url: str

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith(("postgresql://", "postgres://"))

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.removeprefix("sqlite:///"))

    def connect(self) -> Connection:
        if self.is_postgres:
            import psycopg

            conn = psycopg.connect(self.url, autocommit=False)
            conn.execute("SET synchronous_commit = on")
            conn.commit()
            return _PgConnection(conn)
        if not self.url.startswith("sqlite:///"):
            raise ValueError(f"unsupported decision log URL {redact(self.url)!r}")
        self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit at the driver level; transactions are opened explicitly (BEGIN IMMEDIATE).
        sconn = sqlite3.connect(self.sqlite_path, timeout=30, isolation_level=None, check_same_thread=False)
        sconn.execute("PRAGMA journal_mode=WAL")
        sconn.execute("PRAGMA synchronous=FULL")
        sconn.execute("PRAGMA busy_timeout=30000")
        return _SqliteConnection(sconn)

    def create_schema(self) -> None:
        serial = "BIGSERIAL" if self.is_postgres else "INTEGER"
        conn = self.connect()
        try:
            if self.is_postgres:
                # Replicas may start together; serialise schema creation.
                conn.execute("SELECT pg_advisory_xact_lock(4242)")
            _drop_full_idempotency_index(conn, self.is_postgres)
            for statement in SCHEMA.format(serial=serial).split(";"):
                if "decisions_monitoring" in statement:
                    _add_monitoring_columns(conn, self.is_postgres)
                if statement.strip():
                    conn.execute(statement)
            conn.commit()
        finally:
            conn.close()

    @contextmanager
    def transaction(self, conn: Connection, lock_heads: Sequence[str] = ()) -> Iterator[Connection]:
        """A write transaction; locking chain heads serialises writers of a chain across processes."""
        if not self.is_postgres:
            conn.execute("BEGIN IMMEDIATE")  # the whole-database write lock, taken up front
        try:
            for name in sorted(lock_heads) if self.is_postgres else ():
                conn.execute(
                    "INSERT INTO chain_heads (name, seq, row_hash) VALUES (?, 0, ?) "
                    "ON CONFLICT (name) DO NOTHING",
                    (name, GENESIS),
                )
                conn.execute("SELECT seq FROM chain_heads WHERE name = ? FOR UPDATE", (name,))
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise


def _add_monitoring_columns(conn: Connection, postgres: bool) -> None:
    """Logs created before `segments` and `intervened` were columns get them (NULL / 0)."""
    if postgres:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'decisions'"
        ).fetchall()
    else:
        rows = [(r[1],) for r in conn.execute("PRAGMA table_info(decisions)").fetchall()]
    have = {r[0] for r in rows}
    if "segments" not in have:
        conn.execute("ALTER TABLE decisions ADD COLUMN segments TEXT")
    if "intervened" not in have:
        conn.execute("ALTER TABLE decisions ADD COLUMN intervened INTEGER NOT NULL DEFAULT 0")


def _drop_full_idempotency_index(conn: Connection, postgres: bool) -> None:
    """Logs created before the idempotency index became partial: drop it so it is made again.

    Most decisions carry no idempotency key, and a full index still got an entry (and a page
    write per commit) for each of them; rows with a key are what it exists for, and the lookup
    by key (`idempotency_key = ?`) can use the partial index. NULL keys were never unique-checked.
    """
    if postgres:
        found = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'decisions_idempotency'"
        ).fetchone()
    else:
        found = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'decisions_idempotency'"
        ).fetchone()
    if found and "WHERE" not in str(found[0]).upper():
        conn.execute("DROP INDEX decisions_idempotency")


GENESIS = "0" * 64
"""prev_hash of the first row of every chain."""


def redact(url: str) -> str:
    """A database URL without its password, for messages and logs."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


class _SqliteConnection:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql, params)

    def commit(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()


class _PgConnection:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql.replace("?", "%s"), params)

    def commit(self) -> None:
        self._conn.commit()

    def rollback(self) -> None:
        self._conn.rollback()

    def close(self) -> None:
        self._conn.close()
