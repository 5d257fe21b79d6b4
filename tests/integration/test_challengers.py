"""Shadow and canary challengers on a real `keel serve` over a real MLflow store and decision log:
shadow decisions reach the log and never a response; a canary takes its share of cases by case
hash; `keel compare` reads both back; every move is in the history."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx

from keel.decision_log import outbox
from keel.decision_log.database import Database
from keel.events.catalog import ALIAS_MOVED, CANARY_ROLLED_BACK
from keel.models import registry
from tests.conftest import run_keel
from tests.integration.conftest import Server
from tests.integration.test_service import cases_of

MODEL = "invoice_classification"


def _wait_for_alias(server: Server, alias: str, version: str, timeout: float = 60) -> None:
    """Until /metrics says the service has loaded `version` under `alias` (polling picked it up)."""
    line = f'keel_model_version{{alias="{alias}",model="{MODEL}"}} {float(version)}'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if line in httpx.get(f"{server.url}/metrics", timeout=10).text:
            return
        time.sleep(0.3)
    raise AssertionError(f"service did not pick up {alias} v{version}")


def _decide(
    server: Server,
    cases: list[dict[str, Any]],
    batch: int,
    context: dict[str, Any] | None = None,
    traceparent: str | None = None,
) -> list[dict[str, Any]]:
    out = []
    headers = {"traceparent": traceparent} if traceparent else {}
    with server.client("decide") as http:
        for i in range(0, len(cases), batch):
            body: dict[str, Any] = {"cases": cases[i : i + batch]}
            if context is not None:
                body["context"] = context
            r = http.post(f"/v1/{MODEL}/decide", json=body, headers=headers)
            assert r.status_code == 200, r.text
            out += r.json()["decisions"]
    return out


def _shadow_rows(log: Path, live_ids: set[str], timeout: float = 60) -> list[tuple[str, str, str]]:
    """The shadow decisions of `live_ids` in the log, waiting (bounded) for the shadow thread."""
    deadline = time.monotonic() + timeout
    rows: list[tuple[str, str, str]] = []
    while time.monotonic() < deadline:
        with sqlite3.connect(log) as conn:
            found = conn.execute(
                "SELECT decision_id, model_version, record FROM decisions WHERE origin = 'shadow'"
            ).fetchall()
        rows = [r for r in found if json.loads(r[2])["shadow_of"] in live_ids]
        if len(rows) == len(live_ids):
            return rows
        time.sleep(0.3)
    return rows


def test_shadow_is_logged_never_returned_and_canary_takes_its_share(
    polling_server: tuple[Server, dict[str, str]], registered: dict[str, str], tmp_path: Path
) -> None:
    server, env = polling_server
    champion = registered[MODEL]
    trained = run_keel({**env, "KEEL_TRAIN_ALPHA": "0.05", "KEEL_TRAIN_SEED": "11"}, "train", MODEL)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    second = registry.resolve(MODEL, registry.CHALLENGER).version
    log = Path(env["KEEL_DECISION_LOG_URL"].removeprefix("sqlite:///"))

    moved = run_keel(env, "shadow", MODEL, second, "--actor", "dana", "--reason", "try it")
    assert moved.returncode == 0 and "within 0.5 s" in moved.stdout, moved.stdout + moved.stderr
    _wait_for_alias(server, "shadow", second)
    cases = cases_of(MODEL, 60, seed=71)
    # One-case requests (decided on the event loop) and batches (in a worker thread) alike, each
    # with a correlation context: the call's with a traceparent, or each case's own.
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    asked = {"process_definition_id": "ap", "process_instance_id": "pi-0815"}
    own = [{**c, "context": {"business_key": f"INV-{i}"}} for i, c in enumerate(cases[20:])]
    decided = _decide(server, cases[:20], 1, asked, trace) + _decide(server, own, 20, {"element_id": "e"})
    versions = {(d["versions"]["model_version"], d["versions"]["alias"]) for d in decided}
    assert versions == {(champion, "champion")}, versions
    assert all("shadow" not in json.dumps(d) for d in decided)
    live = {d["decision_id"]: d for d in decided}
    shadows = _shadow_rows(log, set(live))
    assert len(shadows) == len(live) and {v for _, v, _ in shadows} == {second}
    for _, _, text in shadows:  # each shadow decision carries its champion decision's correlation
        record, champion_decision = json.loads(text), live[json.loads(text)["shadow_of"]]
        assert record["context"] == champion_decision["context"]
        assert record.get("traceparent") == champion_decision.get("traceparent")
    assert sum(json.loads(t).get("traceparent") == trace for _, _, t in shadows) == 20
    assert {json.loads(t)["context"].get("business_key") for _, _, t in shadows} >= {"INV-0", "INV-39"}
    with server.client("read") as http:
        looked = http.get(f"/v1/decisions/{shadows[0][0]}").json()
        # The process search lists what the process was answered with, not the shadow's.
        instance = http.get("/v1/decisions", params={"process_instance": "pi-0815", "limit": 200}).json()
    assert looked["origin"] == "shadow" and looked["versions"]["alias"] == "shadow"
    assert looked["context"] == live[looked["shadow_of"]]["context"]
    assert sorted(d["decision_id"] for d in instance["decisions"]) == sorted(
        d["decision_id"] for d in decided[:20]
    )
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert f'keel_shadow_decisions_total{{model="{MODEL}"}} 60.0' in metrics
    assert run_keel(env, "shadow", MODEL, "off").returncode == 0

    refused = run_keel(env, "canary", MODEL, second)  # no --share
    assert refused.returncode == 2 and "--share" in refused.stderr
    canary = run_keel(env, "canary", MODEL, second, "--share", "0.2", "--actor", "dana")
    assert canary.returncode == 0, canary.stdout + canary.stderr
    _wait_for_alias(server, "canary", second)
    cases = cases_of(MODEL, 2000, seed=72)
    decided = _decide(server, cases, 100)
    on_canary = [d["versions"]["alias"] == "canary" for d in decided]
    assert abs(sum(on_canary) / len(decided) - 0.2) <= 0.03, sum(on_canary)
    assert all(
        (d["versions"]["model_version"], d["versions"]["alias"])
        == ((second, "canary") if c else (champion, "champion"))
        for d, c in zip(decided, on_canary, strict=True)
    )
    again = _decide(server, cases[:100], 100)  # the same cases meet the same versions
    assert [d["versions"]["alias"] for d in again] == [d["versions"]["alias"] for d in decided[:100]]

    compared = run_keel(env, "compare", MODEL, "--window", "1h", "--json")
    assert compared.returncode == 0, compared.stderr
    body = json.loads(compared.stdout)
    assert body["shadow"][second]["pairs"] == 60 and body["shadow"][second]["overall"]["agreement"]["n"] == 60
    assert body["canary"]["canary_versions"] == [second] and body["canary"]["share_of_live"]["count"] == sum(
        on_canary
    ) + sum(d["versions"]["alias"] == "canary" for d in again)
    assert body["canary"]["segments"], "per-segment comparison"
    shown = run_keel(env, "compare", MODEL, "--window", "1h")
    assert "agreement" in shown.stdout and "canary vs champion" in shown.stdout

    assert run_keel(env, "canary", MODEL, "off", "--actor", "dana").returncode == 0
    assert not registry.has_alias(MODEL, registry.CANARY)
    history = json.loads(run_keel(env, "history", MODEL, "--json").stdout)
    moves = [(m["alias"], m["action"], m["to_version"]) for m in history["moves"]]
    assert moves[-4:] == [
        ("shadow", "shadow", second), ("shadow", "shadow", None),
        ("canary", "canary", second), ("canary", "canary", None),
    ]  # fmt: skip
    assert history["chain_intact"] and "share 0.2" in history["moves"][-2]["reason"]

    # A canary under automatic rollback: stopped once its reviewed decisions are overridden more
    # than the champion's beyond the tolerance, and not before there is evidence.
    guarded = run_keel(env, "canary", MODEL, second, "--share", "0.3", "--auto-rollback", "--actor", "dana")
    assert guarded.returncode == 0 and "automatic rollback on" in guarded.stdout, (
        guarded.stdout + guarded.stderr
    )
    _wait_for_alias(server, "canary", second)
    decided = [d for d in _decide(server, cases_of(MODEL, 600, seed=73), 100) if not d["abstained"]]
    quiet = run_keel(env, "compare", MODEL, "--window", "1h", "--json")  # no reviews yet: nothing to judge
    assert quiet.returncode == 0 and not json.loads(quiet.stdout)["canary_guard"]["rolled_back"]
    assert registry.has_alias(MODEL, registry.CANARY)
    classes = [c for c in registry.load(registry.get_version(MODEL, second), Path(env["KEEL_HOME"]) / "cache")
               .model.contract.classes]  # fmt: skip
    by_alias = {a: [d for d in decided if d["versions"]["alias"] == a][:80] for a in ("canary", "champion")}
    assert all(len(v) == 80 for v in by_alias.values()), {a: len(v) for a, v in by_alias.items()}
    with server.client("feedback") as http:
        for alias, ds in by_alias.items():
            for d in ds:  # the reviewer overrides every canary decision and confirms the champion's
                final = next(c for c in classes if c != d["outcome"]) if alias == "canary" else d["outcome"]
                body = {"decision_id": d["decision_id"], "final_outcome": final, "actor": "rev-1"}
                assert http.post("/v1/feedback", json=body).status_code == 201
    stopped = run_keel(env, "compare", MODEL, "--window", "1h", "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["canary_guard"]["rolled_back"]
    assert "canary stopped automatically" in stopped.stderr, stopped.stderr
    assert not registry.has_alias(MODEL, registry.CANARY)
    last = json.loads(run_keel(env, "history", MODEL, "--json").stdout)["moves"][-1]
    assert (last["alias"], last["to_version"], last["actor"]) == ("canary", None, "keel-monitor")
    assert last["reason"].startswith("automatic rollback: override rate canary 100.0% of 80")
    # Announced as two events staged with the move, in its transaction (docs/events.md).
    rolled, moved = outbox.listing(Database(env["KEEL_DECISION_LOG_URL"]), limit=2)
    assert (rolled["type"], moved["type"]) == (CANARY_ROLLED_BACK, ALIAS_MOVED)
    assert rolled["data"]["version"] == second and rolled["data"]["judgement"] in last["reason"]
    assert (moved["data"]["history_seq"], moved["data"]["actor"]) == (last["seq"], "keel-monitor")
