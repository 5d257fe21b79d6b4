"""Keel's own code and public dependencies, as shipped with every registered model.

The MLflow model carries the `keel` package (code_paths) laid out as installed, so
`mlflow.pyfunc.load_model` works where Keel is not installed, and pins only the public
distributions Keel depends on: never a package named after us from the index.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
from pathlib import Path

from packaging.requirements import Requirement

__all__ = ["DISTRIBUTION", "keel_code_tree", "keel_package_dirs", "public_requirements"]

DISTRIBUTION = "keel-decisions"
ROOT = "keel"
SHIPPED_SUFFIXES = frozenset({".py", ".yaml", ".yml", ".json", ".typed"})


def public_requirements() -> list[str]:
    """Our distribution's own dependencies (no extras), as pip requirement strings."""
    requires = importlib.metadata.requires(DISTRIBUTION) or []
    out = []
    for line in requires:
        req = Requirement(line)
        if req.marker is not None and "extra" in str(req.marker):
            continue
        if req.name.lower() in ("keel", DISTRIBUTION):
            continue
        out.append(str(req))
    return out


def _location(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def keel_package_dirs() -> dict[str, Path]:
    """Import name -> source folder of `keel` and of any subpackage installed from elsewhere.

    A wheel install holds everything below keel/; an editable install maps keel.models to the
    checkout's models/ folder (setuptools package-dir), which no folder walk from keel/ finds,
    so sibling folders of keel/ are offered to the import system and kept where it maps them."""
    root = _location(ROOT)
    if root is None:
        raise RuntimeError("the keel package is not importable")
    found: dict[str, Path] = {ROOT: root}
    for sibling in sorted(root.parent.iterdir()):
        name = f"{ROOT}.{sibling.name}"
        if (sibling / "__init__.py").is_file() and _location(name) == sibling.resolve():
            found[name] = sibling.resolve()
    return found


def keel_code_tree(dest: Path) -> Path:
    """Write Keel's code and package data as the installed `keel` package into dest/keel."""
    for name, src in keel_package_dirs().items():
        out = dest.joinpath(*name.split("."))
        for f in src.rglob("*"):
            if f.is_file() and f.suffix in SHIPPED_SUFFIXES and "__pycache__" not in f.parts:
                target = out / f.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)
    return dest / ROOT
