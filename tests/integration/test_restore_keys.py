"""A restored month against idempotency keys used again since it left the live log (SQLite and
PostgreSQL): the restore goes through in one piece, the restored rows stay exactly as archived
(both verifications pass), each key stays with the live decision that holds it (its replay is
unchanged, the key still cannot be logged twice), and the restore event lists the pairs."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest

from keel.decision_log import Database, reads
from keel.decision_log.archive import archive_months
from keel.decision_log.archive_verify import verify_archive
from keel.decision_log.bulk import BulkLoader
from keel.decision_log.log_key import ChainKeys
from keel.decision_log.retention import RetentionError, events, remove_months, restore_months
from keel.decision_log.verify import verify
from keel.feature_defs.contract import load_contract
from tests.conftest import Store, run_keel
from tests.integration.conftest import Server, make_keys, start_server
from tests.integration.test_archive import PER_MONTH, decisions, feedback, fill, keys, log

__all__ = ["keys", "log"]

KEYED = 6
"""Decisions of October logged with an Idempotency-Key (two requests of three cases each)."""


def keyed(month: str, tag: str) -> list[dict[str, Any]]:
    """Two requests with the keys `k-1` and `k-2`, three cases each, from the caller `svc`."""
    rows = list(decisions(month, KEYED))
    for i, row in enumerate(rows):
        row.update(idempotency_key=f"k-{1 + i // 3}", request_index=i % 3, request_hash=f"{tag}-{i // 3}")
    return rows


def _ids(db: Database) -> dict[str, tuple[int, str | None]]:
    with db.reading() as reader:
        rows = reader.all("SELECT decision_id, seq, idempotency_key FROM decision_ids")
    return {str(r[0]): (int(r[1]), r[2]) for r in rows}


def _intact(db: Database, keys: ChainKeys, target: str) -> None:
    result = verify(db, keys)
    assert result.ok, (result.table, result.bad_seq, result.problem)
    report = verify_archive(target, keys, live=db, workers=1)
    assert report.ok, (report.where, report.problem)


def _key_used_again(log: Database, keys: ChainKeys, target: str) -> tuple[list[dict[str, Any]], ...]:
    """October logged with keys, archived and removed; then `k-1` sent again in November."""
    loader = BulkLoader(log, keys)
    old = keyed("2026-10", "old")
    loader.load("decisions", old)
    # November goes on (SQLite keeps a chain's last row live: see test_sqlite_keeps_a_chain_s_last_row).
    november = list(decisions("2026-11", 5))
    loader.load("decisions", november)
    loader.load("feedback", feedback("2026-11", [november[0]["decision_id"]]))
    list(archive_months(log, keys, date(2026, 11, 1), target))
    assert remove_months(log, keys, target, "2026-10", actor="ops") == ["2026-08", "2026-09", "2026-10"]
    # The keys expired with October; the caller sends `k-1` again (a new request), `k-2` never.
    assert reads.decisions_by_key(log, "svc", "routing", "k-1") == []
    new = keyed("2026-11", "new")[:3]
    loader.load("decisions", new)
    return old, new


def test_a_key_used_again_stays_with_the_live_decision(
    log: Database, keys: ChainKeys, tmp_path: Path
) -> None:
    loader = BulkLoader(log, keys)
    target = str(tmp_path / "archive")
    old, new = _key_used_again(log, keys, target)
    live = [r["decision_id"] for r in reads.decisions_by_key(log, "svc", "routing", "k-1")]
    assert live == [r["decision_id"] for r in new]
    ids_before = _ids(log)  # every removed id is still in the id-to-month index

    done = restore_months(log, keys, target, "2026-08", actor="auditor", reason="complaint 17")

    assert done.months == ["2026-08", "2026-09", "2026-10"]
    assert [(c.restored, c.held_by, c.idempotency_key, c.request_index) for c in done.key_conflicts] == [
        (old[i]["decision_id"], new[i]["decision_id"], "k-1", i) for i in range(3)
    ]
    _intact(log, keys, target)
    # The replay of `k-1` is still the live request's; `k-2` came back with its restored decisions.
    replay = reads.decisions_by_key(log, "svc", "routing", "k-1")
    assert [r["decision_id"] for r in replay] == live and {r["request_hash"] for r in replay} == {"new-0"}
    back = reads.decisions_by_key(log, "svc", "routing", "k-2")
    assert [r["decision_id"] for r in back] == [r["decision_id"] for r in old[3:]]
    # The restored rows are as archived (key included); the index says who holds each key.
    restored = reads.decision(log, old[0]["decision_id"])
    assert restored is not None and "archived" not in restored and restored["idempotency_key"] == "k-1"
    ids = _ids(log)
    assert set(ids) == set(ids_before) and len(ids) == 3 * PER_MONTH + KEYED + 5 + 3
    assert {ids[r["decision_id"]][1] for r in old[:3]} == {None}
    assert [ids[r["decision_id"]][1] for r in old[3:]] == ["k-2"] * 3
    assert [ids[r["decision_id"]][1] for r in new] == ["k-1"] * 3
    assert all(ids[d][0] == ids_before[d][0] for d in ids)  # each id at its own seq
    # Neither key can be logged a second time.
    for taken in ("k-1", "k-2"):
        again = keyed("2026-12", "again")[:1]
        again[0]["idempotency_key"] = taken
        with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
            loader.load("decisions", again)
    with log.reading() as reader:
        event = events(reader, ("restore",))[-1]
    assert event.actor == "auditor" and event.detail["key_conflicts"] == 3
    assert [(p["restored"], p["held_by"]) for p in event.detail["keys_kept_by_live"]] == [
        (c.restored, c.held_by) for c in done.key_conflicts
    ]
    # Out and back again: the ids stay put, the keys expire and return the same way.
    assert remove_months(log, keys, target, "2026-10", actor="ops") == ["2026-08", "2026-09", "2026-10"]
    assert {_ids(log)[r["decision_id"]][1] for r in old} == {None}
    assert len(restore_months(log, keys, target, "2026-09", actor="auditor").key_conflicts) == 3
    assert _ids(log)[old[3]["decision_id"]][1] == "k-2"
    _intact(log, keys, target)


def test_sqlite_keeps_a_chain_s_last_row(tmp_path: Path, keys: ChainKeys) -> None:
    """SQLite numbers the next row of an emptied table 1 again: the month holding a chain's last
    row is refused (a retention run stops there) until a later row is logged."""
    db = fill(f"sqlite:///{tmp_path / 'log.db'}", keys)
    target = str(tmp_path / "archive")
    list(archive_months(db, keys, date(2026, 11, 1), target))
    BulkLoader(db, keys).load("decisions", decisions("2026-11", 5))
    with pytest.raises(RetentionError, match="last row of the feedback chain"):
        remove_months(db, keys, target, "2026-10", actor="ops")  # August and September go first
    assert remove_months(db, keys, target, "2026-10", actor="ops", stop_at_hold=True) == []
    with db.reading() as reader:
        assert [e.month for e in events(reader, ("remove",))] == ["2026-08", "2026-09"]
    BulkLoader(db, keys).load("feedback", feedback("2026-11", ["a-november-decision"]))
    assert remove_months(db, keys, target, "2026-10", actor="ops") == ["2026-10"]
    with db.reading() as reader:
        assert reader.one("SELECT min(seq) FROM feedback") == (3 * 20 + 1,)
    _intact(db, keys, target)
    db.dispose()


def test_the_restore_command_names_the_pairs(tmp_path: Path, keys: ChainKeys) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    db = fill(url, keys)
    target = str(tmp_path / "archive")
    old, new = _key_used_again(db, keys, target)
    db.dispose()
    env = {
        **os.environ,
        "KEEL_HOME": str(tmp_path / "home"),
        "KEEL_DECISION_LOG_URL": url,
        "KEEL_LOG_KEY_FILE": str(tmp_path / "chain.key"),
    }
    done = run_keel(env, "log", "restore", "2026-10", "--archive", target, "--reason", "complaint 17")
    assert done.returncode == 0, done.stderr
    assert "restored into the live log from" in done.stdout and "2026-10" in done.stdout
    assert "3 restored decision(s) carry an idempotency key that a live decision" in done.stdout
    assert (
        f"{old[0]['decision_id']} (svc, routing, key 'k-1') -> kept by {new[0]['decision_id']}" in done.stdout
    )
    assert run_keel(env, "verify-log").returncode == 0


def _october_removed_then_served(
    store: Store, tmp_path: Path, url: str, db: Database, keys: ChainKeys, api_keys: dict[str, str]
) -> tuple[Server, str]:
    """November's decisions and feedback logged after what the test put in October, October
    archived and removed, and a real `keel serve` on the log: the server and the archive."""
    loader = BulkLoader(db, keys)
    november = list(decisions("2026-11", 2))
    loader.load("decisions", november)
    loader.load("feedback", feedback("2026-11", [november[0]["decision_id"]]))
    target = str(tmp_path / "archive")
    list(archive_months(db, keys, date(2026, 11, 1), target))
    remove_months(db, keys, target, "2026-10", actor="ops")
    server = start_server(store, tmp_path, url, extra_env={"KEEL_LOG_KEY_FILE": str(tmp_path / "chain.key")})
    server.keys = api_keys
    return server, target


def test_the_service_replays_the_live_decision_after_a_restore(
    store: Store, registered: dict[str, str], tmp_path: Path, keys: ChainKeys
) -> None:
    """On a real `keel serve`: a key whose archived decision was removed is sent again (a new
    decision), the archived month comes back, and a retry of the new request still replays it."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    api_keys = make_keys(url, "restorekeys")
    db = fill(url, keys)
    archived = next(iter(decisions("2026-10", 1)))
    archived.update(caller="restorekeys-all", idempotency_key="retry-7", request_hash="an older body")
    BulkLoader(db, keys).load("decisions", [archived])
    server, target = _october_removed_then_served(store, tmp_path, url, db, keys, api_keys)
    body = {"cases": [load_contract("routing").example_case]}
    headers = {"Idempotency-Key": "retry-7"}
    try:
        with server.client() as client:
            first = client.post("/v1/routing/decide", json=body, headers=headers)
            assert first.status_code == 200, first.text
            live_id = first.json()["decisions"][0]["decision_id"]
            restored = restore_months(db, keys, target, "2026-10", actor="auditor")
            again = client.post("/v1/routing/decide", json=body, headers=headers)
            old = client.get(f"/v1/decisions/{archived['decision_id']}")
    finally:
        server.stop()
    assert [(c.restored, c.held_by) for c in restored.key_conflicts] == [(archived["decision_id"], live_id)]
    assert again.status_code == 200, again.text
    assert again.json()["decisions"][0]["decision_id"] == live_id
    assert old.status_code == 200 and "archived" not in old.json()
    assert old.json()["decision_id"] == archived["decision_id"]
    _intact(db, keys, target)
    db.dispose()


def test_a_feedback_retry_whose_feedback_was_archived_is_a_409_not_a_5xx(
    store: Store, registered: dict[str, str], tmp_path: Path, keys: ChainKeys
) -> None:
    """Feedback ids come from (caller, Idempotency-Key), and `feedback_ids` keeps every id: a
    retry after the feedback's month left the live log can be neither replayed from the live log
    nor logged again, so it is refused as a conflict that says why, never a 503 to retry for ever."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    api_keys = make_keys(url, "fbkeys")
    db = fill(url, keys)
    (october,) = decisions("2026-10", 1)
    october["model_version"] = registered["routing"]
    (given,) = feedback("2026-10", [october["decision_id"]])
    given["caller"] = caller = "fbkeys-all"
    digest = hashlib.sha256(json.dumps([caller, "fb-1"]).encode()).hexdigest()
    given["feedback_id"] = str(uuid.UUID(digest[:32]))  # as the service names keyed feedback
    loader = BulkLoader(db, keys)
    loader.load("decisions", [october])
    loader.load("feedback", [given])
    server, _ = _october_removed_then_served(store, tmp_path, url, db, keys, api_keys)
    outcome = load_contract("routing").classes[0]
    body = {"decision_id": october["decision_id"], "final_outcome": outcome, "actor": "r1", "reason": "late"}
    try:
        with server.client() as client:
            retried = client.post("/v1/feedback", json=body, headers={"Idempotency-Key": "fb-1"})
            fresh = client.post("/v1/feedback", json=body, headers={"Idempotency-Key": "fb-2"})
    finally:
        server.stop()
    assert retried.status_code == 409, retried.text
    assert "archived and removed from the live log" in retried.json()["message"]
    assert fresh.status_code == 201, fresh.text  # late feedback on an archived decision is accepted
    db.dispose()
