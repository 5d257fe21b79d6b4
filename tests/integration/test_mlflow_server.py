"""Keel against a real MLflow tracking server: train -> promote -> serve -> decide -> monitor.

`mlflow server` runs as its own process (SQLite backend store, artefacts proxied by the server
from a local folder, a loopback port); every Keel process reaches the registry and the artefacts
only over HTTP through MLFLOW_TRACKING_URI, as replicas sharing one tracking server do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keel.feature_defs.contract import load_contract
from tests.conftest import Store, cli_env, run_keel
from tests.integration.conftest import free_port, make_keys, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1; its URL. Its first start creates the schema (a minute
    or more on a busy machine); stopped, with a bounded wait, after the module."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp / "mlflow-server.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{tmp / 'mlflow.db'}",
                "--artifacts-destination",
                (tmp / "artifacts").as_uri(),
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not up in 300s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_train_promote_serve_decide_monitor_through_a_tracking_server(
    tracking_server: str, tmp_path: Path
) -> None:
    # A state directory of its own: nothing may come from the session's embedded store.
    store = Store(tmp_path / "home", {"KEEL_HOME": str(tmp_path / "home")})
    log_url = f"sqlite:///{tmp_path / 'decisions.db'}"
    env = cli_env(store, KEEL_DECISION_LOG_URL=log_url)
    env["MLFLOW_TRACKING_URI"] = tracking_server  # after cli_env, which drops it for the embedded store
    # Small data: at alpha 0.1 a 3,000-row routing model certifies a threshold (keel train exits 1
    # for one that certifies nothing); the service serves whichever models hold `champion`.
    env["KEEL_TRAIN_ALPHA"] = "0.1"

    trained = run_keel(env, "train", "routing", "--rows", "3000", timeout=900)
    assert trained.returncode == 0 and "version 1 as champion" in trained.stdout, (
        trained.stdout + trained.stderr
    )
    again = run_keel(env, "train", "routing", "--rows", "3000", "--seed", "11", timeout=600)
    assert again.returncode == 0 and "version 2 as challenger" in again.stdout, again.stdout + again.stderr
    # The gates compare two small models; --force keeps this test about the server, not the gates.
    promoted = run_keel(env, "promote", "routing", "2", "--force", "--reason", "tracking-server test")
    assert promoted.returncode == 0 and "champion v1 -> v2" in promoted.stdout, (
        promoted.stdout + promoted.stderr
    )

    # The registry lives on the server: its REST API (not a local file) lists what Keel registered.
    found = httpx.get(
        f"{tracking_server}/api/2.0/mlflow/registered-models/alias",
        params={"name": "routing", "alias": "champion"},
        timeout=30,
    ).json()
    assert found["model_version"]["version"] == "2"
    assert not (store.home / "mlflow.db").exists() and not (store.home / "mlartifacts").exists()

    keys = make_keys(log_url, "mlflow-server")
    srv = start_server(store, tmp_path, log_url, extra_env={"MLFLOW_TRACKING_URI": tracking_server})
    try:
        srv.keys = keys
        contract = load_contract("routing")
        cases = [dict(contract.example_case, case_id=f"EXC-{i}", days_open=i % 40) for i in range(60)]
        with srv.client() as client:
            answer = client.post("/v1/routing/decide", json={"cases": cases})
            assert answer.status_code == 200, answer.text
            decisions = answer.json()["decisions"]
            assert [d["case_id"] for d in decisions] == [c["case_id"] for c in cases]
            assert {d["versions"]["model_version"] for d in decisions} == {"2"}
            assert all(d["explanation_status"] == "exact" for d in decisions)
            feedback = client.post(
                "/v1/feedback",
                json={"decision_id": decisions[0]["decision_id"], "final_outcome": "legal", "actor": "rev-1"},
            )
            assert feedback.status_code == 201, feedback.text
    finally:
        srv.stop()

    monitored = run_keel(env, "monitor", "routing", "--window", "1h", "--json", "--out", str(tmp_path / "r"))
    # 0 ok, 1 warn, 2 alert are all answers; 3 would mean it could not read the server's versions.
    assert monitored.returncode in (0, 1, 2), monitored.stdout + monitored.stderr
    summary = json.loads(monitored.stdout.strip().splitlines()[-1])
    assert summary["decisions"] == len(cases) and summary["reviewed"] == 1
    # The reference sample came from version 2's artefacts, downloaded through the server.
    report = json.loads(Path(summary["summary_json"]).read_text())
    assert report["versions"]["reference_version"] == "2", report["versions"]
