"""Connections to the decision log's database (SQLite or PostgreSQL), through SQLAlchemy's pool.

SQLAlchemy gives pooling with pre-ping (a connection that died with a database restart is
replaced on checkout) and one place that sets each connection up: a connect timeout everywhere,
SQLite in WAL mode with synchronous=FULL, PostgreSQL with synchronous_commit=on. The log's SQL is
written in qmark style (`?`) and run on the pooled DBAPI connection through a small wrapper, so
the hot write path pays no SQL compilation per row (see bench/log_write.py for the comparison).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import uuid
import weakref
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import sqlalchemy as sa

from keel.decision_log.errors import DATABASE_ERRORS, LogUnavailable
from keel.decision_log.settings import LogSettings

__all__ = ["GENESIS", "Connection", "Database", "discard", "is_alive", "redact"]

GENESIS = "0" * 64
"""prev_hash of the first row of every chain."""

log = logging.getLogger("keel.log")
SQLITE_BUSY_MS = 10_000
"""SQLite: how long a statement waits for another process's write lock."""


class Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


class Database:
    """Where the decision log lives; hands out pooled connections of the right kind."""

    def __init__(self, url: str, connect_timeout: float | None = None) -> None:
        self.url = url
        self.connect_timeout = (
            connect_timeout if connect_timeout is not None else LogSettings().connect_timeout
        )
        self._engine: sa.Engine | None = None

    def __repr__(self) -> str:
        return f"Database({redact(self.url)!r})"

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://"))

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.removeprefix("sqlite:///"))

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = self._make_engine()
            # A Database dropped without `dispose` closes its pooled connections then, instead of
            # leaving them for the garbage collector to drop while open (a ResourceWarning from
            # psycopg, and a server-side session that lingers until its socket is freed).
            # Not at exit: the process's sockets close with it, and daemon threads may still write.
            weakref.finalize(self, self._engine.dispose).atexit = False
        return self._engine

    def _make_engine(self) -> sa.Engine:
        timeout = self.connect_timeout
        if self.is_postgres:
            url = "postgresql+psycopg://" + self.url.split("://", 1)[1]
            engine = sa.create_engine(
                url,
                pool_pre_ping=True,
                pool_size=4,
                max_overflow=16,
                pool_timeout=timeout,
                connect_args={
                    "connect_timeout": max(1, math.ceil(timeout)),
                    # A peer that vanished without a FIN is noticed in seconds, not hours.
                    "keepalives": 1,
                    "keepalives_idle": 5,
                    "keepalives_interval": 2,
                    "keepalives_count": 3,
                    "tcp_user_timeout": int(timeout * 1000) + 5000,
                },
            )
            sa.event.listen(engine, "connect", _setup_postgres)
            return engine
        if not self.url.startswith("sqlite:///"):
            raise ValueError(f"unsupported decision log URL {redact(self.url)!r}")
        self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            self.url,
            pool_pre_ping=True,
            pool_size=4,
            max_overflow=16,
            pool_timeout=timeout,
            connect_args={"timeout": timeout, "check_same_thread": False},
        )
        sa.event.listen(engine, "connect", _setup_sqlite)
        # The driver's own BEGIN emulation is off (isolation_level None): SQLAlchemy transactions
        # BEGIN here; a write takes the database's write lock up front so it cannot deadlock.
        sa.event.listen(engine, "begin", _begin_sqlite)
        return engine

    def writing(self) -> AbstractContextManager[sa.Connection]:
        """A SQLAlchemy write transaction (SQLite: BEGIN IMMEDIATE)."""
        return self.engine.execution_options(keel_write=True).begin()

    def connect(self) -> Connection:
        """A pooled connection (pre-pinged); `close` gives it back, `invalidate` drops it."""
        raw = self.engine.raw_connection()
        return _PgConnection(raw) if self.is_postgres else _SqliteConnection(raw)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def create_schema(self) -> None:
        """Create the log's tables, or upgrade an existing log in place (Alembic migrations); on
        PostgreSQL, make the monthly partitions of this month and the next few."""
        from keel.decision_log.migrations import upgrade
        from keel.decision_log.partitions import ensure_months

        upgrade(self.engine, self.is_postgres)
        ensure_months(self.engine)

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

    @contextmanager
    def reading(self, snapshot: bool = False) -> Iterator[Reader]:
        """A read transaction; with `snapshot`, every read in it sees one consistent state of the log
        (SQLite: one read transaction over the WAL; PostgreSQL: REPEATABLE READ, read only)."""
        try:
            conn = self.connect()
        except DATABASE_ERRORS as exc:
            raise _unreadable(exc) from exc
        try:
            if snapshot:
                conn.execute(
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
                    if self.is_postgres
                    else "BEGIN"
                )
            yield Reader(conn, self.is_postgres)
            conn.rollback()  # reads only: ends the (possibly implicit) transaction
        except DATABASE_ERRORS as exc:
            _invalidate(conn)
            raise _unreadable(exc) from exc
        finally:
            conn.close()


class Reader:
    """Reads inside one transaction; `stream` uses a server-side cursor on PostgreSQL, so a big
    result arrives in chunks instead of all at once on the client."""

    def __init__(self, conn: Connection, postgres: bool) -> None:
        self.conn = conn
        self.postgres = postgres

    def without_jit(self) -> None:
        """PostgreSQL: no JIT compilation for the rest of this transaction. A LIMITed walk is
        costed as if it read its whole window, enough for the planner to JIT-compile it: at 10M
        decisions that took 382 ms of a 10,000-row export's 604, whose work itself took 140."""
        if self.postgres:
            self.conn.execute("SET LOCAL jit = off")

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(sql, params).fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row = self.conn.execute(sql, params).fetchone()
        return tuple(row) if row is not None else None

    def stream(self, sql: str, params: Sequence[Any] = (), chunk: int = 5000) -> Iterator[list[Any]]:
        """The result in lists of at most `chunk` rows."""
        if self.postgres:
            raw: Any = self.conn
            cur = raw.driver.cursor(name=f"keel_{uuid.uuid4().hex[:12]}")
            cur.itersize = chunk
            try:
                cur.execute(sql.replace("?", "%s"), params)
                while rows := cur.fetchmany(chunk):
                    yield rows
            finally:
                cur.close()
            return
        cur = self.conn.execute(sql, params)
        while rows := cur.fetchmany(chunk):
            yield rows

    def copy_rows(self, sql: str, params: Sequence[Any] = ()) -> Iterator[memoryview]:
        """PostgreSQL: the result of `sql` as CSV (COPY ... TO STDOUT), one row per piece, with
        floats written exactly (shortest round-trip form, whatever the server's default)."""
        raw: Any = self.conn
        with raw.driver.cursor() as cur:
            cur.execute("SET LOCAL extra_float_digits = 1")
            with cur.copy(f"COPY ({sql.replace('?', '%s')}) TO STDOUT WITH (FORMAT csv)", params) as copy:
                yield from copy


def _setup_sqlite(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # Autocommit at the driver level; transactions are opened explicitly (BEGIN / BEGIN IMMEDIATE).
    dbapi_conn.isolation_level = None
    dbapi_conn.execute("PRAGMA journal_mode=WAL")
    dbapi_conn.execute("PRAGMA synchronous=FULL")
    dbapi_conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")


def _unreadable(exc: BaseException) -> LogUnavailable:
    # The driver's words (which may name hosts, users or SQL) stay in the server log.
    log.warning("decision log read failed: %s", exc)
    return LogUnavailable("the decision log cannot be read at the moment", outcome=None)


def _invalidate(conn: Connection) -> None:
    invalidate = getattr(conn, "invalidate", None)
    if invalidate is not None:
        invalidate()


def is_alive(conn: Connection) -> bool:
    """Whether the connection still answers (after rolling back whatever failed on it)."""
    try:
        conn.rollback()
        conn.execute("SELECT 1").fetchall()
        conn.rollback()
        return True
    except Exception:
        return False


def discard(conn: Connection) -> None:
    """Drop a connection that failed, so the pool never hands it out again."""
    _invalidate(conn)
    with contextlib.suppress(Exception):
        conn.close()


def _begin_sqlite(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("keel_write") else "BEGIN")


def _setup_postgres(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute("SET synchronous_commit = on")
    dbapi_conn.commit()


def redact(url: str) -> str:
    """A database URL without its password, for messages and logs."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


class _Pooled:
    """A pooled DBAPI connection behind the log's qmark-style `execute`."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw  # SQLAlchemy's pool proxy: close() returns it to the pool
        self.driver = raw.driver_connection

    def commit(self) -> None:
        self._raw.commit()

    def rollback(self) -> None:
        self._raw.rollback()

    def close(self) -> None:
        self._raw.close()

    def invalidate(self) -> None:
        """Drop a broken connection instead of returning it to the pool."""
        with contextlib.suppress(Exception):  # already gone: nothing left to drop
            self._raw.invalidate()


class _SqliteConnection(_Pooled):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.driver.execute(sql, params)

    def commit(self) -> None:
        if self.driver.in_transaction:
            self.driver.execute("COMMIT")

    def rollback(self) -> None:
        if self.driver.in_transaction:
            self.driver.execute("ROLLBACK")


class _PgConnection(_Pooled):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.driver.execute(sql.replace("?", "%s"), params)
