"""Durability and integrity: kill -9 under load, hash-chain tampering, hot reload, PostgreSQL."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keel.decision_log import DecisionLog
from keel.decision_log.database import Database
from keel.feature_defs.contract import load_contract
from keel.models import registry
from keel.settings import StateSettings
from keel.training.generators import generate
from keel.training.registration import train_and_register
from keel.training.settings import TrainingSettings
from tests.conftest import Store, fresh_postgres_database, run_keel
from tests.integration.conftest import Server, make_keys, session_models_loaded, start_server


def hammer(
    srv: Server, stop: threading.Event, acked: list[str], failures: list[str], seconds: float = 20
) -> None:
    """One client thread: decide example cases until told to stop (bounded in time)."""
    case = load_contract("routing").example_case
    deadline = time.monotonic() + seconds
    with srv.client() as c:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                r = c.post("/v1/routing/decide", json={"cases": [case, case]})
            except httpx.TransportError as exc:
                failures.append(type(exc).__name__)
                continue
            if r.status_code == 200:
                acked.extend(d["decision_id"] for d in r.json()["decisions"])
            else:
                failures.append(f"{r.status_code}: {r.text[:200]}")


def test_kill_9_under_load_loses_no_acknowledged_decision(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    log_url = f"sqlite:///{tmp_path / 'decisions.db'}"
    srv = start_server(store, tmp_path, log_url)
    srv.keys = make_keys(log_url, "kill")
    acked: list[str] = []
    failures: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=hammer, args=(srv, stop, acked, failures)) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acked) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        srv.stop(sig_kill=True)  # SIGKILL: no shutdown hook runs
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        srv.stop()
    assert len(acked) >= 300, f"only {len(acked)} decisions before the kill; failures: {failures[:3]}"
    conn = sqlite3.connect(tmp_path / "decisions.db")
    logged = {r[0] for r in conn.execute("SELECT decision_id FROM decisions")}
    conn.close()
    missing = set(acked) - logged
    assert not missing, f"{len(missing)} acknowledged decisions were lost"
    done = run_keel({**srv.env, "KEEL_DECISION_LOG_URL": log_url}, "verify-log")
    assert done.returncode == 0, done.stderr


def test_verify_log_finds_an_edited_and_a_deleted_row(server: Server, tmp_path: Path) -> None:
    with server.client() as c:
        c.post("/v1/routing/decide", json={"cases": [load_contract("routing").example_case] * 5})
    source = Path(server.env["KEEL_DECISION_LOG_URL"].removeprefix("sqlite:///"))
    for name, tamper in (
        (
            "edited",
            "UPDATE decisions SET outcome = 'legal', record = replace(record, 'finance', 'legal') "
            "WHERE seq = 3",
        ),
        ("deleted", "DELETE FROM decisions WHERE seq = 2"),
        ("truncated", "DELETE FROM decisions WHERE seq = (SELECT max(seq) FROM decisions)"),
    ):
        copy = tmp_path / f"{name}.db"
        src = sqlite3.connect(source)
        dst = sqlite3.connect(copy)
        src.backup(dst)  # a consistent copy of the live WAL database
        src.close()
        env = {**server.env, "KEEL_DECISION_LOG_URL": f"sqlite:///{copy}"}
        assert run_keel(env, "verify-log").returncode == 0
        dst.execute(tamper)
        dst.commit()
        dst.close()
        broken = run_keel(env, "verify-log")
        assert broken.returncode == 1, name
        assert "BROKEN in table decisions" in broken.stderr, broken.stderr


def test_hot_reload_under_traffic_has_zero_failed_requests(
    store: Store, registered: dict[str, str], server: Server
) -> None:
    settings = TrainingSettings(rows=4000, num_boost_round=60, seed=21)
    new = train_and_register("routing", generate("routing", 4000, 21), StateSettings(), settings).version
    acked: list[str] = []
    failures: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=hammer, args=(server, stop, acked, failures)) for _ in range(6)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        registry.promote("routing", new)
        with server.client("admin") as c:
            report = c.post("/v1/admin/reload").json()
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        registry.promote("routing", registered["routing"])
    assert session_models_loaded(report) == {"routing": new}
    assert not report["failed"]
    assert not failures, failures[:5]
    with server.client() as c:
        d = c.post("/v1/routing/decide", json={"cases": [load_contract("routing").example_case]}).json()
        assert d["decisions"][0]["versions"]["model_version"] == new
        c.post("/v1/admin/reload")  # back to the session's champion
    assert len(acked) > 50


def test_a_version_that_fails_verification_leaves_the_old_one_serving(
    store: Store, registered: dict[str, str], server: Server
) -> None:
    settings = TrainingSettings(rows=4000, num_boost_round=40, seed=22)
    reg = train_and_register("discount_band", generate("discount_band", 4000, 22), StateSettings(), settings)
    stored = [
        p
        for p in (store.home / "mlartifacts").rglob("calibration.json")
        if reg.result.data_fingerprint in (p.parent / "manifest.json").read_text()
    ]
    assert len(stored) == 1
    original = stored[0].read_text()
    stored[0].write_text(original.replace('"temperature"', '"temperature" ', 1))
    try:
        registry.promote("discount_band", reg.version)
        with server.client("admin") as c:
            report = c.post("/v1/admin/reload")
        assert report.status_code == 207 and "calibration.json" in report.json()["failed"]["discount_band"]
        with server.client() as c:
            d = c.post(
                "/v1/discount_band/decide", json={"cases": [load_contract("discount_band").example_case]}
            )
        assert d.json()["decisions"][0]["versions"]["model_version"] == registered["discount_band"]
    finally:
        stored[0].write_text(original)
        registry.promote("discount_band", registered["discount_band"])
        with server.client("admin") as c:
            c.post("/v1/admin/reload")


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_database("keel_test") as url:
        yield url


@pytest.mark.postgres
def test_postgresql_decision_log_end_to_end(
    store: Store, registered: dict[str, str], tmp_path: Path, pg_url: str
) -> None:
    keys = make_keys(pg_url, "pg")
    srv = start_server(store, tmp_path, pg_url)
    srv.keys = keys
    acked: list[str] = []
    failures: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=hammer, args=(srv, stop, acked, failures, 4)) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        with srv.client() as c:
            fb = c.post(
                "/v1/feedback", json={"decision_id": acked[0], "final_outcome": "legal", "actor": "r"}
            )
            assert fb.status_code == 201, fb.text
            assert c.get(f"/v1/decisions/{acked[0]}").json()["feedback"][0]["kind"] in (
                "override",
                "confirmation",
            )
    finally:
        stop.set()
        srv.stop()
    assert not failures and len(acked) > 20
    result = DecisionLog(Database(pg_url)).verify()
    assert result.ok and result.rows_checked == len(acked) + 1
    done = run_keel({**srv.env, "KEEL_DECISION_LOG_URL": pg_url}, "verify-log")
    assert done.returncode == 0, done.stderr
    shutil.rmtree(tmp_path / "bentoml", ignore_errors=True)
