"""Fault injection against a real `keel serve`: the log's database cut off (PostgreSQL through a
TCP proxy) or made read-only (SQLite, an immutable file) under concurrent load. No acknowledged
decision may be lost, no request may hang past its timeout, /readyz must say 503 during the
outage and 200 after, without a restart, and the chain must verify. Also feedback revisions and
per-key rate limits over HTTP."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.tcp_proxy import TcpProxy
from keel.decision_log import Database
from keel.decision_log.verify import verify
from keel.feature_defs.contract import load_contract
from keel.serving.keys import KeyStore
from tests.conftest import Store, fresh_postgres_database, run_keel
from tests.integration.conftest import Server, make_keys, start_server

FAST_FAIL = {"KEEL_LOG_CONNECT_TIMEOUT": "1", "KEEL_LOG_COMMIT_TIMEOUT": "3"}
HANG_LIMIT = 15.0
"""No request may take longer than this (commit timeout 3 s plus a wide margin for a shared machine)."""


class Load:
    """Client threads deciding until stopped (bounded in time); records acks, statuses, durations."""

    def __init__(self, srv: Server, threads: int = 4, seconds: float = 90) -> None:
        self.srv, self.seconds = srv, seconds
        self.acked: list[str] = []
        self.statuses: list[int] = []
        self.slowest = 0.0
        self.retry_after_missing = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def wait_for(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.acked) >= n, f"only {len(self.acked)} acknowledged; statuses {self.statuses[-5:]}"

    def _run(self) -> None:
        case = load_contract("routing").example_case
        deadline = time.monotonic() + self.seconds
        with self.srv.client() as c:
            while not self.stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    r = c.post("/v1/routing/decide", json={"cases": [case, case]})
                except httpx.TransportError:
                    self.statuses.append(0)
                    continue
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.statuses.append(r.status_code)
                if r.status_code == 200:
                    self.acked.extend(d["decision_id"] for d in r.json()["decisions"])
                elif r.status_code == 503:
                    self.retry_after_missing += "retry-after" not in r.headers
                    time.sleep(0.1)


def ready(srv: Server) -> int:
    try:
        return httpx.get(f"{srv.url}/readyz", timeout=5).status_code
    except httpx.TransportError:
        return 0


def wait_ready(srv: Server, status: int, timeout: float) -> float:
    """Seconds until /readyz answers `status` (fails past `timeout`)."""
    started = time.monotonic()
    while ready(srv) != status:
        assert time.monotonic() - started < timeout, f"/readyz never answered {status}"
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_database("keel_fault") as url:
        yield url


def logged_ids(url: str) -> set[str]:
    db = Database(url)
    try:
        with db.reading() as reader:
            return {r[0] for chunk in reader.stream("SELECT decision_id FROM decisions") for r in chunk}
    finally:
        db.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_postgresql_cut_under_load_recovers_without_restart(
    store: Store, registered: dict[str, str], tmp_path: Path, pg_url: str
) -> None:
    keys = make_keys(pg_url, "fault")
    proxy = TcpProxy("127.0.0.1", 5432).start()
    via_proxy = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    srv = start_server(store, tmp_path, via_proxy, extra_env=FAST_FAIL)
    srv.keys = keys
    try:
        with Load(srv) as load:
            load.wait_for(60)
            during_from = len(load.statuses)
            proxy.cut()
            wait_ready(srv, 503, timeout=20)
            time.sleep(3)
            during = len(load.statuses)
            proxy.restore()
            recovery = wait_ready(srv, 200, timeout=60)
            load.wait_for(len(load.acked) + 60)
        assert 503 in load.statuses[during_from:during], "no 503 during the outage"
        assert load.retry_after_missing == 0
        assert load.slowest < HANG_LIMIT, f"a request took {load.slowest:.1f}s"
    finally:
        srv.stop()
        proxy.stop()
    print(f"/readyz back {recovery:.2f}s after PostgreSQL returned; {len(load.acked)} acknowledged")
    assert not set(load.acked) - logged_ids(pg_url), "acknowledged decisions were lost"
    assert verify(Database(pg_url)).ok
    assert run_keel({**srv.env, "KEEL_DECISION_LOG_URL": pg_url}, "verify-log").returncode == 0


def _chattr(flag: str, *paths: Path) -> bool:
    done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, check=False)
    return done.returncode == 0


@pytest.mark.slow
def test_sqlite_made_read_only_under_load_recovers_without_restart(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "decisions.db"
    url = f"sqlite:///{path}"
    keys = make_keys(url, "ro")
    srv = start_server(store, tmp_path, url, extra_env=FAST_FAIL)
    srv.keys = keys
    frozen = [path, path.with_name("decisions.db-wal")]
    try:
        with Load(srv) as load:
            load.wait_for(60)
            # Immutable even for root: as a remounted read-only volume would be.
            if not _chattr("+i", *frozen):
                pytest.skip("chattr +i is not available here")
            try:
                wait_ready(srv, 503, timeout=20)
                time.sleep(2)
            finally:
                _chattr("-i", *frozen)
            wait_ready(srv, 200, timeout=60)
            load.wait_for(len(load.acked) + 60)
        assert 503 in load.statuses
        assert load.retry_after_missing == 0
        assert load.slowest < HANG_LIMIT, f"a request took {load.slowest:.1f}s"
    finally:
        _chattr("-i", *frozen)
        srv.stop()
    assert not set(load.acked) - logged_ids(url), "acknowledged decisions were lost"
    assert run_keel({**srv.env, "KEEL_DECISION_LOG_URL": url}, "verify-log").returncode == 0


def test_feedback_revisions_and_idempotency_keys(server: Server) -> None:
    with server.client() as c:
        case = load_contract("routing").example_case
        decision = c.post("/v1/routing/decide", json={"cases": [case]}).json()["decisions"][0]
        did = decision["decision_id"]

        def say(outcome: str, key: str | None = None) -> httpx.Response:
            headers = {"Idempotency-Key": key} if key else {}
            body = {"decision_id": did, "final_outcome": outcome, "actor": "rev-1"}
            return c.post("/v1/feedback", json=body, headers=headers)

        # Without keys: A, B, then A again are three revisions; a repeat of the latest is a replay.
        assert [say(o).status_code for o in ("legal", "procurement", "legal", "legal")] == [
            201,
            201,
            201,
            200,
        ]
        # With keys: a new key is a new revision; the same key and body replays; a changed body is 409.
        assert say("procurement", "k1").status_code == 201
        assert say("legal", "k2").status_code == 201
        late = say("procurement", "k1")  # a late retry of k1 must not become the newest word
        assert late.status_code == 200
        assert say("sales_ops", "k2").status_code == 409
        feedback = c.get(f"/v1/decisions/{did}").json()["feedback"]
    assert [f["final_outcome"] for f in feedback] == ["legal", "procurement", "legal", "procurement", "legal"]


def test_a_key_over_its_rate_gets_429_with_retry_after(server: Server) -> None:
    url = server.env["KEEL_DECISION_LOG_URL"]
    token = KeyStore(Database(url)).add("rate-limited", ["read"], rate_per_second=1)
    with httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {token}"}) as c:
        deadline = time.monotonic() + 20
        while c.get("/v1/models").status_code == 401:  # the service picks new keys up within seconds
            assert time.monotonic() < deadline, "the new key was never loaded"
            time.sleep(0.3)
        answers = [c.get("/v1/models") for _ in range(5)]
    limited = [r for r in answers if r.status_code == 429]
    assert limited and all(int(r.headers["retry-after"]) >= 1 for r in limited)
