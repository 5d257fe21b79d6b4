"""Promotion gates, forced promotion, two-person approval and rollback over a real MLflow store,
with a real `keel serve` polling the registry and taking traffic throughout."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from keel.models import registry
from keel.training.generators import generate
from tests.conftest import run_keel
from tests.integration.conftest import Server

MODEL = "discount_band"


class Traffic:
    """Decide requests in a loop (bounded in count and time), recording status and served version."""

    def __init__(self, server: Server, limit: int = 3000, seconds: float = 240) -> None:
        self.server, self.limit, self.seconds = server, limit, seconds
        self.statuses: list[int] = []
        self.version = ""
        self.last: dict[str, Any] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        frame = generate(MODEL, 1, seed=3).drop(columns=["event_time", MODEL])
        case = json.loads(frame.to_json(orient="records"))[0]  # NaN -> null, numpy -> JSON types
        body = {"cases": [case]}
        deadline = time.monotonic() + self.seconds
        with self.server.client("decide") as http:
            while not self.stop.is_set() and len(self.statuses) < self.limit and time.monotonic() < deadline:
                r = http.post(f"/v1/{MODEL}/decide", json=body)
                self.statuses.append(r.status_code)
                if r.status_code == 200:
                    self.last = r.json()["decisions"][0]
                    self.version = self.last["versions"]["model_version"]
                time.sleep(0.02)

    def wait_for(self, version: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.version != version and time.monotonic() < deadline:
            time.sleep(0.2)
        assert self.version == version, f"service still serves v{self.version}, expected v{version}"


def test_degenerate_candidate_is_refused_forced_recorded_and_rolled_back(
    polling_server: tuple[Server, dict[str, str]], registered: dict[str, str], tmp_path: Path
) -> None:
    server, env = polling_server
    champion = registered[MODEL]
    tiny = tmp_path / "tiny.csv"
    generate(MODEL, 20, seed=5).to_csv(tiny, index=False)

    refused = run_keel(env, "train", MODEL, "--data", str(tiny))
    assert refused.returncode == 2 and "too few training rows per class" in refused.stderr, refused.stderr
    # With the guard lowered the degenerate version registers, certifies nothing, is no champion.
    made = run_keel({**env, "KEEL_TRAIN_MIN_ROWS_PER_CLASS": "0"}, "train", MODEL, "--data", str(tiny))
    assert made.returncode == 1 and "certifies nothing" in made.stderr, made.stdout + made.stderr
    bad = registry.resolve(MODEL, registry.CHALLENGER).version
    assert registry.resolve(MODEL, registry.CHAMPION).version == champion

    traffic = Traffic(server)
    traffic.thread.start()
    try:
        traffic.wait_for(champion)
        assert traffic.last["threshold"]["applied"] == "overall"

        gated = run_keel(env, "promote", MODEL, bad, "--actor", "alice")
        assert gated.returncode == 1, gated.stdout + gated.stderr
        assert "FAIL  certifies coverage" in gated.stdout and "champion not moved" in gated.stderr
        assert registry.resolve(MODEL, registry.CHAMPION).version == champion

        forced = run_keel(env, "promote", MODEL, bad, "--force", "--reason", "drill", "--actor", "alice")
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert "FORCED" in forced.stdout and "within 0.5 s" in forced.stdout
        traffic.wait_for(bad)
        assert traffic.last["abstained"] and traffic.last["threshold"]["value"] == 2.0

        with server.client("read") as http:
            body = http.get(f"/v1/models/{MODEL}/history").json()
            assert http.get(f"/v1/models/{MODEL}/history", headers={"Authorization": ""}).status_code == 401
        last = body["moves"][-1]
        assert body["chain_intact"] and last["forced"] and last["actor"] == "alice"
        assert (last["from_version"], last["to_version"], last["reason"]) == (champion, bad, "drill")
        assert {"criterion": "certifies coverage", "passed": False} in [
            {k: g[k] for k in ("criterion", "passed")} for g in last["gates"]
        ]

        back = run_keel(env, "rollback", MODEL, "--reason", "drill over", "--actor", "bob")
        assert back.returncode == 0, back.stdout + back.stderr
        traffic.wait_for(champion)

        two = {**env, "KEEL_PROMOTE_TWO_PERSON": "true"}
        asked = run_keel(two, "promote", MODEL, bad, "--force", "--reason", "again", "--actor", "alice")
        assert asked.returncode == 0 and "two-person rule" in asked.stdout, asked.stdout + asked.stderr
        assert registry.resolve(MODEL, registry.CHAMPION).version == champion
        same = run_keel(two, "approve", MODEL, bad, "--actor", "alice")
        assert same.returncode == 2 and "different person" in same.stderr
        approved = run_keel(two, "approve", MODEL, bad, "--actor", "carol")
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert registry.resolve(MODEL, registry.CHAMPION).version == bad
        assert run_keel(env, "rollback", MODEL, "--actor", "carol").returncode == 0
        traffic.wait_for(champion)
    finally:
        traffic.stop.set()
        traffic.thread.join(timeout=30)
    assert traffic.statuses and set(traffic.statuses) == {200}, f"failed requests: {traffic.statuses}"

    shown = run_keel(env, "history", MODEL)
    assert shown.returncode == 0 and "hash chain intact" in shown.stdout
    moves = [line.split()[2:4] for line in shown.stdout.splitlines()[1:]]
    # training's own alias move first: the degenerate version registered as challenger
    assert moves == [["register", "challenger"]] + [
        [action, "champion"] for action in ("promote", "rollback", "request", "approve", "rollback")
    ]
    assert "FORCED" in shown.stdout and "reason: drill" in shown.stdout
    mirrored = registry.client().get_registered_model(MODEL).tags
    assert sum(k.startswith("keel.history.0") for k in mirrored) >= 6
    verified = run_keel(env, "verify-log")  # the moves are rows of the decision log's chains
    assert verified.returncode == 0 and "hash chains intact" in verified.stdout, verified.stderr
