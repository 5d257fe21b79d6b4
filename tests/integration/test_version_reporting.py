"""Over HTTP: every decision reports the model and policy versions that produced it, across a
policy edit (registered as a new version) and a hot reload under load."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from keel.feature_defs.contract import load_contract
from keel.feature_defs.policy import load_policy, load_policy_text, packaged_policy_text
from keel.models import registry
from keel.settings import StateSettings
from keel.training.generators import generate
from keel.training.registration import train_and_register
from keel.training.settings import TrainingSettings
from tests.conftest import Store
from tests.integration.conftest import make_keys, session_models_loaded, start_server

ALIAS = "versions_probe"
PROBE = "probe_every_case"


def edited_policy() -> str:
    """The packaged routing policy plus a rule that fires on every case."""
    raw = yaml.safe_load(packaged_policy_text("routing") or "")
    raw["rules"].append(
        {
            "id": PROBE,
            "description": "Added after registration: notifies the auditor of every case.",
            "when": {"field": "confidence", "op": "ge", "value": 0.0},
            "notify": ["auditor"],
            "reason_code": "POLICY_PROBE",
        }
    )
    return yaml.safe_dump(raw)


@pytest.mark.slow
def test_reported_versions_are_those_that_decided_across_a_policy_edit_and_a_hot_reload(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    client = MlflowClient()
    first = registered["routing"]
    client.set_registered_model_alias("routing", ALIAS, first)
    log_url = f"sqlite:///{tmp_path / 'decisions.db'}"
    keys = make_keys(log_url, "versions")
    server = start_server(store, tmp_path, log_url, extra_env={"KEEL_SERVE_ALIAS": ALIAS})
    server.keys = keys
    decisions: list[dict[str, Any]] = []
    try:
        with server.client() as c:
            cases = generate("routing", 40, seed=21)[["case_id", *load_contract("routing").field_names]]
            payload = {"cases": json.loads(cases.head(5).to_json(orient="records"))}  # NaN -> null
            r = c.post("/v1/routing/decide", json=payload)
            assert r.status_code == 200, r.text
            before = r.json()["decisions"]
            decisions += before

            # The policy is edited after registration: the served version keeps its own policy.
            reg = train_and_register(
                "routing",
                generate("routing", 4000, 8),
                StateSettings(),
                TrainingSettings(rows=4000, num_boost_round=60, seed=8),
                policy_text=edited_policy(),
            )
            r = c.post("/v1/routing/decide", json=payload)
            assert all(d["versions"]["model_version"] == first for d in r.json()["decisions"])
            decisions += r.json()["decisions"]

            # Hot reload while requests are in flight (bounded in count and time).
            stop, errors = threading.Event(), []

            def load() -> None:
                with server.client() as lc:
                    deadline = time.monotonic() + 60
                    for _ in range(300):
                        if stop.is_set() or time.monotonic() > deadline:
                            break
                        resp = lc.post("/v1/routing/decide", json=payload)
                        if resp.status_code != 200:
                            errors.append(resp.text)
                            break
                        decisions.extend(resp.json()["decisions"])

            worker = threading.Thread(target=load)
            worker.start()
            time.sleep(0.5)
            client.set_registered_model_alias("routing", ALIAS, reg.version)
            reloaded = c.post("/v1/admin/reload")
            assert reloaded.status_code == 200
            assert session_models_loaded(reloaded.json()) == {"routing": reg.version}
            time.sleep(0.5)
            stop.set()
            worker.join(timeout=90)
            assert not errors, errors[:1]
            r = c.post("/v1/routing/decide", json=payload)
            decisions += r.json()["decisions"]

            old_policy, new_policy = load_policy("routing").version, load_policy_text(edited_policy()).version
            seen = {(d["versions"]["model_version"], d["versions"]["policy_version"]) for d in decisions}
            assert seen == {(first, old_policy), (reg.version, new_policy)}, seen
            for d in decisions:
                probed = PROBE in d["rules_fired"]
                assert probed == (d["versions"]["model_version"] == reg.version), d
                assert (d["versions"]["policy_version"] != old_policy) == probed, d

            # The log keeps what decided; feedback checks classes against the deciding version.
            logged = c.get(f"/v1/decisions/{before[0]['decision_id']}").json()
            assert logged["versions"] == before[0]["versions"]
            fb = c.post(
                "/v1/feedback",
                json={"decision_id": before[0]["decision_id"], "final_outcome": "legal", "actor": "rev-1"},
            )
            assert fb.status_code == 201, fb.text
    finally:
        server.stop()
        client.delete_registered_model_alias("routing", ALIAS)
        with contextlib.suppress(MlflowException):  # the new version is challenger until promoted
            client.delete_registered_model_alias("routing", registry.CHALLENGER)
