"""SQLite WAL checkpoints run beside the writer, off the request path: what was committed reaches
the database file without the writer pausing for it, a long WAL still starts over under a load
that never pauses, and closing the log leaves nothing behind in the WAL."""

from __future__ import annotations

import shutil
import sqlite3
import struct
import threading
import time
from pathlib import Path

from keel.decision_log import Database, DecisionLog
from keel.decision_log.checkpointer import Checkpointer
from tests.conftest import wait_until
from tests.integration.test_log_store import row


def rows_in_file_alone(db_file: Path, scratch: Path) -> int:
    """Decisions in the database file without its WAL: only checkpointed pages are there."""
    shutil.copyfile(db_file, scratch)
    conn = sqlite3.connect(scratch)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])
    except sqlite3.OperationalError:  # the schema itself is not checkpointed yet
        return 0
    finally:
        conn.close()


def wal_salts(wal: Path) -> bytes:
    """The WAL header's salts: they change each time the WAL starts over from its beginning."""
    return wal.read_bytes()[16:24]


def test_commits_reach_the_database_file_from_the_checkpointer_thread(tmp_path: Path) -> None:
    path = tmp_path / "decisions.db"
    log = DecisionLog(Database(f"sqlite:///{path}")).open()
    try:
        writer_threads = {t.name for t in threading.enumerate()}
        assert "decision-log-checkpointer" in writer_threads
        for i in range(20):
            log.append("decisions", [row(i)])
        wait_until(
            lambda: rows_in_file_alone(path, tmp_path / "copy-2.db") == 20,
            30,
            lambda: "the committed rows never reached the database file",
        )
        log.append("decisions", [row(20)])
    finally:
        log.close()
    assert "decision-log-checkpointer" not in {t.name for t in threading.enumerate()}
    assert rows_in_file_alone(path, tmp_path / "copy-3.db") == 21  # close checkpoints the rest


def test_a_long_wal_starts_over_under_a_load_that_never_pauses(tmp_path: Path) -> None:
    path = tmp_path / "decisions.db"
    wal = tmp_path / "decisions.db-wal"
    db = Database(f"sqlite:///{path}")
    log = DecisionLog(db).open()
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(k: int) -> None:
        deadline = time.monotonic() + 60
        i = 0
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                log.append("decisions", [row(k * 100_000 + i)])
            except BaseException as exc:  # reported below, not swallowed
                errors.append(exc)
                return
            i += 1

    # The log's own checkpointer, made eager: a WAL past 20 frames must start over.
    assert log._checkpointer is not None
    log._checkpointer.stop(timeout=5)
    log._checkpointer = Checkpointer(db, every=0.05, restart_frames=20).start()
    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: wal.exists() and len(wal.read_bytes()) > 32, 30, lambda: "nothing written")
        first = wal_salts(wal)
        wait_until(lambda: wal_salts(wal) != first, 30, lambda: "the WAL never started over")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        log.close()
    assert not errors, errors[:3]
    frame = struct.unpack(">I", wal.read_bytes()[8:12])[0] + 24
    assert len(wal.read_bytes()) < 32 + frame * 2000  # bounded: it started over, it did not grow
