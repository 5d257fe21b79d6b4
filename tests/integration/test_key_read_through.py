"""A key made while the service runs works at once (read-through), and unknown keys cannot
make the service hammer the database (at most one read per READ_THROUGH_SECONDS)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keel.decision_log.database import Database
from keel.errors import Unauthorized
from keel.feature_defs.contract import load_contract
from keel.serving.keys import READ_THROUGH_SECONDS, ApiKey, KeyStore
from tests.conftest import Store, run_keel
from tests.integration.conftest import Server, make_keys, start_server


@pytest.fixture(scope="module")
def slow_refresh_server(
    store: Store, registered: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A `keel serve` whose background key refresh waits 10 minutes: only the read-through can
    let it accept a key made after it started."""
    tmp = tmp_path_factory.mktemp("keys")
    log_url = f"sqlite:///{tmp / 'decisions.db'}"
    keys = make_keys(log_url, "rt")
    srv = start_server(store, tmp, log_url, extra_env={"KEEL_SERVE_KEY_CACHE_SECONDS": "600"})
    srv.keys = keys
    yield srv
    srv.stop()


def test_a_key_added_with_keel_keys_add_works_at_once(slow_refresh_server: Server) -> None:
    srv = slow_refresh_server
    made = run_keel(srv.env, "keys", "add", "newcomer", "--role", "decide")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1].removeprefix("export KEEL_KEY=")
    with httpx.Client(base_url=srv.url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as c:
        r = c.post("/v1/routing/decide", json={"cases": [load_contract("routing").example_case]})
    assert r.status_code == 200, r.text
    with srv.client("read") as c:
        logged = c.get(f"/v1/decisions/{r.json()['decisions'][0]['decision_id']}").json()
    assert logged["caller"] == "newcomer"
    revoked = run_keel(srv.env, "keys", "revoke", "newcomer")
    assert revoked.returncode == 0, revoked.stderr


class CountedKeyStore(KeyStore):
    """The real key store, counting its database reads of the keys."""

    reads = 0

    def refresh(self) -> bool:
        self.reads += 1
        return super().refresh()


def test_unknown_keys_share_one_read_per_interval_and_a_new_key_is_never_refused(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'keys.db'}")
    db.create_schema()
    admin = KeyStore(db)  # as `keel keys add` does, from another process
    serving = CountedKeyStore(db, cache_seconds=600).start()
    try:
        first = admin.add("first", ["decide"])
        with pytest.raises(Unauthorized):
            serving.authenticate(f"Bearer {first}")  # the in-memory set does not hold it yet
        before = serving.reads
        assert asyncio.run(serving.authenticate_async(f"Bearer {first}")).name == "first"
        assert serving.reads == before + 1

        # A key added right after that read, arriving amid a flood of unknown keys inside the same
        # interval: the flood and the new key wait for one shared read, and the new key is let in.
        second = admin.add("second", ["decide"])

        async def flood() -> list[BaseException | object]:
            bad = [serving.authenticate_async(f"Bearer keel_unknown_{i}") for i in range(200)]
            good = serving.authenticate_async(f"Bearer {second}")
            return await asyncio.gather(*bad, good, return_exceptions=True)

        started, before = time.monotonic(), serving.reads
        *refused, admitted = asyncio.run(flood())
        assert all(isinstance(r, Unauthorized) for r in refused), refused[:3]
        assert isinstance(admitted, ApiKey) and admitted.name == "second", admitted
        assert serving.reads == before + 1, f"{serving.reads - before} reads for 201 misses"
        assert time.monotonic() - started < 10 * READ_THROUGH_SECONDS + 5  # waited an interval, not more

        before = serving.reads
        with pytest.raises(Unauthorized):  # a malformed header never reads the database
            asyncio.run(serving.authenticate_async("Basic abc"))
        assert serving.reads == before
    finally:
        serving.stop()
        db.dispose()
