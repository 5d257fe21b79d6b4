"""POST /v1/admin/reload swaps models under traffic: requests in flight across the swap finish 200.

The swap is the moment the service's model snapshot changes. Seen from the client it lies after
the start of every request answered by the version it replaced (each read the snapshot after it
started) and before the end of every request answered by the new version (`in_flight_at_the_swap`).
The test asserts that requests started before that window and ended after it, that every
request was answered 200 with no transport error, and that their decisions are in the log
under the version that answered them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx

from keel.feature_defs.contract import load_contract
from keel.models import registry
from keel.settings import StateSettings
from keel.training.generators import generate
from keel.training.registration import train_and_register
from keel.training.settings import TrainingSettings
from tests.conftest import Store
from tests.integration.conftest import Server, session_models_loaded

MODEL = "routing"
MAX_SWAPS = 4
"""Swaps tried (alternating versions) until one shows requests in flight across it."""
THREAD_SECONDS = 60.0
"""No client thread runs longer than this, whatever happens to the service."""
MAX_REQUESTS_PER_THREAD = 2_000


@dataclass(frozen=True)
class Answered:
    started: float
    ended: float
    status: int
    version: str | None
    decision_ids: tuple[str, ...]


def client_loop(
    srv: Server, cases: int, stop: threading.Event, out: list[Answered], errors: list[str]
) -> None:
    """Decide `cases` cases per request until told to stop (bounded in time and count)."""
    body = {"cases": [load_contract(MODEL).example_case] * cases}
    deadline = time.monotonic() + THREAD_SECONDS
    with srv.client("decide") as c:
        for _ in range(MAX_REQUESTS_PER_THREAD):
            if stop.is_set() or time.monotonic() > deadline:
                return
            started = time.monotonic()
            try:
                r = c.post(f"/v1/{MODEL}/decide", json=body)
            except httpx.TransportError as exc:
                errors.append(type(exc).__name__)
                continue
            ended = time.monotonic()
            if r.status_code != 200:
                errors.append(f"{r.status_code}: {r.text[:200]}")
                out.append(Answered(started, ended, r.status_code, None, ()))
                continue
            decisions = r.json()["decisions"]
            versions = {d["versions"]["model_version"] for d in decisions}
            assert len(versions) == 1, versions  # one request, one snapshot
            out.append(
                Answered(started, ended, 200, versions.pop(), tuple(d["decision_id"] for d in decisions))
            )


def in_flight_at_the_swap(answered: list[Answered], before: str, after: str) -> list[Answered]:
    """Requests certainly in flight when the service swapped `before` for `after`.

    Every request answered by `before` read the snapshot after it started and before the swap;
    every request answered by `after` read it after the swap and before it ended. So the swap
    lies between the last start of a `before` request and the first end of an `after` request,
    and a request that started no later than the first and ended no earlier than the second
    was in flight across it, whichever version answered it.
    """
    last_old_start = max(a.started for a in answered if a.version == before)
    first_new_end = min(a.ended for a in answered if a.version == after)
    return [a for a in answered if a.started <= last_old_start and a.ended >= first_new_end]


def test_reload_swaps_models_while_requests_are_in_flight(
    store: Store, registered: dict[str, str], server: Server
) -> None:
    settings = TrainingSettings(rows=4000, num_boost_round=60, seed=31)
    old = registered[MODEL]
    new = train_and_register(MODEL, generate(MODEL, 4000, 31), StateSettings(), settings).version
    assert new != old
    evidence: list[Answered] = []
    everything: list[Answered] = []
    errors: list[str] = []
    try:
        with server.client("admin") as admin:
            for swap in range(MAX_SWAPS):
                before, after = (old, new) if swap % 2 == 0 else (new, old)
                answered: list[Answered] = []
                stop = threading.Event()
                # Large requests (hundreds of milliseconds) and small ones side by side: a large one
                # that read the old snapshot is still deciding when small ones on the new one end.
                threads = [
                    threading.Thread(target=client_loop, args=(server, cases, stop, answered, errors))
                    for cases in (400, 400, 400, 1, 1, 1)
                ]
                for t in threads:
                    t.start()
                try:
                    time.sleep(1.0)
                    registry.promote(MODEL, after)
                    report = admin.post("/v1/admin/reload")
                    assert report.status_code == 200, report.text
                    assert session_models_loaded(report.json()) == {MODEL: after}, report.json()
                    time.sleep(1.0)
                finally:
                    stop.set()
                    for t in threads:
                        t.join(timeout=THREAD_SECONDS + 30)
                assert not any(t.is_alive() for t in threads)
                everything += answered
                assert {a.version for a in answered} == {before, after}
                evidence = in_flight_at_the_swap(answered, before, after)
                if evidence:
                    break
    finally:
        registry.promote(MODEL, old)
        with server.client("admin") as admin:
            admin.post("/v1/admin/reload")  # back to the session's champion
    assert not errors, errors[:5]
    assert all(a.status == 200 for a in everything)
    assert evidence, f"no request was in flight across any of {MAX_SWAPS} swaps"
    # Every decision of a request that crossed the swap is in the log, under the version it got.
    with server.client("read") as c:
        for a in evidence[:5]:
            for decision_id in a.decision_ids[:3]:
                logged = c.get(f"/v1/decisions/{decision_id}")
                assert logged.status_code == 200, logged.text
                assert logged.json()["versions"]["model_version"] == a.version
