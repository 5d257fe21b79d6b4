"""The registered model as data: booster text, JSON, YAML and Parquet files with recorded sha256s.

Nothing in a bundle is ever unpickled. `manifest.json` lists every other file's sha256; the
registry records the hashes of all files (manifest included) on the model version, and
`read_bundle` refuses a bundle whose files differ from what it is told to expect.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.errors import IntegrityError, ModelLoadError
from keel.feature_defs.contract import Contract, load_contract_text

BOOSTER = "booster.txt"
CALIBRATION = "calibration.json"
ABSTENTION = "abstention.json"
CONTRACT = "contract.yaml"
MANIFEST = "manifest.json"
REFERENCE = "reference.parquet"
EVALUATION = "evaluation.json"
POLICY = "policy.yaml"
SPEC = "spec.json"
REFERENCE_OUTPUTS = "reference_outputs.parquet"
"""The model's own outputs on the reference sample (probabilities, SHAP, policy results)."""
REQUIRED = (BOOSTER, CALIBRATION, ABSTENTION, CONTRACT)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def seal_bundle(directory: Path, model_name: str, extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Write the manifest over every file in the folder; returns all hashes, manifest included."""
    files = {
        p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST
    }
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        raise ValueError(f"bundle lacks {missing}")
    write_json(directory / MANIFEST, {"model_name": model_name, "files": files, **(extra or {})})
    return {**files, MANIFEST: sha256_file(directory / MANIFEST)}


def reseal_bundle(directory: Path) -> dict[str, str]:
    """Seal again after adding files, keeping the manifest's other entries; returns all hashes."""
    manifest = json.loads((directory / MANIFEST).read_text())
    extra = {k: v for k, v in manifest.items() if k not in ("model_name", "files")}
    return seal_bundle(directory, str(manifest["model_name"]), extra)


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]
    contract: Contract
    booster_text: str
    calibration: dict[str, Any]
    abstention: dict[str, Any]
    policy_text: str | None = None
    """The sealed policy; None in bundles registered before policies were sealed."""

    @property
    def model_name(self) -> str:
        return str(self.manifest["model_name"])


def verify_bundle(directory: Path, expected: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Check every file against the manifest and against `expected` (the registry's record)."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ModelLoadError(f"{directory} holds no {MANIFEST}; not a Keel model bundle")
    if expected is not None:
        _check(manifest_path, expected.get(MANIFEST))
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    files: dict[str, str] = dict(manifest.get("files", {}))
    if expected is not None:
        for name, digest in expected.items():
            if name != MANIFEST and files.get(name) != digest:
                raise IntegrityError(f"{name}: manifest hash differs from the registry's record")
    for name, digest in files.items():
        _check(directory / name, digest)
    return manifest


def _check(path: Path, digest: str | None) -> None:
    if digest is None:
        raise IntegrityError(f"no recorded sha256 for {path.name}")
    if not path.is_file():
        raise IntegrityError(f"{path.name} is missing from the bundle")
    actual = sha256_file(path)
    if actual != digest:
        raise IntegrityError(
            f"{path.name} was altered: sha256 {actual[:12]}… differs from recorded {digest[:12]}…"
        )


def read_bundle(directory: str | Path, expected: Mapping[str, str] | None = None) -> Bundle:
    directory = Path(directory)
    manifest = verify_bundle(directory, expected)
    try:
        contract = load_contract_text((directory / CONTRACT).read_text())
        return Bundle(
            path=directory,
            manifest=manifest,
            contract=contract,
            booster_text=(directory / BOOSTER).read_text(),
            calibration=json.loads((directory / CALIBRATION).read_text()),
            abstention=json.loads((directory / ABSTENTION).read_text()),
            policy_text=(directory / POLICY).read_text() if POLICY in manifest.get("files", {}) else None,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot read bundle {directory}: {exc}") from exc
