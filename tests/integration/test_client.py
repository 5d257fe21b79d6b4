"""keel.client against a real `keel serve`: typed results, feedback revisions, errors carrying
Keel's body, retries only where safe (429 with Retry-After, never another 4xx), the async
client, and a server SIGKILLed and restarted mid-call 20 times: no duplicate decision, no lost
acknowledgement."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from keel.client import (
    AsyncKeelClient,
    Context,
    KeelAPIError,
    KeelClient,
    KeelConnectionError,
    RetryPolicy,
)
from keel.decision_log.database import Database
from keel.feature_defs.contract import load_contract
from keel.serving.keys import KeyStore
from tests.conftest import Store, run_keel
from tests.integration.conftest import Server, make_keys, start_server


class Counting(httpx.HTTPTransport):
    """The real transport, counting the requests it sends (and their Idempotency-Keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str | None] = []

        self.failures: list[str] = []
        """The transport errors of the tries that got no answer, by type."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.keys.append(request.headers.get("idempotency-key"))
        try:
            return super().handle_request(request)
        except httpx.TransportError as exc:
            self.failures.append(type(exc).__name__)
            raise


def _case(case_id: str) -> dict[str, object]:
    return {**load_contract("routing").example_case, "case_id": case_id}


def test_decide_feedback_and_lookups_are_typed(server: Server) -> None:
    instance = f"pi-{uuid.uuid4()}"
    context = Context(
        process_definition_id="invoice", process_definition_version=2, process_instance_id=instance
    )
    with KeelClient(server.url, server.keys["all"]) as keel:
        d = keel.decide("routing", _case("one"), context)
        assert d.case_id == "one" and d.versions.model == "routing" and d.audit is not None
        assert d.probabilities and abs(sum(d.probabilities.values()) - 1) < 1e-6
        assert d.context == context and d.outcome in d.probabilities
        batch = keel.decide_batch(
            "routing", [_case("two"), {**_case("three"), "context": {"element_id": "e3"}}], context
        )
        assert [b.case_id for b in batch] == ["two", "three"] and batch[1].context is not None
        assert batch[1].context.element_id == "e3" and batch[1].context.process_instance_id == instance

        first = keel.feedback(d.decision_id, "legal", "rev-1", "looked again")
        second = keel.feedback(d.decision_id, "finance_ap", "rev-1")
        assert first.created and second.created and first.feedback_id != second.feedback_id
        key = str(uuid.uuid4())
        third = keel.feedback(d.decision_id, "legal", "rev-1", idempotency_key=key)
        replayed = keel.feedback(d.decision_id, "legal", "rev-1", idempotency_key=key)
        assert third.created and not replayed.created and replayed.feedback_id == third.feedback_id

        logged = keel.decision(d.decision_id)
        assert [f.final_outcome for f in logged.feedback] == ["legal", "finance_ap", "legal"]
        found = list(keel.process_decisions(instance, page_size=1))
        assert [f.decision_id for f in found] == [d.decision_id, *(b.decision_id for b in batch)]


def test_errors_carry_keels_body_and_no_4xx_is_retried(server: Server) -> None:
    transport = Counting()
    with KeelClient(server.url, server.keys["all"], transport=transport) as keel:
        with pytest.raises(KeelAPIError) as bad:
            keel.decide("routing", {**_case("bad"), "amount_at_stake": -5})
        assert bad.value.status == 422 and bad.value.code == "InvalidInput"
        assert [e.field for e in bad.value.errors] == ["amount_at_stake"] and bad.value.errors[0].row == 0
        with pytest.raises(KeelAPIError) as missing:
            keel.feedback(str(uuid.uuid4()), "legal", "rev")
        assert missing.value.status == 404 and missing.value.code == "NotFound"
        with pytest.raises(KeelAPIError) as unknown:
            keel.decide("no_such_model", _case("x"))
        assert unknown.value.status == 404
        assert len(transport.keys) == 3  # one try each
    with KeelClient(server.url, "not-a-key") as keel, pytest.raises(KeelAPIError) as denied:
        keel.decide("routing", _case("x"))
    assert denied.value.status == 401
    with pytest.raises(ValueError):
        Context.model_validate({"process_instance": "typo"})  # refused before any request


def test_429_is_retried_after_retry_after_with_the_same_idempotency_key(server: Server) -> None:
    name = f"slow-{uuid.uuid4().hex[:8]}"
    key = KeyStore(Database(server.env["KEEL_DECISION_LOG_URL"])).add(name, ["decide"], rate_per_second=0.5)
    transport = Counting()
    retry = RetryPolicy(attempts=5, deadline=30)
    with KeelClient(server.url, key, transport=transport, retry=retry) as keel:
        started = time.monotonic()
        first = keel.decide("routing", _case("a"))
        second = keel.decide("routing", _case("b"))  # over the rate: 429 Retry-After, then decided
        elapsed = time.monotonic() - started
    assert first.case_id == "a" and second.case_id == "b"
    assert len(transport.keys) >= 3, transport.keys
    assert len(set(transport.keys[1:])) == 1  # every try of the second call sent one key
    assert elapsed >= 1.0  # Retry-After (rounded up to whole seconds) was waited for


def test_the_async_client_decides_and_gives_up_within_its_deadline(server: Server) -> None:
    async def run() -> None:
        async with AsyncKeelClient(server.url, server.keys["all"]) as keel:
            decided = await asyncio.gather(*(keel.decide("routing", _case(f"a{i}")) for i in range(5)))
            assert [d.case_id for d in decided] == [f"a{i}" for i in range(5)]
            fb = await keel.feedback(decided[0].decision_id, "legal", "rev")
            assert fb.created and fb.kind in ("override", "confirmation")
        retry = RetryPolicy(attempts=50, deadline=2.0, backoff=0.1)
        async with AsyncKeelClient("http://127.0.0.1:9", "k", retry=retry) as nobody:
            started = time.monotonic()
            with pytest.raises(KeelConnectionError) as gone:
                await nobody.decide("routing", _case("x"))
            assert time.monotonic() - started < 10 and gone.value.idempotency_key

    asyncio.run(run())


RESTARTS = 20


def test_sigkill_and_restart_mid_call_20_times_loses_and_duplicates_nothing(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    log_url = f"sqlite:///{tmp_path / 'decisions.db'}"
    keys = make_keys(log_url, "restart")
    srv = start_server(store, tmp_path, log_url)
    port = int(srv.url.rsplit(":", 1)[1])
    acked: dict[str, tuple[str, str]] = {}  # case_id -> (decision_id, idempotency key)
    gave_up: dict[str, str] = {}  # case_id -> idempotency key of a call that never got an answer
    stop = threading.Event()
    errors: list[str] = []

    transport = Counting()

    def client_loop() -> None:
        # Bounded by the deadline; backoff capped low, so the first try after a restart comes
        # within 0.2 s of the server being up instead of a second later, 20 times over.
        retry = RetryPolicy(attempts=1000, deadline=150, backoff=0.05, max_backoff=0.2)
        with KeelClient(srv.url, keys["all"], retry=retry, timeout=10, transport=transport) as keel:
            for n in range(100_000):  # bounded in count and in time (the test's deadline)
                if stop.is_set():
                    return
                case_id, key = f"case-{n}", str(uuid.uuid4())
                try:
                    d = keel.decide("routing", _case(case_id), idempotency_key=key)
                except KeelConnectionError:
                    gave_up[case_id] = key
                except KeelAPIError as exc:
                    errors.append(f"{case_id}: {exc}")
                    gave_up[case_id] = key
                else:
                    acked[case_id] = (d.decision_id, key)

    worker = threading.Thread(target=client_loop)
    deadline = time.monotonic() + 1500
    try:
        worker.start()
        for _ in range(RESTARTS):
            before = len(acked)
            wait = time.monotonic() + 30
            while len(acked) < before + 5 and time.monotonic() < wait and worker.is_alive():
                time.sleep(0.02)
            srv.stop(sig_kill=True)  # mid-call: the client sends back to back
            assert time.monotonic() < deadline, "restarts took too long"
            srv = start_server(store, tmp_path, log_url, port=port)
        after = len(acked)
        wait = time.monotonic() + 30
        while len(acked) < after + 5 and time.monotonic() < wait:
            time.sleep(0.02)
    finally:
        stop.set()
        worker.join(timeout=200)
        srv.stop()
    assert not worker.is_alive()
    assert not errors, errors[:3]
    # Killed mid-call: some tries lost their connection after sending (not only refused ones).
    mid_call = [f for f in transport.failures if f != "ConnectError"]
    print(
        f"acked {len(acked)}, gave up {len(gave_up)}, tries {len(transport.keys)}, "
        f"dropped mid-call {len(mid_call)}"
    )
    assert mid_call, transport.failures[:5]
    assert len(acked) >= RESTARTS * 5
    conn = sqlite3.connect(tmp_path / "decisions.db")
    rows = conn.execute("SELECT case_id, decision_id, idempotency_key FROM decisions").fetchall()
    conn.close()
    per_case: dict[str, list[tuple[str, str]]] = {}
    for case_id, decision_id, key in rows:
        per_case.setdefault(case_id, []).append((decision_id, key))
    duplicates = {c: v for c, v in per_case.items() if len(v) > 1}
    lost = {c for c, (d, k) in acked.items() if per_case.get(c) != [(d, k)]}
    strays = {c for c in per_case if c not in acked and (c not in gave_up or per_case[c][0][1] != gave_up[c])}
    assert not duplicates, f"{len(duplicates)} cases decided twice"
    assert not lost, f"{len(lost)} acknowledged decisions missing or different in the log"
    assert not strays, f"{len(strays)} logged decisions nobody asked for under that key"
    done = run_keel({**srv.env, "KEEL_DECISION_LOG_URL": log_url}, "verify-log")
    assert done.returncode == 0, done.stdout + done.stderr
