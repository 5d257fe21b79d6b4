"""Event signatures, retry schedule, settings and sinks, and the outbox's leases and type filter
(on a real SQLite log)."""

from __future__ import annotations

import hashlib
import hmac
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from keel.decision_log import outbox
from keel.decision_log.database import Database
from keel.errors import InvalidInput
from keel.events.catalog import ALIAS_MOVED, CANARY_ROLLED_BACK, MONITOR_VERDICT
from keel.events.dispatcher import backoff, request_of
from keel.events.settings import EventSettings
from keel.events.signing import sign, verify
from keel.events.sinks import MONITOR_WEBHOOK_TYPES, claimable_types

KEYS = {"old": "o" * 32, "new": "n" * 32}


def _settings(**extra: object) -> EventSettings:
    return EventSettings.model_validate({"sinks": ["http://127.0.0.1:9/x"], "signing_keys": KEYS, **extra})


def _event(i: int = 0) -> outbox.OutboxEvent:
    return outbox.OutboxEvent("io.keel.test", "/keel/test", f"s{i}", {"i": i, "note": "é"})


def test_the_newest_key_signs_and_any_held_key_verifies() -> None:
    headers, body = request_of(_event(), _settings())
    assert "keyid=new," in headers["Keel-Signature"]
    assert verify(headers, body, KEYS) and verify(headers, body, {"new": KEYS["new"]})
    assert not verify(headers, body, {"old": KEYS["old"]})  # the key it names is not held
    assert not verify(headers, body + b" ", KEYS)
    assert not verify({**headers, "ce-type": "io.keel.other"}, body, KEYS)
    assert not verify({k: v for k, v in headers.items() if k != "Keel-Signature"}, body, KEYS)
    # An older key's signature still verifies while receivers hold it (rotation without a gap).
    old = {**headers, "Keel-Signature": sign(headers, body, "old", KEYS["old"])}
    assert verify(old, body, KEYS)
    # The documented recipe, by hand.
    signed = "".join(f"{headers[h]}\n" for h in ("ce-id", "ce-source", "ce-type", "ce-time")).encode() + body
    assert headers["Keel-Signature"].endswith(hmac.new(b"n" * 32, signed, hashlib.sha256).hexdigest())


def test_a_retry_sends_the_same_event_id_and_body() -> None:
    event = _event()
    first, second = request_of(event, _settings()), request_of(event, _settings())
    assert first == second and first[0]["ce-id"] == event.id


def test_backoff_doubles_with_jitter_up_to_its_cap_and_honours_retry_after() -> None:
    settings = _settings(backoff_base=1.0, backoff_max=60.0)
    random.seed(1)
    for attempts, ceiling in ((1, 1.0), (2, 2.0), (4, 8.0), (9, 60.0), (200, 60.0)):
        delays = [backoff(attempts, settings) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # spread out, not one instant for all
    assert backoff(1, settings, retry_after=30.0) == 30.0
    assert backoff(1, settings, retry_after=3600.0) == 60.0


def test_settings_read_sinks_either_way_and_refuse_unsigned_or_weak_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEEL_EVENTS_SINKS", "http://a/x, https://b/y")
    monkeypatch.setenv("KEEL_EVENTS_SIGNING_KEYS", '{"k1": "' + "x" * 32 + '"}')
    assert EventSettings().sinks == ["http://a/x", "https://b/y"]
    monkeypatch.setenv("KEEL_EVENTS_SINKS", '["http://a/x"]')
    assert EventSettings().sinks == ["http://a/x"]
    for name in ("KEEL_EVENTS_SINKS", "KEEL_EVENTS_SIGNING_KEYS"):  # env merges into given values
        monkeypatch.delenv(name)
    monkeypatch.setenv("KEEL_EVENTS_SINKS", "http://a/x")
    with pytest.raises(InvalidInput, match="always signed"):  # one line for the command, exit 2
        EventSettings.load()
    monkeypatch.delenv("KEEL_EVENTS_SINKS")
    with pytest.raises(ValidationError, match="always signed"):
        EventSettings.model_validate({"sinks": ["http://a/x"], "signing_keys": {}})
    with pytest.raises(ValidationError, match="shorter than"):
        EventSettings.model_validate({"signing_keys": {"k": "short"}})
    with pytest.raises(ValidationError, match="http"):
        EventSettings.model_validate({"sinks": ["ftp://a/x"], "signing_keys": KEYS})


def test_a_claim_holds_its_events_until_settled_or_its_lease_ends(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'log.db'}")
    db.create_schema()
    conn = db.connect()
    try:
        with db.transaction(conn):
            outbox.stage(conn, [_event(i) for i in range(3)], now=100.0)
    finally:
        conn.close()
    assert outbox.claim(db, "a", 10, lease_seconds=30, now=99.0) == []  # not due yet
    held = outbox.claim(db, "a", 2, lease_seconds=30, now=100.0)
    assert [c.event.subject for c in held] == ["s0", "s1"] and held[0].event.data == {"i": 0, "note": "é"}
    (rest,) = outbox.claim(db, "b", 10, lease_seconds=30, now=101.0)
    assert rest.event.subject == "s2"
    assert outbox.claim(db, "c", 10, lease_seconds=30, now=129.0) == []  # every lease still runs
    done = frozenset({"sink1"})
    assert outbox.settle(db, "a", held[0], done, outbox.DELIVERED, 101.0, None)
    assert not outbox.settle(db, "z", held[1], done, outbox.DELIVERED, 101.0, None)  # not z's claim
    # a's lease on s1 ended: c takes it over, and a's late outcome no longer counts.
    (taken,) = outbox.claim(db, "c", 10, lease_seconds=30, now=131.0 + 0.5)[:1]
    assert taken.event.subject == "s1" and taken.event.id == held[1].event.id
    assert not outbox.settle(db, "a", held[1], done, outbox.DELIVERED, 132.0, None)
    assert outbox.settle(db, "c", taken, frozenset(), outbox.FAILED, 132.0, "HTTP 500")
    assert outbox.counts(db) == {"pending": 1, "delivered": 1, "failed": 1}
    assert outbox.requeue(db, now=140.0) == 1
    (row,) = [r for r in outbox.listing(db, outbox.PENDING) if r["subject"] == "s1"]
    assert row["attempts"] == 0 and row["last_error"] == "HTTP 500" and row["next_attempt_at"] == 140.0
    db.dispose()


def test_the_monitor_webhook_is_one_more_sink_for_what_monitoring_decides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEEL_MONITOR_WEBHOOK_URL", "https://ops.example/hook")
    with pytest.raises(InvalidInput, match=r"KEEL_MONITOR_WEBHOOK_URL is set but .* always signed"):
        EventSettings.load()
    monkeypatch.setenv("KEEL_EVENTS_SIGNING_KEYS", '{"k1": "' + "x" * 32 + '"}')
    (sink,) = EventSettings().targets
    assert sink.url == "https://ops.example/hook" and sink.types == MONITOR_WEBHOOK_TYPES
    assert sink.wants(MONITOR_VERDICT) and sink.wants(CANARY_ROLLED_BACK) and not sink.wants(ALIAS_MOVED)
    assert claimable_types([sink]) == {MONITOR_VERDICT, CANARY_ROLLED_BACK}
    monkeypatch.setenv("KEEL_EVENTS_SINKS", "https://all.example/x, https://ops.example/hook")
    both = EventSettings().targets  # one URL in both settings: one sink, every type, once
    assert [(s.url, s.types) for s in both] == [
        ("https://all.example/x", None),
        ("https://ops.example/hook", None),
    ]
    assert claimable_types(both) is None and len({s.id for s in both}) == 2
    monkeypatch.setenv("KEEL_MONITOR_WEBHOOK_URL", "file:///tmp/hook")
    with pytest.raises(InvalidInput, match="http"):
        EventSettings.load()


def test_a_claim_takes_only_the_types_its_sinks_receive(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'log.db'}")
    db.create_schema()
    conn = db.connect()
    try:
        with db.transaction(conn):
            kinds = [ALIAS_MOVED, MONITOR_VERDICT, ALIAS_MOVED, CANARY_ROLLED_BACK]
            outbox.stage(
                conn, [outbox.OutboxEvent(k, "/keel/test", str(i), {}) for i, k in enumerate(kinds)], 1.0
            )
    finally:
        conn.close()
    assert outbox.claim(db, "none", 10, 30, 2.0, frozenset()) == []
    monitoring = outbox.claim(db, "m", 10, 30, 2.0, MONITOR_WEBHOOK_TYPES)
    assert [c.event.subject for c in monitoring] == ["1", "3"]
    assert [c.event.subject for c in outbox.claim(db, "all", 10, 30, 2.0)] == ["0", "2"]
    db.dispose()


def test_the_monitor_webhook_alone_is_signed_with_a_key_of_keel_homes_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KEEL_EVENTS_SIGNING_KEYS", raising=False)
    monkeypatch.delenv("KEEL_EVENTS_SINKS", raising=False)
    monkeypatch.setenv("KEEL_MONITOR_WEBHOOK_URL", "https://ops.example/hook")
    first = EventSettings.load(tmp_path)
    again = EventSettings.load(tmp_path)
    assert first.own_key and list(first.signing_keys) == ["local"]
    secret = first.signing_keys["local"].get_secret_value()
    assert len(secret) >= 32 and again.signing_keys["local"].get_secret_value() == secret
    assert (tmp_path / "events-signing-key").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("KEEL_EVENTS_SIGNING_KEYS", '{"k1": "' + "x" * 32 + '"}')
    monkeypatch.setenv("KEEL_EVENTS_OWN_KEY", "true")  # not a setting: only `load` says so
    shared = EventSettings.load(tmp_path)  # a configured key always wins
    assert not shared.own_key and list(shared.signing_keys) == ["k1"]
    monkeypatch.delenv("KEEL_EVENTS_SIGNING_KEYS")
    monkeypatch.setenv("KEEL_EVENTS_SINKS", "https://all.example/x")
    with pytest.raises(InvalidInput, match="always signed"):  # sinks of events must say their key
        EventSettings.load(tmp_path)
