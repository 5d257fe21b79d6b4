"""The MLflow model registry as the system of record: aliases, version tags, verified loads."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from keel.errors import IntegrityError, ModelLoadError, RegistryError
from keel.feature_defs.contract import MODEL_NAMES
from keel.models.bundle import MANIFEST, read_bundle

if TYPE_CHECKING:
    # Loaded with a model only: listing, aliases and history need no LightGBM (nor, through
    # it, scikit-learn), which is most of a short command's start-up.
    from keel.models.decision_model import DecisionModel

CHAMPION = "champion"
CHALLENGER = "challenger"
SHADOW = "shadow"
"""Scores live traffic beside the champion, off the request path; logged, never returned."""
CANARY = "canary"
"""Serves a deterministic share of cases (the registered-model tag CANARY_SHARE_TAG)."""
CANARY_SHARE_TAG = "keel.canary_share"
HASH_TAG = "keel.sha256."
BUNDLE_DIR = "bundle"
MODEL_TAG = "keel.decision_model"
"""Registered-model tag marking a Keel decision model (value: the Keel code version that created it)."""


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


@dataclass(frozen=True)
class RegisteredAliases:
    """A registered Keel model's aliases (alias -> version) and tags, as one listing saw them."""

    name: str
    aliases: dict[str, str]
    tags: dict[str, str]


def keel_models() -> dict[str, RegisteredAliases]:
    """Every registered Keel decision model with its aliases and tags, in one paged search (the
    three shipped models count untagged too): what a polling replica reads each cycle."""
    out: dict[str, RegisteredAliases] = {}
    token: str | None = None
    for _ in range(1000):  # pages of 100: bounded, far beyond any real registry
        page = client().search_registered_models(max_results=100, page_token=token)
        for rm in page:
            tags = dict(rm.tags or {})
            if MODEL_TAG in tags or rm.name in MODEL_NAMES:
                aliases = {str(a): str(v) for a, v in (rm.aliases or {}).items()}
                out[rm.name] = RegisteredAliases(rm.name, aliases, tags)
        token = page.token
        if not token:
            break
    return out


def keel_model_names(alias: str = CHAMPION) -> tuple[str, ...]:
    """Registered Keel decision models holding `alias`."""
    return tuple(sorted(n for n, m in keel_models().items() if alias in m.aliases))


def download(ref: VersionRef, cache_dir: Path, expected: dict[str, str] | None = None) -> Path:
    """The version's bundle at `cache_dir/name/version`, downloaded once and renamed into place.

    Several processes (serve, monitor, train --from-log) share the cache: each downloads into its
    own temporary folder and renames it into place, so a reader never sees a half-written folder,
    and a folder in place is never deleted (a bad one is renamed aside, atomically)."""
    target = cache_dir / ref.name / ref.version
    if target.is_dir() and _intact(target, expected):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{ref.version}-", dir=target.parent.as_posix()))
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{ref.name}/{ref.version}", dst_path=staging.as_posix()
            )
        )
        bundles = [p.parent for p in local.rglob(MANIFEST) if p.parent.name == BUNDLE_DIR]
        if len(bundles) != 1:
            raise ModelLoadError(f"{ref.name} v{ref.version}: expected one bundle in the registered model")
        read_bundle(bundles[0], expected)  # a bundle that fails verification never enters the cache
        if target.is_dir() and not _intact(target, expected):
            os.replace(target, target.parent / f".bad-{ref.version}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(bundles[0], target)
        except OSError:
            if not (target.is_dir() and _intact(target, expected)):  # another process won the rename
                raise
    except MlflowException as exc:
        raise ModelLoadError(f"{ref.name} v{ref.version}: cannot download: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _intact(path: Path, expected: dict[str, str] | None) -> bool:
    try:
        read_bundle(path, expected)
    except Exception:
        return False
    return True


def load(ref: VersionRef, cache_dir: Path) -> LoadedModel:
    """Download and verify every artefact against the hashes recorded at registration."""
    expected = ref.artefact_hashes
    if MANIFEST not in expected:
        raise ModelLoadError(f"{ref.name} v{ref.version} records no artefact hashes; refusing to load it")
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = download(ref, cache_dir, expected)
    from keel.models.decision_model import DecisionModel

    return LoadedModel(ref, DecisionModel.load(path, expected))


def load_alias(name: str, alias: str, cache_dir: Path) -> LoadedModel:
    return load(resolve(name, alias), cache_dir)


PYFUNC_MODEL = "keel_model"
PYFUNC_RUN = "keel_run_id"
PYFUNC_HASHES = "keel_sha256"
"""Keys of the logged pyfunc's model_config: which registered model and run it is, and its hashes."""


def pyfunc_expected_hashes(config: dict[str, Any]) -> dict[str, str] | None:
    """The hashes a pyfunc load must verify the bundle against.

    Registration records the hashes twice: on the logged model (model_config) and on the registry
    version (tags). Every registered version of this run must carry exactly the logged hashes, so
    neither record can be edited alone; a model logged but never registered has only its own.
    Versions logged before this existed carry neither and are checked against their manifest."""
    sealed = config.get(PYFUNC_HASHES)
    if not sealed:
        return None
    name, run_id = str(config[PYFUNC_MODEL]), str(config[PYFUNC_RUN])
    versions = client().search_model_versions(f"name='{name}' and run_id='{run_id}'")
    for mv in versions:
        recorded = VersionRef(name, str(mv.version), None, dict(mv.tags), mv.run_id).artefact_hashes
        if recorded != dict(sealed):
            raise IntegrityError(
                f"{name} v{mv.version}: the registry's recorded hashes differ from the logged model's"
            )
    return {str(k): str(v) for k, v in sealed.items()}


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
