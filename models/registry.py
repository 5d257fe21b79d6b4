"""The MLflow model registry as the system of record: aliases, version tags, verified loads."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from keel.models.bundle import MANIFEST
from keel.models.decision_model import DecisionModel
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from keel.errors import ModelLoadError, RegistryError

CHAMPION = "champion"
CHALLENGER = "challenger"
HASH_TAG = "keel.sha256."
BUNDLE_DIR = "bundle"


@dataclass(frozen=True)
class VersionRef:
    """A registered model version and what its tags record."""

    name: str
    version: str
    alias: str | None
    tags: dict[str, str]
    run_id: str | None

    @property
    def artefact_hashes(self) -> dict[str, str]:
        return {k[len(HASH_TAG) :]: v for k, v in self.tags.items() if k.startswith(HASH_TAG)}


@dataclass
class LoadedModel:
    ref: VersionRef
    model: DecisionModel


def client() -> MlflowClient:
    return MlflowClient()


def resolve(name: str, alias: str = CHAMPION) -> VersionRef:
    try:
        mv = client().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise RegistryError(f"no version of {name} holds alias {alias!r}") from exc
    return VersionRef(name, str(mv.version), alias, dict(mv.tags), mv.run_id)


def get_version(name: str, version: str) -> VersionRef:
    try:
        mv = client().get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"{name} has no version {version}") from exc
    return VersionRef(name, str(mv.version), None, dict(mv.tags), mv.run_id)


def has_alias(name: str, alias: str = CHAMPION) -> bool:
    try:
        resolve(name, alias)
    except RegistryError:
        return False
    return True


def download(ref: VersionRef, cache_dir: Path) -> Path:
    """Copy a version's bundle to `cache_dir/name/version` (fresh each time) and return its folder."""
    target = cache_dir / ref.name / ref.version
    staging = Path(tempfile.mkdtemp(prefix=f".{ref.name}-{ref.version}-", dir=cache_dir.as_posix()))
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{ref.name}/{ref.version}", dst_path=staging.as_posix()
            )
        )
        bundles = [p.parent for p in local.rglob(MANIFEST) if p.parent.name == BUNDLE_DIR]
        if len(bundles) != 1:
            raise ModelLoadError(f"{ref.name} v{ref.version}: expected one bundle in the registered model")
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(bundles[0].as_posix(), target.as_posix())
    except MlflowException as exc:
        raise ModelLoadError(f"{ref.name} v{ref.version}: cannot download: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load(ref: VersionRef, cache_dir: Path) -> LoadedModel:
    """Download and verify every artefact against the hashes recorded at registration."""
    expected = ref.artefact_hashes
    if MANIFEST not in expected:
        raise ModelLoadError(f"{ref.name} v{ref.version} records no artefact hashes; refusing to load it")
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = download(ref, cache_dir)
    return LoadedModel(ref, DecisionModel.load(path, expected))


def load_alias(name: str, alias: str, cache_dir: Path) -> LoadedModel:
    return load(resolve(name, alias), cache_dir)


def promote(name: str, version: str) -> VersionRef:
    """Move `champion` to a version; drop `challenger` if it pointed there."""
    ref = get_version(name, version)
    c = client()
    c.set_registered_model_alias(name, CHAMPION, ref.version)
    try:
        if str(c.get_model_version_by_alias(name, CHALLENGER).version) == ref.version:
            c.delete_registered_model_alias(name, CHALLENGER)
    except MlflowException:
        pass
    return VersionRef(name, ref.version, CHAMPION, ref.tags, ref.run_id)
