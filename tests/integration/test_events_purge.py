"""Outbox retention on real SQLite and PostgreSQL logs: delivered and failed events past their keep
are purged in bounded batches, by the running dispatcher and by `keel events purge`; pending
events never are, however old."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.decision_log import outbox
from keel.decision_log.database import Database
from keel.events.catalog import MONITOR_VERDICT
from keel.events.dispatcher import Dispatcher, purge_settled
from keel.events.settings import EventSettings
from tests.conftest import fresh_postgres_database, run_keel, wait_until
from tests.integration.conftest import free_port

KEYS = {"k": "k" * 32}
TEST_TYPE = "io.keel.test"
DAY = 86400.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'decisions.db'}"
    else:
        with fresh_postgres_database("keel_events_purge") as url:
            yield url


def _settings(port: int, **extra: object) -> EventSettings:
    """The monitor webhook as the only sink, and nobody listening there: pending verdicts stay
    pending (their attempts fail), and the test's own events are never claimed by a dispatcher
    (it claims only the types its sinks receive)."""
    return EventSettings.model_validate(
        {"monitor_webhook_url": f"http://127.0.0.1:{port}/x", "signing_keys": KEYS, "timeout": 0.5, **extra}
    )


def _outbox(db: Database, settled: dict[str, tuple[str, float]], pending_since: float) -> None:
    """Stage one event per name and settle it as (status, days ago); and one more verdict,
    `pending`, staged (due) `pending_since` days ago and never settled."""
    now = time.time()
    conn = db.connect()
    try:
        with db.transaction(conn):
            events = [outbox.OutboxEvent(TEST_TYPE, "/keel/test", name, {}) for name in settled]
            outbox.stage(conn, events, now)
            verdict = outbox.OutboxEvent(MONITOR_VERDICT, "/keel/monitor/routing", "pending", {})
            outbox.stage(conn, [verdict], now - pending_since * DAY)
    finally:
        conn.close()
    held = {c.event.subject: c for c in outbox.claim(db, "t", 1000, 60, now, {TEST_TYPE})}
    assert set(held) == set(settled)
    for name, (status, days_ago) in settled.items():
        assert outbox.settle(db, "t", held[name], frozenset({"s"}), status, now - days_ago * DAY, None)


def _left(db: Database) -> list[str]:
    return sorted(str(r["subject"]) for r in outbox.listing(db, limit=1000))


def test_settled_events_past_their_keep_are_purged_in_batches_pending_never(
    log_url: str, tmp_path: Path
) -> None:
    db = Database(log_url)
    db.create_schema()
    settled = {
        **{f"delivered-old-{i}": (outbox.DELIVERED, 31.0) for i in range(5)},
        "delivered-new": (outbox.DELIVERED, 29.0),
        "failed-old": (outbox.FAILED, 91.0),
        "failed-mid": (outbox.FAILED, 40.0),
    }
    _outbox(db, settled, pending_since=400.0)
    # Batches of two: five old delivered rows take three transactions, all of them deleted.
    assert purge_settled(db, _settings(free_port(), purge_batch=2)) == 6
    assert _left(db) == ["delivered-new", "failed-mid", "pending"]
    assert purge_settled(db, _settings(free_port())) == 0

    # The one-shot command, with a shorter keep for failed events.
    env = {
        **os.environ,
        "KEEL_HOME": str(tmp_path / "home"),
        "KEEL_DECISION_LOG_URL": log_url,
        "KEEL_EVENTS_KEEP_FAILED_DAYS": "30",
    }
    done = run_keel(env, "events", "purge")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 settled event(s) purged" in done.stdout and "pending events are kept" in done.stdout
    assert _left(db) == ["delivered-new", "pending"]
    listed = json.loads(run_keel(env, "events", "list", "--json").stdout)
    assert listed["counts"] == {"pending": 1, "delivered": 1, "failed": 0}
    with pytest.raises(ValueError, match="never purged"):
        outbox.purge(db, outbox.PENDING, time.time(), 10)
    db.dispose()


def test_the_running_dispatcher_purges_periodically_off_the_request_path(log_url: str) -> None:
    db = Database(log_url)
    db.create_schema()
    _outbox(db, {"delivered-old": (outbox.DELIVERED, 2.0), "failed-old": (outbox.FAILED, 2.0)}, 400.0)
    settings = _settings(
        free_port(),
        keep_delivered_days=1.0,
        keep_failed_days=1.0,
        purge_every_seconds=0.3,
        poll_seconds=0.1,
        backoff_base=0.1,
        backoff_max=0.2,
    )
    dispatcher, stopping = Dispatcher(Database(log_url), settings), threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stopping,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: _left(db) == ["pending"], 30, lambda: str(_left(db)))
        # Settled later, while it runs: the next periodic purge takes it.
        _outbox(db, {"delivered-later": (outbox.DELIVERED, 3.0)}, 0.0)
        wait_until(lambda: _left(db) == ["pending", "pending"], 30, lambda: str(_left(db)))
    finally:
        stopping.set()
        thread.join(timeout=30)
    # The verdict pending for 400 days was tried (nobody listens) and is still pending, never purged.
    pending = outbox.listing(db, outbox.PENDING)
    assert any(r["attempts"] >= 1 and "ConnectError" in (r["last_error"] or "") for r in pending)
    assert outbox.counts(db) == {"pending": 2, "delivered": 0, "failed": 0}
    dispatcher.db.dispose()
    db.dispose()
