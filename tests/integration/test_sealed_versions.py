"""Sealed specs, models defined by a contract file, the shared cache and the loader, on a real
MLflow store."""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from keel.errors import InvalidInput
from keel.feature_defs.contract import load_contract, load_contract_text
from keel.feature_defs.policy import load_policy, packaged_policy_text
from keel.models import registry
from keel.models.bundle import BOOSTER, POLICY, REFERENCE_OUTPUTS, SPEC, reseal_bundle
from keel.serving.model_set import ModelSet
from keel.settings import StateSettings
from keel.training.generators import generate
from keel.training.registration import PYFUNC_CODE, ensure_experiment, train_and_register
from keel.training.settings import TrainingSettings
from tests.conftest import Store, cli_env, run_keel

SMALL = TrainingSettings(rows=4000, num_boost_round=60, seed=4)
NEW_MODEL = "ticket_routing"
RENAMED = re.compile(r"\bamount\b")


def test_a_version_seals_its_policy_spec_and_reference_outputs(
    store: Store, registered: dict[str, str]
) -> None:
    ref = registry.get_version("routing", registered["routing"])
    assert {POLICY, SPEC, REFERENCE_OUTPUTS} <= set(ref.artefact_hashes)
    packaged = load_policy("routing")
    assert ref.tags["keel.policy_version"] == packaged.version
    model = registry.load(ref, store.home / "cache").model
    spec = model.spec
    assert spec.sealed and spec.policy.version == packaged.version
    assert spec.contract.version == ref.tags["keel.contract_version"]
    assert json.loads((model.bundle.path / SPEC).read_text())["policy_version"] == packaged.version
    outputs = pd.read_parquet(model.bundle.path / REFERENCE_OUTPUTS)
    proba = outputs[[f"proba.{c}" for c in spec.classes]].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    # The stored routes are the sealed policy's, re-derivable from the stored inputs and outputs.
    for case in outputs.head(50).to_dict(orient="records"):
        outcome = None if case["abstained"] else case["outcome"]
        result = spec.policy.apply(case, outcome, case["confidence"], bool(case["abstained"]))
        assert result.route == case["route"]


def _renamed_frame() -> pd.DataFrame:
    return generate("invoice_classification", SMALL.rows, 4).rename(columns={"amount": "invoice_amount"})


def test_a_policy_naming_a_field_the_contract_renamed_is_refused_before_training(
    store: Store, registered: dict[str, str]
) -> None:
    """The issue's case: a contract renames `amount` to `invoice_amount`, the packaged policy still
    says `amount`. It is refused with the rule and field named, and nothing is registered; the
    same policy rewritten for the new name fires (tests/unit/test_spec.py)."""
    contract = load_contract_text(
        RENAMED.sub("invoice_amount", load_contract("invoice_classification").source)
    )
    before = len(MlflowClient().search_model_versions("name='invoice_classification'"))
    with pytest.raises(InvalidInput, match=r"rule 'large_invoice_review': field 'amount' is not in"):
        train_and_register(
            "invoice_classification", _renamed_frame(), StateSettings(), SMALL, contract=contract
        )
    assert len(MlflowClient().search_model_versions("name='invoice_classification'")) == before


@pytest.fixture(scope="module")
def new_model(
    store: Store, registered: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A model that exists only as a contract file and a data file, registered through the CLI."""
    tmp = tmp_path_factory.mktemp("new-model")
    source = load_contract("routing").source.replace("name: routing", f"name: {NEW_MODEL}", 1)
    (tmp / "contract.yaml").write_text(source)
    generate("routing", SMALL.rows, 6).to_csv(tmp / "data.csv", index=False)
    env = cli_env(store)
    refused = run_keel(env, "train", NEW_MODEL, "--contract", str(tmp / "contract.yaml"))
    assert refused.returncode != 0 and "--contract needs --data" in refused.stderr
    (tmp / "policy.yaml").write_text(packaged_policy_text("routing") or "")  # declares model: routing
    args = ("--contract", str(tmp / "contract.yaml"), "--data", str(tmp / "data.csv"))
    refused = run_keel(env, "train", NEW_MODEL, *args, "--policy", str(tmp / "policy.yaml"))
    assert refused.returncode == 2 and "keel: the policy does not fit the ticket_routing" in refused.stderr
    done = run_keel(
        env, "train", NEW_MODEL, "--contract", str(tmp / "contract.yaml"), "--data", str(tmp / "data.csv")
    )
    assert done.returncode == 0, done.stderr
    yield registry.resolve(NEW_MODEL, registry.CHAMPION).version
    # The session's other tests (and their server) serve exactly the three shipped models.
    MlflowClient().delete_registered_model(NEW_MODEL)


def test_a_model_defined_by_a_contract_file_is_discovered_and_served(store: Store, new_model: str) -> None:
    assert NEW_MODEL in registry.keel_model_names(registry.CHAMPION)
    models = ModelSet(registry.CHAMPION, store.home / "cache")
    report = models.reload()
    assert report.loaded[NEW_MODEL] == new_model and not report.failed
    assert {"routing", "discount_band", "invoice_classification", NEW_MODEL} <= set(models.names)
    assert models.ready
    served = models.get(NEW_MODEL)
    assert served.spec.contract.name == NEW_MODEL and served.policy.rules == ()  # no packaged policy
    batch = served.loaded.model.predict_records([served.spec.contract.example_case])
    assert len(batch) == 1 and served.versions["policy_version"] == served.spec.policy.version


def _register_bundle(name: str, bundle: Path, pip_requirements: list[str]) -> str:
    """Register a bundle folder the way versions were registered before specs were sealed:
    no code_paths, no hashes in the logged model, hashes only on the registry version."""
    hashes = reseal_bundle(bundle)
    code = resources.files("keel.serving").joinpath(PYFUNC_CODE)
    with mlflow.start_run(experiment_id=ensure_experiment(StateSettings())):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            artifacts={"bundle": str(bundle)},
            pip_requirements=pip_requirements,
        )
    tags = {f"{registry.HASH_TAG}{k}": v for k, v in hashes.items()}
    return str(mlflow.register_model(info.model_uri, name, tags=tags).version)


def _broken_version(store: Store, good_version: str, tmp: Path) -> str:
    """Register a version whose files verify but whose booster LightGBM cannot parse."""
    good = registry.load(registry.get_version(NEW_MODEL, good_version), store.home / "cache")
    bundle = tmp / "bundle"
    shutil.copytree(good.model.bundle.path, bundle)
    (bundle / BOOSTER).write_text("tree\nnot a LightGBM model\n")
    return _register_bundle(NEW_MODEL, bundle, [])


def test_a_version_registered_before_specs_were_sealed_still_loads_and_serves(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    name, alias = "discount_band", "legacy_probe"
    good = registry.load(registry.get_version(name, registered[name]), store.home / "cache")
    bundle = tmp_path / "bundle"
    shutil.copytree(good.model.bundle.path, bundle)
    for sealed_later in (POLICY, SPEC, REFERENCE_OUTPUTS):
        (bundle / sealed_later).unlink()
    legacy = _register_bundle(name, bundle, ["keel==0.1.0"])
    client = MlflowClient()
    client.set_registered_model_alias(name, alias, legacy)
    try:
        models = ModelSet(alias, store.home / "cache", names=(name,))
        assert models.reload().loaded == {name: legacy}
        served = models.get(name)
        assert not served.spec.sealed and served.policy.version == load_policy(name).version
        case = served.spec.contract.example_case
        batch = served.loaded.model.predict_records([case])
        assert batch.probability_map(0) == good.model.predict_records([case]).probability_map(0)
        frame = pd.DataFrame([{k: v for k, v in case.items() if k != "case_id"}])
        out = mlflow.pyfunc.load_model(f"models:/{name}/{legacy}").predict(frame)
        assert out["most_likely"][0] == batch.most_likely(0)
    finally:
        client.delete_registered_model_alias(name, alias)


def test_a_version_that_fails_to_load_is_reported_and_the_old_one_serves_on(
    store: Store, new_model: str, tmp_path: Path
) -> None:
    models = ModelSet(registry.CHAMPION, store.home / "cache", names=(NEW_MODEL,))
    assert models.reload().loaded == {NEW_MODEL: new_model}
    broken = _broken_version(store, new_model, tmp_path)
    client = MlflowClient()
    client.set_registered_model_alias(NEW_MODEL, registry.CHAMPION, broken)
    try:
        report = models.reload()
        assert NEW_MODEL in report.failed and "LightGBM" in report.failed[NEW_MODEL]
        assert models.get(NEW_MODEL).loaded.ref.version == new_model
        assert models.reload().failed  # polling goes on and keeps refusing it
    finally:
        client.set_registered_model_alias(NEW_MODEL, registry.CHAMPION, new_model)
    assert models.reload().unchanged == {NEW_MODEL: new_model}


def test_concurrent_loads_share_one_intact_cache_folder(store: Store, new_model: str, tmp_path: Path) -> None:
    """Loaders racing on an empty cache (as serve, monitor and train --from-log may) each download
    into their own staging folder; one rename wins and the others use the folder in place."""
    cache = tmp_path / "cache"
    ref = registry.get_version(NEW_MODEL, new_model)
    paths: list[Path] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            paths.append(registry.load(ref, cache).model.bundle.path)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and set(paths) == {cache / NEW_MODEL / new_model}
    assert [p.name for p in (cache / NEW_MODEL).iterdir()] == [new_model]  # no staging left over
    folder = cache / NEW_MODEL / new_model
    inode = folder.stat().st_ino
    registry.load(ref, cache)
    assert folder.stat().st_ino == inode  # an intact folder in place is reused, never replaced
