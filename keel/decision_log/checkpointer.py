"""SQLite: WAL checkpoints on their own thread and connection, off the request path.

A checkpoint copies committed WAL pages into the database file and syncs it; when the writer
ran it between batches, every request queued meanwhile waited for that copy and sync (about
11 ms at p99 in bench.serving). A PASSIVE checkpoint needs no lock the writer takes, so here it
runs beside the writer, at most once per `every` seconds after something was committed.

The WAL only starts over from its beginning when a checkpoint has copied every frame by the
time the writer begins its next transaction. Under a steady stream of commits a checkpoint
running beside the writer may never catch up, so the writer still checkpoints between batches
once the WAL holds more than `restart_frames` frames (`wants_restart`); by then this thread has
copied all but the newest frames, so that checkpoint is short. A failed checkpoint loses
nothing (the pages stay in the WAL): it is logged and the next one retries.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from keel.decision_log.database import Connection, Database, discard

__all__ = ["CHECKPOINT_SECONDS", "RESTART_FRAMES", "Checkpointer", "checkpoint"]

CHECKPOINT_SECONDS = 0.5
"""How often, at most, the WAL is checkpointed while decisions are being written."""
RESTART_FRAMES = 4000
"""WAL frames (about 16 MB at 4 KB pages) past which the writer checkpoints between batches too,
so the WAL can start over even under a load that never pauses."""

log = logging.getLogger("keel.log")


def checkpoint(conn: Connection) -> tuple[int, int]:
    """One PASSIVE checkpoint (never waits for readers or the writer): (WAL frames, frames copied)."""
    _busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames), int(copied)


class Checkpointer:
    """Checkpoints one SQLite log's WAL from a thread of its own; `written` after each commit."""

    def __init__(self, db: Database, every: float | None = None, restart_frames: int | None = None) -> None:
        self.db = db
        self.every = CHECKPOINT_SECONDS if every is None else every
        self.restart_frames = RESTART_FRAMES if restart_frames is None else restart_frames
        self.wants_restart = False
        """The WAL has outgrown `restart_frames`: the writer should checkpoint between batches."""
        self.runs = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Checkpointer:
        self._thread = threading.Thread(target=self._run, name="decision-log-checkpointer", daemon=True)
        self._thread.start()
        return self

    def written(self) -> None:
        """Something was committed: checkpoint within `every` seconds."""
        self._wake.set()

    def stop(self, timeout: float) -> None:
        """Checkpoint what was committed before now, then end the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    def _run(self) -> None:
        conn: Connection | None = None
        try:
            while not self._stop.is_set():
                self._wake.wait()
                self._stop.wait(self.every)  # let commits gather; a stop cuts the wait short
                self._wake.clear()  # a commit from here on asks for the next round
                conn = self._once(conn)
            conn = self._once(conn)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _once(self, conn: Connection | None) -> Connection | None:
        try:
            conn = conn or self.db.connect()
            frames, _ = checkpoint(conn)
        except Exception:
            log.warning("WAL checkpoint failed; the next one retries", exc_info=True)
            if conn is not None:
                discard(conn)
            return None
        self.runs += 1
        self.wants_restart = frames > self.restart_frames
        return conn
