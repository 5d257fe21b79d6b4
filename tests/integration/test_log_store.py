"""The decision log package on real SQLite and PostgreSQL: migrations, the supervised writer,
live verification on a snapshot, the keyed chain with checkpoints, strict JSON, backup/restore."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench.tcp_proxy import TcpProxy
from keel.decision_log import Database, DecisionLog, LogSettings, LogUnavailable
from keel.decision_log.chain import DECISION_COLUMNS, hashed_values, row_hash
from keel.decision_log.log_key import create_key_file, load_keys
from keel.decision_log.migrations import HEAD
from keel.decision_log.verify import append_checkpoint, read_checkpoints, verify
from keel.serving.keys import KeySettings, KeyStore
from tests.conftest import fresh_postgres_database, wait_until

OLD_SCHEMA = """
CREATE TABLE decisions (seq INTEGER PRIMARY KEY, decision_id TEXT NOT NULL UNIQUE, model TEXT NOT NULL,
  model_version TEXT NOT NULL, created_at TEXT NOT NULL, caller TEXT NOT NULL, case_id TEXT,
  idempotency_key TEXT, request_hash TEXT, request_index INTEGER NOT NULL, outcome TEXT,
  abstained INTEGER NOT NULL, route TEXT NOT NULL, confidence DOUBLE PRECISION, record TEXT NOT NULL,
  prev_hash TEXT NOT NULL, row_hash TEXT NOT NULL);
CREATE UNIQUE INDEX decisions_idempotency ON decisions (caller, model, idempotency_key, request_index);
CREATE TABLE feedback (seq INTEGER PRIMARY KEY, feedback_id TEXT NOT NULL UNIQUE, decision_id TEXT NOT NULL,
  model TEXT NOT NULL, created_at TEXT NOT NULL, caller TEXT NOT NULL, actor TEXT NOT NULL,
  final_outcome TEXT NOT NULL, kind TEXT NOT NULL, record TEXT NOT NULL, prev_hash TEXT NOT NULL,
  row_hash TEXT NOT NULL);
CREATE TABLE chain_heads (name TEXT PRIMARY KEY, seq BIGINT NOT NULL, row_hash TEXT NOT NULL);
CREATE TABLE api_keys (name TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, roles TEXT NOT NULL,
  created_at TEXT NOT NULL, revoked_at TEXT);
"""
"""The schema as the first releases made it, before the monitoring columns and migrations."""


def row(i: int, confidence: float = 0.9, created_at: str | None = None) -> dict[str, Any]:
    record = {"decision_id": str(uuid.uuid4()), "i": i, "inputs": {"amount": i}, "score": confidence}
    return {
        "decision_id": record["decision_id"],
        "model": "routing",
        "model_version": "1",
        "created_at": created_at or datetime.now(UTC).isoformat(),
        "caller": "t",
        "case_id": None,
        "idempotency_key": None,
        "request_hash": None,
        "request_index": 0,
        "outcome": "finance",
        "abstained": False,
        "route": "auto",
        "confidence": confidence,
        "segments": "{}",
        "intervened": 0,
        "record": record,
    }


def opened(url: str, **settings: Any) -> DecisionLog:
    return DecisionLog(Database(url), settings=LogSettings(**settings)).open()


def sqlite_url(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'decisions.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_database("keel_log") as url:
        yield url


def rehash(conn: sqlite3.Connection, keyed_too: bool = True) -> None:
    """What an administrator without the chain key can do after editing rows: recompute the
    unkeyed hashes of every row (`keyed_too`) or of the unkeyed rows, and the head."""
    prev = "0" * 64
    cols = ", ".join(DECISION_COLUMNS)
    for seq, key_id, h, *values in conn.execute(
        f"SELECT seq, key_id, row_hash, {cols} FROM decisions ORDER BY seq"
    ).fetchall():
        if keyed_too or key_id is None:
            h = row_hash(prev, hashed_values("decisions", tuple(values)))
            conn.execute(
                "UPDATE decisions SET prev_hash = ?, row_hash = ?, key_id = NULL WHERE seq = ?",
                (prev, h, seq),
            )
        prev = h
    conn.execute(
        "UPDATE chain_heads SET seq = (SELECT max(seq) FROM decisions), row_hash = ? "
        "WHERE name = 'decisions'",
        (prev,),
    )
    conn.commit()


def test_an_old_ad_hoc_log_upgrades_in_place_and_still_verifies(tmp_path: Path) -> None:
    path = tmp_path / "decisions.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    prev = "0" * 64
    for seq in (1, 2):
        values = (f"d{seq}", "routing", "1", "2026-01-01T00:00:00+00:00", "t", None, None, None, 0,
                  "finance", 0, "auto", 0.5, '{"a":1}')  # fmt: skip
        # Hashed as the columns read after the upgrade: segments NULL, intervened 0.
        h = row_hash(prev, (*values[:13], None, 0, values[13]))
        conn.execute(
            "INSERT INTO decisions (decision_id, model, model_version, created_at, caller, case_id, "
            "idempotency_key, request_hash, request_index, outcome, abstained, route, confidence, record, "
            "prev_hash, row_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (*values, prev, h),
        )
        prev = h
    conn.execute("INSERT INTO chain_heads VALUES ('decisions', 2, ?)", (prev,))
    conn.commit()
    conn.close()
    log = opened(f"sqlite:///{path}")
    try:
        log.append("decisions", [row(3)])
    finally:
        log.close()
    check = sqlite3.connect(path)
    assert check.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
    cols = {r[1] for r in check.execute("PRAGMA table_info(decisions)")}
    assert {"segments", "intervened", "key_id"} <= cols
    index_sql = check.execute("SELECT sql FROM sqlite_master WHERE name = 'decisions_idempotency'").fetchone()
    assert "WHERE" in index_sql[0].upper()
    check.close()
    result = verify(Database(f"sqlite:///{path}"))
    assert result.ok and result.rows_checked == 3 and result.unkeyed_rows == 3, result


def test_nan_is_stored_as_null_and_records_are_strict_json(tmp_path: Path) -> None:
    log = opened(sqlite_url(tmp_path))
    try:
        r = row(1)
        r["record"]["score"] = float("nan")
        r["record"]["nested"] = [float("inf"), 1.5]
        log.append("decisions", [r])
    finally:
        log.close()
    conn = sqlite3.connect(tmp_path / "decisions.db")
    (text,) = conn.execute("SELECT record FROM decisions").fetchone()
    conn.close()
    assert "NaN" not in text and "Infinity" not in text
    assert '"score":null' in text and '"nested":[null,1.5]' in text
    assert verify(Database(sqlite_url(tmp_path))).ok


def test_keyed_chain_rotation_and_checkpoints_catch_a_rewrite(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    # Rows from before the log had a key, then a key, then a rotated key.
    log = opened(url)
    log.append("decisions", [row(i) for i in range(3)])
    log.close()
    keyfile = tmp_path / "chain.key"
    first = create_key_file(keyfile)
    time.sleep(0.01)
    log = opened(url, key_file=keyfile)
    log.append("decisions", [row(i) for i in range(3, 6)])
    log.close()
    checkpoints = tmp_path / "checkpoints.jsonl"
    keys = load_keys(keyfile)
    result = verify(Database(url), keys)
    assert result.ok and result.unkeyed_rows == 3 and result.key_ids == [first], result
    append_checkpoint(checkpoints, keys, result.heads)
    second = create_key_file(keyfile, rotate=True)
    keys = load_keys(keyfile)
    log = opened(url, key_file=keyfile)
    log.append("decisions", [row(i) for i in range(6, 8)])
    log.close()
    result = verify(Database(url), keys, checkpoints=read_checkpoints(checkpoints))
    assert result.ok and result.key_ids == sorted([first, second]) and result.checkpoints_checked == 1, result

    def rewrite(sql: str, keyed_too: bool) -> Path:
        """A copy of the log where an administrator ran `sql` and recomputed the unkeyed hashes of
        every row (`keyed_too`) or of the rows that were unkeyed, and the head: all one can do
        without the chain key."""
        copy = tmp_path / f"tampered-{uuid.uuid4().hex[:6]}.db"
        src, dst = sqlite3.connect(tmp_path / "decisions.db"), sqlite3.connect(copy)
        src.backup(dst)
        src.close()
        dst.execute(sql)
        rehash(dst, keyed_too)
        dst.close()
        return copy

    edit_old = "UPDATE decisions SET outcome = 'legal' WHERE seq = 2"
    # Everything rehashed without the key: the keyed rows turn unkeyed, after the key existed.
    bad = verify(Database(f"sqlite:///{rewrite(edit_old, keyed_too=True)}"), keys)
    assert not bad.ok and bad.table == "decisions" and bad.bad_seq == 4, bad
    # Only the unkeyed rows rehashed: the first keyed row's signed link to its predecessor breaks.
    bad = verify(Database(f"sqlite:///{rewrite(edit_old, keyed_too=False)}"), keys)
    assert not bad.ok and bad.table == "decisions" and bad.bad_seq == 4, bad
    # Without the key file, the keyed rows cannot be checked: that is an error, never a pass.
    blind = verify(Database(url))
    assert not blind.ok and "lacks" in (blind.problem or "")
    # A checkpoint file that was edited is caught.
    text = checkpoints.read_text().replace('"decisions": [6', '"decisions": [5')
    forged = tmp_path / "forged.jsonl"
    forged.write_text(text)
    assert not verify(Database(url), keys, checkpoints=read_checkpoints(forged)).ok


def test_a_checkpoint_catches_a_rehashed_unkeyed_log(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    log = opened(url)
    log.append("decisions", [row(i) for i in range(4)])
    log.close()
    keyfile = tmp_path / "chain.key"
    create_key_file(keyfile)
    keys = load_keys(keyfile)
    checkpoints = tmp_path / "cp.jsonl"
    append_checkpoint(checkpoints, keys, verify(Database(url), keys).heads)
    conn = sqlite3.connect(tmp_path / "decisions.db")
    conn.execute("UPDATE decisions SET outcome = 'legal' WHERE seq = 2")
    rehash(conn)
    conn.close()
    assert verify(Database(url), keys).ok  # a consistent unkeyed rewrite: only the anchor knows
    bad = verify(Database(url), keys, checkpoints=read_checkpoints(checkpoints))
    assert not bad.ok and bad.table == "decisions" and bad.bad_seq == 4, bad


def writers(
    logs: list[DecisionLog], stop: threading.Event, acked: list[str], seconds: float
) -> list[threading.Thread]:
    def hammer(log: DecisionLog) -> None:
        deadline = time.monotonic() + seconds
        i = 0
        while not stop.is_set() and time.monotonic() < deadline:
            rows = [row(i), row(i + 1)]
            i += 2
            try:
                log.append("decisions", rows)
            except LogUnavailable:
                time.sleep(0.05)
                continue
            acked.extend(r["decision_id"] for r in rows)

    threads = [threading.Thread(target=hammer, args=(log,)) for log in logs for _ in range(3)]
    for t in threads:
        t.start()
    return threads


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_verify_on_a_live_log_never_raises_a_false_alarm(kind: str, tmp_path: Path) -> None:
    """20 verifications while writers append at full speed (two writers on PostgreSQL, as two
    replicas would be: each with its own pool, serialised only by the database)."""
    with (
        fresh_postgres_database("keel_live") if kind == "postgresql" else _nullctx(sqlite_url(tmp_path))
    ) as url:
        logs = [opened(url) for _ in range(2 if kind == "postgresql" else 1)]
        stop = threading.Event()
        acked: list[str] = []
        threads = writers(logs, stop, acked, seconds=60)
        try:
            wait_until(lambda: len(acked) >= 200, 60, lambda: f"only {len(acked)} decisions appended")
            results = [verify(Database(url), batch_size=50) for _ in range(20)]
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
            for log in logs:
                log.close()
        alarms = [r for r in results if not r.ok]
        assert not alarms, alarms[:2]
        assert results[-1].rows_checked > results[0].rows_checked  # it really was being written


class _nullctx:
    def __init__(self, value: str) -> None:
        self.value = value

    def __enter__(self) -> str:
        return self.value

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.postgres
def test_writer_survives_a_cut_database_and_recovers_by_itself(pg_url: str) -> None:
    host_db = pg_url.rsplit("/", 1)[1]
    DecisionLog(Database(pg_url)).db.create_schema()
    proxy = TcpProxy("127.0.0.1", 5432).start()
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{host_db}"
    log = opened(url, connect_timeout=1, commit_timeout=3)
    keys = KeyStore(log.db, cache_seconds=0.2, settings=KeySettings())
    key = keys.add("k", ["decide"])
    keys.start()
    stop = threading.Event()
    acked: list[str] = []
    threads = writers([log], stop, acked, seconds=60)
    try:
        wait_until(lambda: len(acked) >= 100, 30, lambda: f"only {len(acked)} decisions appended")
        proxy.cut()
        time.sleep(0.5)
        assert not log.ready
        started = time.monotonic()
        with pytest.raises(LogUnavailable) as refused:
            log.append("decisions", [row(0)])
        assert time.monotonic() - started < 1.0  # refused at once, not after the commit timeout
        assert refused.value.headers["Retry-After"]
        # The last good key set keeps authenticating while the database is away.
        time.sleep(0.5)
        assert keys.authenticate(f"Bearer {key}").name == "k"
        time.sleep(2)
        proxy.restore()
        restored = time.monotonic()
        while not log.ready and time.monotonic() - restored < 30:
            time.sleep(0.05)
        recovery = time.monotonic() - restored
        assert log.ready, "the writer did not recover"
        before = len(acked)
        deadline = time.monotonic() + 20
        while len(acked) < before + 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acked) >= before + 100
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        keys.stop()
        log.close()
        proxy.stop()
    print(f"recovered {recovery:.2f}s after the database came back")
    stored = {r[0] for r in _pg_rows(pg_url, "SELECT decision_id FROM decisions")}
    assert not set(acked) - stored
    assert verify(Database(pg_url)).ok


def _pg_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return list(conn.execute(sql).fetchall())


def test_rate_limit_is_a_token_bucket_per_key(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path))
    db.create_schema()
    store = KeyStore(db, settings=KeySettings(default_rate_per_second=None))
    store.add("slow", ["decide"], rate_per_second=2)
    token = store.add("free", ["decide"])
    slow = next(k for k in store.list_keys() if k.name == "slow")
    assert slow.rate_per_second == 2
    assert [store.retry_after(slow) for _ in range(2)] == [None, None]
    wait = store.retry_after(slow)
    assert wait is not None and 0 < wait <= 0.5
    free = store.authenticate(f"Bearer {token}")
    assert all(store.retry_after(free) is None for _ in range(100))


def test_sqlite_backup_restores_a_log_that_verifies_with_its_checkpoints(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    keyfile = tmp_path / "chain.key"
    create_key_file(keyfile)
    keys = load_keys(keyfile)
    log = opened(url, key_file=keyfile)
    log.append("decisions", [row(i) for i in range(5)])
    checkpoints = tmp_path / "cp.jsonl"
    append_checkpoint(checkpoints, keys, verify(Database(url), keys).heads)
    backup = tmp_path / "backup.db"
    src, dst = sqlite3.connect(tmp_path / "decisions.db"), sqlite3.connect(backup)
    src.backup(dst)  # SQLite's online backup API: a consistent copy while the writer runs
    src.close()
    dst.close()
    log.append("decisions", [row(9)])
    log.close()
    restored = tmp_path / "restored" / "decisions.db"
    restored.parent.mkdir()
    shutil.copy(backup, restored)
    result = verify(Database(f"sqlite:///{restored}"), keys, checkpoints=read_checkpoints(checkpoints))
    assert result.ok and result.rows_checked == 5 and result.checkpoints_checked == 1, result


@pytest.mark.postgres
def test_pg_dump_and_pg_restore_give_a_log_that_verifies(pg_url: str, tmp_path: Path) -> None:
    keyfile = tmp_path / "chain.key"
    create_key_file(keyfile)
    keys = load_keys(keyfile)
    log = opened(pg_url, key_file=keyfile)
    log.append("decisions", [row(i) for i in range(5)])
    log.close()
    checkpoints = tmp_path / "cp.jsonl"
    append_checkpoint(checkpoints, keys, verify(Database(pg_url), keys).heads)
    dump = tmp_path / "log.dump"
    env = {**os.environ, "PGCONNECT_TIMEOUT": "5"}
    subprocess.run(["pg_dump", "--format=custom", f"--file={dump}", pg_url], check=True, env=env, timeout=60)
    with fresh_postgres_database("keel_restore") as target:
        subprocess.run(["pg_restore", "--no-owner", f"--dbname={target}", str(dump)], check=True, env=env,
                       timeout=60)  # fmt: skip
        result = verify(Database(target), keys, checkpoints=read_checkpoints(checkpoints))
        assert result.ok and result.rows_checked == 5 and result.checkpoints_checked == 1, result
        # The restored log takes new writes on the same chain.
        log = opened(target, key_file=keyfile)
        log.append("decisions", [row(7)])
        log.close()
        assert verify(Database(target), keys).rows_checked == 6
        # Partitions, id tables and their triggers came back with it (migration 0011).
        restored = Database(target)
        with restored.reading() as reader:
            assert reader.one("SELECT relkind FROM pg_class WHERE relname = 'decisions'") == ("p",)
            assert reader.one("SELECT count(*) FROM decision_ids") == (6,)
            assert reader.one("SELECT count(*) FROM decisions_default") == (0,)
        restored.dispose()


def test_log_key_and_checkpoint_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line in-process (`keel.cli.main`, as the `keel` script runs it)."""
    from keel.cli import main

    url = sqlite_url(tmp_path)
    keyfile, checkpoints = tmp_path / "chain.key", tmp_path / "cp.jsonl"
    for name, value in {
        "KEEL_HOME": tmp_path,
        "KEEL_DECISION_LOG_URL": url,
        "KEEL_LOG_KEY_FILE": keyfile,
    }.items():
        monkeypatch.setenv(name, str(value))
    assert main(["verify-log", "--checkpoint", str(checkpoints)]) == 3  # no decision log yet
    assert not (tmp_path / "decisions.db").exists()  # and none was created by looking
    assert main(["log-key", "create"]) == 0
    assert oct(keyfile.stat().st_mode & 0o777) == "0o600"
    assert main(["log-key", "create"]) == 1  # never overwritten silently
    log = opened(url, key_file=keyfile)
    log.append("decisions", [row(i) for i in range(3)])
    log.close()
    capsys.readouterr()
    monkeypatch.setenv("KEEL_LOG_KEY_FILE", str(tmp_path / "missing.key"))
    assert main(["verify-log", "--checkpoint", str(checkpoints)]) == 2  # the key file is not there
    monkeypatch.setenv("KEEL_LOG_KEY_FILE", str(keyfile))
    assert main(["verify-log", "--checkpoint", str(checkpoints)]) == 0
    assert main(["verify-log", "--checkpoint", str(checkpoints)]) == 0
    assert "1 checkpoints matched" in capsys.readouterr().out
    conn = sqlite3.connect(tmp_path / "decisions.db")
    conn.execute("DELETE FROM decisions WHERE seq = 3")
    conn.commit()
    conn.close()
    assert main(["verify-log", "--checkpoint", str(checkpoints)]) == 1
    assert "BROKEN in table decisions" in capsys.readouterr().err


def test_decision_origin_upgrades_counts_and_is_covered_by_the_chain(tmp_path: Path) -> None:
    """Batch rows logged before the `origin` column become `batch` and still verify; monitoring
    windows count live rows (batch ones only when asked, shadow ones never); editing an origin
    shows in verification."""
    from keel.decision_log.migrations import upgrade
    from keel.decision_log.windows import WindowQueries

    path = tmp_path / "decisions.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db.engine, False, to="0002")
    db.dispose()
    conn = sqlite3.connect(path)
    prev = "0" * 64
    for seq, caller, key in ((1, "batch:ops", "run1:0"), (2, "ops-key", None)):
        r = row(seq, created_at="2026-01-01T00:00:00+00:00")
        columns = DECISION_COLUMNS[: DECISION_COLUMNS.index("origin")]  # the columns at 0002
        values = tuple(json.dumps(r["record"]) if c == "record" else r[c] for c in columns)
        values = (*values[:4], caller, None, key, *values[7:])
        h = row_hash(prev, values)
        conn.execute(
            f"INSERT INTO decisions ({', '.join(columns)}, "
            f"prev_hash, row_hash) VALUES ({', '.join('?' * (len(columns) + 2))})",
            (*values, prev, h),
        )
        prev = h
    conn.execute("INSERT INTO chain_heads VALUES ('decisions', 2, ?)", (prev,))
    conn.commit()
    conn.close()
    log = opened(f"sqlite:///{path}")
    try:
        log.append("decisions", [row(3, created_at="2026-01-01T00:00:01+00:00")])
        shadow = {**row(4, created_at="2026-01-01T00:00:02+00:00"), "origin": "shadow"}
        log.append("decisions", [shadow])
        with pytest.raises(ValueError, match="origin"):
            log.append("decisions", [{**row(5), "origin": "replayed"}])
    finally:
        log.close()
    check = sqlite3.connect(path)
    assert check.execute("SELECT origin FROM decisions ORDER BY seq").fetchall() == [
        ("batch",),
        ("live",),
        ("live",),
        ("shadow",),
    ]
    check.close()
    assert verify(db).ok
    window = ("routing", "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00")
    assert WindowQueries(db).seq_range(window)[0] == 2
    assert WindowQueries(db, include_batch=True).seq_range(window)[0] == 3
    for seq, edited in ((4, "live"), (3, "shadow"), (1, "live"), (2, "batch")):
        conn = sqlite3.connect(path)
        (before,) = conn.execute("SELECT origin FROM decisions WHERE seq = ?", (seq,)).fetchone()
        conn.execute("UPDATE decisions SET origin = ? WHERE seq = ?", (edited, seq))
        conn.commit()
        result = verify(db)
        conn.execute("UPDATE decisions SET origin = ? WHERE seq = ?", (before, seq))
        conn.commit()
        conn.close()
        assert not result.ok and result.bad_seq == seq, (seq, edited, result)
    assert verify(db).ok
