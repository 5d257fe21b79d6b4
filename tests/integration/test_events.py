"""Events out: alias moves and monitor runs reach a real webhook receiver as signed CloudEvents.

The receiver is a small HTTP server on 127.0.0.1 that checks every request the way
docs/events.md tells a receiver to: the CloudEvent parsed from the binary-mode request by the
`cloudevents` package, the Keel-Signature recomputed with `hmac` from the documented recipe.
It is down while the moves happen (nothing listens on its port), so the events wait in the
outbox; once it is up they arrive, each once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from keel.decision_log import outbox
from keel.decision_log.database import Database
from keel.events.catalog import ALIAS_MOVED, MONITOR_VERDICT, PROMOTION_REQUESTED
from keel.events.dispatcher import Dispatcher
from keel.events.settings import EventSettings
from keel.models import aliases, registry
from keel.models.history import History
from keel.settings import StateSettings
from keel.training.promotion import approve
from tests.conftest import Store, cli_env, fresh_postgres_database, run_keel, wait_until
from tests.integration.conftest import free_port, start_server
from tests.integration.test_monitor import fill_log

MODEL = "routing"
KEYS = {"2026-old": "o" * 40, "2026-new": "n" * 40}
ALIAS_FIELDS = {
    "model", "alias", "action", "from_version", "to_version", "actor", "reason", "forced", "gates",
    "created_at", "history_seq", "history_hash",
}  # fmt: skip
VERDICT_FIELDS = {
    "run_id", "model", "generated_at", "status", "recommendation", "window", "decisions", "verdicts",
    "report_dir",
}  # fmt: skip


class Receiver(ThreadingHTTPServer):
    """Keeps every request (headers, body) and answers 204."""

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.received.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def receiving(port: int) -> Iterator[Receiver]:
    server = Receiver(port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def verified(headers: dict[str, str], body: bytes) -> Any:
    """The CloudEvent of one request, after checking its signature by docs/events.md's recipe."""
    low = {k.lower(): v for k, v in headers.items()}
    parts = dict(p.split("=", 1) for p in low["keel-signature"].split(","))
    assert parts["alg"] == "hmac-sha256" and parts["keyid"] == "2026-new"  # the newest key signs
    signed = "".join(f"{low[h]}\n" for h in ("ce-id", "ce-source", "ce-type", "ce-time")).encode() + body
    mac = hmac.new(KEYS[parts["keyid"]].encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(mac, parts["sig"]), "signature does not verify"
    event = from_http_event(HTTPMessage(headers=headers, body=body))
    assert event.get_specversion() == "1.0" and low["content-type"] == "application/json"
    return event


def event_env(port: int, **extra: str) -> dict[str, str]:
    return {
        "KEEL_EVENTS_SINKS": f"http://127.0.0.1:{port}/hooks/keel",
        "KEEL_EVENTS_SIGNING_KEYS": json.dumps(KEYS),
        "KEEL_EVENTS_BACKOFF_BASE": "0.2",
        "KEEL_EVENTS_BACKOFF_MAX": "0.5",
        "KEEL_EVENTS_POLL_SECONDS": "0.2",
        **extra,
    }


def move_aliases(log_url: str, version: str) -> int:
    """Shadow on and off, canary on and off, a promotion request and its approval; how many rows."""
    history = History(log_url, registry.client())
    moves = [
        (registry.SHADOW, version),
        (registry.SHADOW, None),
        (registry.CANARY, version),
        (registry.CANARY, None),
    ]
    for alias, to in moves:
        aliases.move_alias(history, MODEL, alias, to, action=alias, actor="dana", reason="events test")
    aliases.record_request(history, MODEL, version, "alice", "events test", [], forced=False)
    approve(MODEL, version, actor="bob", state=StateSettings(decision_log_url=log_url))
    return 6


def check_delivery(received: list[tuple[dict[str, str], bytes]], db: Database) -> None:
    """One valid signed event per staged outbox row, each once, with the documented data only."""
    events = [verified(h, b) for h, b in received]
    ids = [e.get_id() for e in events]
    assert len(ids) == len(set(ids)), "an event arrived twice"
    staged = outbox.listing(db, limit=1000)
    assert sorted(ids) == sorted(r["event_id"] for r in staged)
    assert all(r["status"] == outbox.DELIVERED for r in staged), [r["last_error"] for r in staged]
    by_type: dict[str, list[Any]] = {}
    for e in events:
        by_type.setdefault(e.get_type(), []).append(e)
    moves = by_type[ALIAS_MOVED] + by_type[PROMOTION_REQUESTED]
    assert len(moves) == 6 and len(by_type[PROMOTION_REQUESTED]) == 1
    assert all(set(e.get_data()) == ALIAS_FIELDS and e.get_source() == f"/keel/models/{MODEL}" for e in moves)
    actions = sorted(e.get_data()["action"] for e in moves)
    assert actions == ["approve", "canary", "canary", "request", "shadow", "shadow"]
    (run,) = by_type[MONITOR_VERDICT]
    data = run.get_data()
    assert set(data) == VERDICT_FIELDS and data["model"] == MODEL and run.get_subject() == data["run_id"]
    assert data["verdicts"] and all(
        set(v) == {"check", "status", "value", "warn", "alert"} for v in data["verdicts"]
    )
    with db.reading() as reader:
        (run_ids,) = zip(*reader.all("SELECT run_id FROM monitor_runs"), strict=True)
    assert run_ids == (data["run_id"],)


def restore(version: str) -> None:
    client = registry.client()
    registry.promote(MODEL, version)
    for alias in (registry.SHADOW, registry.CANARY):
        if registry.has_alias(MODEL, alias):
            client.delete_registered_model_alias(MODEL, alias)


def _queue_while_down(
    store: Store, registered: dict[str, str], log_url: str, port: int, tmp: Path
) -> Database:
    """Moves and a monitor run while nothing listens on `port`; a delivery pass fails on every
    event, which stays pending with its error."""
    db = Database(log_url)
    db.create_schema()
    try:
        move_aliases(log_url, registered[MODEL])
    finally:
        restore(registered[MODEL])
    fill_log(store, None, MODEL, "none", 300, seed=5, url=log_url)
    env = cli_env(store, KEEL_DECISION_LOG_URL=log_url, **event_env(port))
    ran = run_keel(env, "monitor", MODEL, "--window", "2h", "--out", str(tmp / "reports"), timeout=600)
    assert ran.returncode in (0, 1, 2), ran.stdout + ran.stderr
    down = run_keel(env, "events", "deliver")
    assert down.returncode == 1 and "0 delivered, 7 to retry later" in down.stdout, down.stdout + down.stderr
    pending = outbox.listing(db, outbox.PENDING)
    assert len(pending) == 7 and all(
        r["attempts"] == 1 and "ConnectError" in r["last_error"] for r in pending
    )
    listed = run_keel(env, "events", "list", "--json")
    assert json.loads(listed.stdout)["counts"] == {"pending": 7, "delivered": 0, "failed": 0}
    return db


@pytest.mark.slow
def test_events_queue_while_the_receiver_is_down_then_keel_serve_delivers_each_once(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    """SQLite: the dispatcher thread of `keel serve` delivers the backlog once the receiver is up."""
    port, log_url = free_port(), f"sqlite:///{tmp_path / 'decisions.db'}"
    db = _queue_while_down(store, registered, log_url, port, tmp_path)
    with receiving(port) as receiver:
        server = start_server(store, tmp_path, log_url, extra_env=event_env(port))
        try:
            wait_until(
                lambda: len(receiver.received) >= 7, 60, lambda: f"{len(receiver.received)} of 7 arrived"
            )
            time.sleep(1.0)  # a second copy, were one coming, would arrive within a few polls
        finally:
            server.stop()
        check_delivery(receiver.received, db)
    # A move while the service is stopped is delivered by the one-shot command.
    env = cli_env(store, KEEL_DECISION_LOG_URL=log_url, **event_env(port))
    with receiving(port) as receiver:
        moved = run_keel(env, "shadow", MODEL, "off", "--actor", "erin")
        assert moved.returncode == 0, moved.stdout + moved.stderr
        sent = run_keel(env, "events", "deliver")
        assert sent.returncode == 0 and "1 delivered" in sent.stdout, sent.stdout + sent.stderr
        (event,) = [verified(h, b) for h, b in receiver.received]
        assert event.get_data()["actor"] == "erin" and event.get_data()["alias"] == "shadow"


@pytest.mark.slow
@pytest.mark.postgres
def test_events_on_postgres_arrive_once_after_the_receiver_comes_back(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    """PostgreSQL: `keel events deliver` delivers the backlog once the receiver is back."""
    port = free_port()
    with fresh_postgres_database("keel_events") as log_url:
        db = _queue_while_down(store, registered, log_url, port, tmp_path)
        env = cli_env(store, KEEL_DECISION_LOG_URL=log_url, **event_env(port))
        with receiving(port) as receiver:
            time.sleep(0.6)  # past the backoff of the failed attempt (at most KEEL_EVENTS_BACKOFF_MAX)
            sent = run_keel(env, "events", "deliver")
            assert sent.returncode == 0 and "7 delivered" in sent.stdout, sent.stdout + sent.stderr
            again = run_keel(env, "events", "deliver")
            assert again.returncode == 0 and "0 delivered" in again.stdout
            check_delivery(receiver.received, db)
        db.dispose()


@pytest.mark.postgres
def test_replicas_on_one_postgres_log_do_not_deliver_an_event_twice(tmp_path: Path) -> None:
    """Four dispatchers (own pools, as replicas have) drain one outbox at once: every event
    arrives exactly once, claimed with FOR UPDATE SKIP LOCKED under leases."""
    port = free_port()
    with fresh_postgres_database("keel_events_race") as log_url:
        db = Database(log_url)
        db.create_schema()
        conn = db.connect()
        try:
            with db.transaction(conn):
                outbox.stage(
                    conn,
                    [outbox.OutboxEvent("io.keel.test", "/keel/test", str(i), {"i": i}) for i in range(120)],
                    time.time(),
                )
        finally:
            conn.close()
        settings = EventSettings.model_validate(
            {"sinks": [f"http://127.0.0.1:{port}/x"], "signing_keys": KEYS, "batch": 5, "poll_seconds": 0.05}
        )
        replicas = [Dispatcher(Database(log_url), settings) for _ in range(4)]
        with receiving(port) as receiver:
            stopping = threading.Event()
            threads = [threading.Thread(target=d.run, args=(stopping,), daemon=True) for d in replicas]
            for t in threads:
                t.start()
            try:
                wait_until(lambda: outbox.counts(db)["delivered"] == 120, 60, lambda: str(outbox.counts(db)))
            finally:
                stopping.set()
                for t in threads:
                    t.join(timeout=30)
            ids = [verified(h, b).get_id() for h, b in receiver.received]
        assert len(ids) == 120 and len(set(ids)) == 120
        for d in replicas:
            d.db.dispose()
        db.dispose()


@pytest.mark.slow
def test_the_monitor_webhook_alone_gets_one_signed_verdict_per_monitor_run(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    """KEEL_MONITOR_WEBHOOK_URL as the only sink: each `keel monitor` run reaches it once as a
    signed `io.keel.monitor.verdict` through the outbox, the run made while it was down too;
    the alias moves in the same log are not its business and wait, pending, for a sink that
    takes them."""
    port, log_url = free_port(), f"sqlite:///{tmp_path / 'decisions.db'}"
    db = Database(log_url)
    db.create_schema()
    try:
        moves = move_aliases(log_url, registered[MODEL])
    finally:
        restore(registered[MODEL])
    fill_log(store, None, MODEL, "none", 300, seed=7, url=log_url)
    env = cli_env(
        store,
        KEEL_DECISION_LOG_URL=log_url,
        KEEL_MONITOR_WEBHOOK_URL=f"http://127.0.0.1:{port}/ops/t0ken-in-path",
        **{k: v for k, v in event_env(port).items() if k != "KEEL_EVENTS_SINKS"},
    )
    args = ("monitor", MODEL, "--window", "2h", "--out", str(tmp_path / "reports"))
    # Without signing keys the monitor webhook keeps working as it did before events: its
    # events are signed with a key KEEL_HOME makes for itself, which `keel events list` names.
    unsigned = {k: v for k, v in env.items() if k != "KEEL_EVENTS_SIGNING_KEYS"}
    first = run_keel(unsigned, *args, timeout=600)
    assert first.returncode in (0, 1, 2), first.stdout + first.stderr
    assert "dispatcher" not in first.stderr, first.stderr
    listed = run_keel(unsigned, "events", "list")
    assert "signing key id 'local'" in listed.stdout, listed.stdout + listed.stderr
    own_key = Path(unsigned["KEEL_HOME"]) / "events-signing-key"
    assert own_key.stat().st_mode & 0o777 == 0o600
    down = run_keel(env, "events", "deliver")  # nothing listens yet
    assert down.returncode == 1 and "0 delivered, 1 to retry later" in down.stdout, down.stdout + down.stderr
    with receiving(port) as receiver:
        second = run_keel(env, *args, timeout=600)
        assert second.returncode in (0, 1, 2), second.stdout + second.stderr
        assert "dispatcher" not in second.stderr
        time.sleep(0.6)  # past the backoff of the failed attempt (at most KEEL_EVENTS_BACKOFF_MAX)
        sent = run_keel(env, "events", "deliver")
        assert sent.returncode == 0 and "2 delivered" in sent.stdout, sent.stdout + sent.stderr
        again = run_keel(env, "events", "deliver")
        assert again.returncode == 0 and "0 delivered" in again.stdout
        events = [verified(h, b) for h, b in receiver.received]
    assert [e.get_type() for e in events] == [MONITOR_VERDICT] * 2
    assert all(h["Host"] == f"127.0.0.1:{port}" for h, _ in receiver.received)
    with db.reading() as reader:
        run_ids = {str(r[0]) for r in reader.all("SELECT run_id FROM monitor_runs")}
    assert {e.get_subject() for e in events} == run_ids and len(run_ids) == 2
    assert all(set(e.get_data()) == VERDICT_FIELDS for e in events)
    listed = json.loads(run_keel(env, "events", "list", "--json").stdout)
    assert listed["counts"] == {"pending": moves, "delivered": 2, "failed": 0}
    assert {r["type"] for r in listed["events"] if r["status"] == outbox.PENDING} == {
        ALIAS_MOVED,
        PROMOTION_REQUESTED,
    }
    assert all(r["attempts"] == 0 for r in listed["events"] if r["status"] == outbox.PENDING)
    shown = run_keel(env, "events", "list").stdout
    assert f"127.0.0.1:{port}  (io.keel.canary.rolled_back, io.keel.monitor.verdict)" in shown
    assert "t0ken" not in shown  # a webhook's path may hold its secret: never printed
    db.dispose()
