"""A registered model carries Keel's code: it loads in an environment where `keel` is not installed,
installs nothing, and verifies the registry's recorded hashes; the wheel holds only `keel/`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from keel.errors import IntegrityError
from keel.models import registry
from keel.models.bundle import BOOSTER
from tests.conftest import Store

REPO = Path(__file__).resolve().parents[2]

PREDICT = """
import json, sys
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model("models:/routing@champion")
import keel
out = model.predict(pd.DataFrame([json.loads(sys.argv[1])]))
print(json.dumps({"keel_file": keel.__file__, "outcome": out["most_likely"][0],
                  "p": float(out.filter(like="p_").sum(axis=1)[0])}))
"""


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv without pip or system site packages whose only extra is a .pth line to our
    dependencies: Keel's dependencies import there, `keel` does not."""
    root = tmp_path_factory.mktemp("bare-venv")
    venv.EnvBuilder(system_site_packages=False, with_pip=False).create(root / "venv")
    python = root / "venv" / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # A path added by a .pth line is put on sys.path, but the .pth files in it (our editable
    # install's finder among them) are not run, so `keel` stays out of reach.
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _run(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "KEEL_"))}
    env |= {
        "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
        "MLFLOW_REGISTRY_URI": mlflow.get_registry_uri(),
    }
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_champion_predicts_where_keel_is_not_installed(
    store: Store, registered: dict[str, str], bare_python: Path, tmp_path: Path
) -> None:
    site = Path(sysconfig.get_paths()["purelib"])
    before = sorted(p.name for p in site.iterdir())
    no_keel = _run(bare_python, tmp_path, "-c", "import keel")
    assert no_keel.returncode != 0 and "No module named 'keel'" in no_keel.stderr
    models = _run(bare_python, tmp_path, "-c", "import models")
    assert models.returncode != 0

    from keel.feature_defs.contract import load_contract

    case = {k: v for k, v in load_contract("routing").example_case.items() if k != "case_id"}
    import json

    done = _run(bare_python, tmp_path, "-c", PREDICT, json.dumps(case))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["outcome"] in load_contract("routing").classes and abs(out["p"] - 1.0) < 1e-9
    assert "/code/keel/" in out["keel_file"] and str(REPO) not in out["keel_file"], out["keel_file"]
    assert sorted(p.name for p in site.iterdir()) == before  # nothing was installed
    local = Path(mlflow.artifacts.download_artifacts("models:/routing@champion"))
    requirements = (local / "requirements.txt").read_text()
    assert "mlflow" in requirements and not any(
        line.split("=")[0].split("<")[0].split(">")[0].strip().lower() in ("keel", "keel-decisions")
        for line in requirements.splitlines()
    )


def test_pyfunc_refuses_a_bundle_the_registry_did_not_record(
    store: Store, registered: dict[str, str], bare_python: Path, tmp_path: Path
) -> None:
    client = MlflowClient()
    name, version = "routing", registered["routing"]
    key = f"{registry.HASH_TAG}{BOOSTER}"
    recorded = client.get_model_version(name, version).tags[key]
    client.set_model_version_tag(name, version, key, "0" * 64)
    try:
        done = _run(bare_python, tmp_path, "-c", PREDICT, "{}")
        assert done.returncode != 0 and "recorded hashes differ" in done.stderr
        with pytest.raises(IntegrityError):
            registry.load(registry.get_version(name, version), store.home / "cache")
    finally:
        client.set_model_version_tag(name, version, key, recorded)


@pytest.mark.slow
def test_the_wheel_holds_only_keel(bare_python: Path, tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources.
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", ".keel", "*.egg-info", "__pycache__", ".*_cache", "mlruns"
        ),
    )
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("keel_decisions-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"keel"}
    for part in (
        "keel/serving/pyfunc_model.py",
        "keel/feature_defs/routing.yaml",
        "keel/feature_defs/policies/routing.yaml",
    ):
        assert part in names
    # Unpacked as pip would lay it into site-packages: only `keel` imports, from outside the checkout.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = "import keel.models.decision_model, keel.feature_defs.policy; print(keel.models.__file__)"
    done = subprocess.run([str(bare_python), "-c", probe], cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith(str(site)), done.stderr[-2000:]
    for stranger in ("models", "training", "serving", "monitoring", "feature_defs"):
        done = subprocess.run(
            [str(bare_python), "-c", f"import {stranger}"], cwd=work, env=env, capture_output=True, text=True
        )
        assert done.returncode != 0, stranger
