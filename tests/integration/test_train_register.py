"""End to end on a real MLflow store: train -> register -> load by alias -> predict, via code and CLI."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from keel.errors import IntegrityError
from keel.feature_defs.contract import MODEL_NAMES, load_contract
from keel.models import registry
from keel.models.bundle import BOOSTER
from keel.training.generators import generate
from tests.conftest import Store, cli_env, run_keel


def keel(store: Store, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return run_keel(cli_env(store), *args, timeout=timeout)


def test_first_versions_are_champions_with_full_tags(store: Store, registered: dict[str, str]) -> None:
    for name in MODEL_NAMES:
        ref = registry.resolve(name, registry.CHAMPION)
        assert ref.version == registered[name]
        tags = ref.tags
        assert tags["keel.contract_version"] == load_contract(name).version
        for key in (
            "keel.data_fingerprint",
            "keel.code_version",
            "keel.alpha",
            "keel.delta",
            "keel.coverage",
        ):
            assert tags[key], key
        assert {
            "booster.txt",
            "calibration.json",
            "abstention.json",
            "contract.yaml",
            "manifest.json",
            "reference.parquet",
            "evaluation.json",
            "shap_importance.png",
        } <= set(ref.artefact_hashes)
        run = mlflow.get_run(ref.run_id)
        assert "test.accuracy" in run.data.metrics and any(
            k.startswith("segment.region.") for k in run.data.metrics
        )


def test_champion_loads_verified_and_decides(store: Store, registered: dict[str, str]) -> None:
    for name in MODEL_NAMES:
        loaded = registry.load_alias(name, registry.CHAMPION, store.home / "cache")
        contract = loaded.model.contract
        frame = generate(name, 200, seed=99)
        batch = loaded.model.predict_frame(frame, explain=True)
        assert batch.contributions is not None
        np.testing.assert_allclose(
            batch.contributions.sum(axis=1), batch.raw[np.arange(len(batch)), batch.predicted], atol=1e-9
        )
        truth = frame[contract.target].to_numpy()
        decided = ~batch.abstained
        assert decided.mean() > 0.2, f"{name} decides too little"
        accuracy = (np.array(contract.classes)[batch.predicted] == truth).mean()
        assert accuracy > 0.8, name
        reference = pd.read_parquet(loaded.model.bundle.path / "reference.parquet")
        assert set(contract.field_names) <= set(reference.columns) and len(reference) > 100


def test_pyfunc_loads_from_code_without_pickles(store: Store, registered: dict[str, str]) -> None:
    model = mlflow.pyfunc.load_model("models:/discount_band@champion")
    frame = generate("discount_band", 20, seed=5).drop(columns=["case_id", "event_time", "discount_band"])
    out = model.predict(frame)
    assert list(out.columns[:4]) == ["outcome", "most_likely", "abstained", "confidence"]
    assert len(out) == 20
    local = Path(mlflow.artifacts.download_artifacts("models:/discount_band@champion"))
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("*.pickle"))


def test_retrain_gives_challenger_promote_moves_champion_and_tampering_is_refused(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "routing.csv"
    generate("routing", 4000, seed=11).to_csv(data, index=False)
    done = keel(store, "train", "routing", "--data", str(data))
    # A 4,000-row model may certify nothing (exit 1, registered as challenger only).
    assert done.returncode == 0 or "certifies nothing" in done.stderr, done.stderr
    challenger = registry.resolve("routing", registry.CHALLENGER)
    assert challenger.tags["keel.data_source"] == f"file:{data}"
    assert registry.resolve("routing", registry.CHAMPION).version == registered["routing"]

    # Tamper with the stored booster of the challenger: loading must refuse it.
    stored = [
        p
        for p in (store.home / "mlartifacts").rglob(BOOSTER)
        if (p.parent / "manifest.json").read_text().find(challenger.tags["keel.data_fingerprint"]) >= 0
    ]
    assert len(stored) == 1
    original = stored[0].read_text()
    stored[0].write_text(original.replace("leaf_value=", "leaf_value=1", 1))
    try:
        with pytest.raises(IntegrityError, match=r"booster\.txt"):
            registry.load(challenger, store.home / "cache")
        _forced_promotion_is_refused(store, challenger.version, registered["routing"])
    finally:
        stored[0].write_text(original)
    registry.load(challenger, store.home / "cache")
    # The cache now holds a verified copy; the artefact store's copy, which other replicas
    # download, is checked all the same.
    stored[0].write_text(original.replace("leaf_value=", "leaf_value=1", 1))
    try:
        _forced_promotion_is_refused(store, challenger.version, registered["routing"])
    finally:
        stored[0].write_text(original)

    # Gates are tested in test_promotion.py; this small challenger may fail them, so force it.
    done = keel(store, "promote", "routing", challenger.version, "--force", "--reason", "test")
    assert done.returncode == 0, done.stderr
    assert registry.resolve("routing", registry.CHAMPION).version == challenger.version
    assert not registry.has_alias("routing", registry.CHALLENGER)
    registry.promote("routing", registered["routing"])  # leave the session's champion as it was


def _forced_promotion_is_refused(store: Store, version: str, champion: str) -> None:
    """--force skips gates, never integrity: nothing moves and nothing is recorded, nor is a
    two-person request (which an approval would turn into a move)."""
    moves = len(json.loads(keel(store, "history", "routing", "--json").stdout)["moves"])
    for extra in ({}, {"KEEL_PROMOTE_TWO_PERSON": "true"}):
        forced = run_keel(cli_env(store, **extra), "promote", "routing", version, "--force", "--reason", "x")
        assert forced.returncode == 1, forced.stdout + forced.stderr
        line = forced.stderr.strip().splitlines()[-1]  # one line, naming the file and the rule
        head = f"keel: routing: version {version}'s bundle does not verify (booster.txt"
        tail = "champion not moved (--force skips gates, never the bundle's integrity)"
        assert line.startswith(head) and "was altered" in line and line.endswith(tail), line
        assert "Traceback" not in forced.stderr and "FORCED" not in forced.stdout
        assert registry.resolve("routing", registry.CHAMPION).version == champion
        assert len(json.loads(keel(store, "history", "routing", "--json").stdout)["moves"]) == moves


def test_train_prints_nothing_of_mlflows(tmp_path: Path) -> None:
    """A fresh clone's first `keel train`: no "Add type hints" warning from logging the pyfunc,
    no "Successfully registered"/"Created version" from registering it (a new model name, when
    MLflow says the most)."""
    env = {
        **os.environ,
        "KEEL_HOME": str(tmp_path / "home"),
        "KEEL_TRAIN_ROWS": "3000",
        "KEEL_TRAIN_NUM_BOOST_ROUND": "30",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    done = run_keel(env, "train", "discount_band", fresh=True)
    # 3,000 rows may certify nothing: exit 1, registered as challenger only.
    assert done.returncode in (0, 1) and "registered version 1" in done.stdout, done.stdout + done.stderr
    said = done.stdout + done.stderr
    for text in ("type hints", "UserWarning", "Successfully registered", "Created version", "\x1b["):
        assert text not in said, said


def test_cli_reports_contract_errors_in_a_users_file(store: Store, tmp_path: Path) -> None:
    frame = generate("invoice_classification", 50, seed=1)
    frame.loc[3, "amount"] = np.nan
    frame.loc[7, "channel"] = "fax"
    bad = tmp_path / "bad.parquet"
    frame.to_parquet(bad)
    done = keel(store, "train", "invoice_classification", "--data", str(bad))
    assert done.returncode == 2
    # One line: the first bad cell (rows counted from 1, as a person reads them) and how many more.
    assert done.stderr.strip().splitlines()[-1] == (
        f"keel: {bad}: training data breaks the invoice_classification contract: "
        "row 4, amount: must not be null (and 1 more problem)"
    )
    assert "Traceback" not in done.stderr


def test_help_lists_the_commands(store: Store) -> None:
    done = keel(store, "--help")
    assert done.returncode == 0
    for command in ("train", "promote"):
        assert command in done.stdout
