from __future__ import annotations

import json
from pathlib import Path

import pytest

from keel.errors import IntegrityError, ModelLoadError
from keel.feature_defs.contract import load_contract
from keel.models.bundle import ABSTENTION, BOOSTER, CALIBRATION, CONTRACT, MANIFEST, read_bundle, seal_bundle


def make_bundle(path: Path) -> dict[str, str]:
    path.mkdir()
    (path / BOOSTER).write_text("tree\n")
    (path / CALIBRATION).write_text(json.dumps({"temperature": 1.0}))
    (path / ABSTENTION).write_text(json.dumps({"threshold": 0.9, "alpha": 0.02, "delta": 0.05}))
    (path / CONTRACT).write_text(load_contract("routing").source)
    return seal_bundle(path, "routing")


def test_sealed_bundle_reads_back(tmp_path: Path) -> None:
    hashes = make_bundle(tmp_path / "b")
    bundle = read_bundle(tmp_path / "b", hashes)
    assert bundle.model_name == "routing" and bundle.calibration["temperature"] == 1.0
    assert set(hashes) == {BOOSTER, CALIBRATION, ABSTENTION, CONTRACT, MANIFEST}


@pytest.mark.parametrize("victim", [BOOSTER, CALIBRATION, CONTRACT])
def test_an_edited_file_is_refused(tmp_path: Path, victim: str) -> None:
    hashes = make_bundle(tmp_path / "b")
    with (tmp_path / "b" / victim).open("a") as fh:
        fh.write(" ")
    with pytest.raises(IntegrityError, match=f"{victim} was altered"):
        read_bundle(tmp_path / "b", hashes)


def test_a_deleted_file_is_refused(tmp_path: Path) -> None:
    hashes = make_bundle(tmp_path / "b")
    (tmp_path / "b" / ABSTENTION).unlink()
    with pytest.raises(IntegrityError, match="missing"):
        read_bundle(tmp_path / "b", hashes)


def test_a_resealed_bundle_does_not_match_the_registry_record(tmp_path: Path) -> None:
    hashes = make_bundle(tmp_path / "b")
    (tmp_path / "b" / CALIBRATION).write_text(json.dumps({"temperature": 9.0}))
    seal_bundle(tmp_path / "b", "routing")  # attacker rewrites the manifest too
    read_bundle(tmp_path / "b")  # self-consistent on its own ...
    with pytest.raises(IntegrityError):
        read_bundle(tmp_path / "b", hashes)  # ... but not what was registered


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a Keel model bundle"):
        read_bundle(tmp_path)
