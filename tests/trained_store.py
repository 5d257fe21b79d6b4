"""The session's trained models, trained once per test run however many pytest-xdist workers share it.

The first process to ask trains into its own KEEL_HOME and leaves a copy of the MLflow store (the
SQLite database and the artefact folder) beside the run's temp folders; every other worker copies
that store into its own home instead of training the same three models again. Each worker keeps
a store of its own, so tests that register, promote or tamper stay out of each other's way.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

__all__ = ["run_folder", "trained_once"]

DB = "mlflow.db"
ARTEFACTS = "mlartifacts"
RECORD = "trained.json"


def run_folder(factory: pytest.TempPathFactory) -> Path:
    """The temp folder of this test run that all its processes share: under xdist each worker's
    basetemp is `<run>/popen-gwN`, so its parent; alone, the basetemp itself (its parent holds the
    folders of earlier runs, whose models were trained by earlier code)."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def trained_once(
    factory: pytest.TempPathFactory, key: str, home: Path, train: Callable[[], dict[str, str]]
) -> dict[str, str]:
    """`train()` (which registers into the store at `home`) once per run and key; a later caller
    gets the same store copied into its `home` and `train()`'s result, which must be JSON."""
    shared = run_folder(factory) / f"trained-{key}"
    with FileLock(f"{shared}.lock"):
        record = shared / RECORD
        if record.exists():
            saved = json.loads(record.read_text())
            _copy_store(shared, home, old_home=saved["home"], new_home=str(home))
            return dict(saved["result"])
        result = train()
        _copy_store(home, shared)
        record.write_text(json.dumps({"home": str(home), "result": result}))
        return result


def _copy_store(source: Path, target: Path, old_home: str | None = None, new_home: str | None = None) -> None:
    """Copy the MLflow store at `source` over the one at `target` (through SQLite's backup API: a
    consistent copy even of a database in use), pointing the paths it records into `new_home`."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source / ARTEFACTS, target / ARTEFACTS, dirs_exist_ok=True)
    src = sqlite3.connect(source / DB)
    dst = sqlite3.connect(target / DB)
    try:
        src.backup(dst)
        if old_home is not None and new_home is not None and old_home != new_home:
            _rehome(dst, old_home, new_home)
    finally:
        src.close()
        dst.close()


def _rehome(conn: sqlite3.Connection, old: str, new: str) -> None:
    """MLflow records absolute artefact locations (experiments, runs, model versions, logged
    models, some tags); rewrite every text value under the old home to the same place in the new."""
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    with conn:
        for table in tables:
            for column in [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]:
                conn.execute(
                    f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                    f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                    (old + "/", new + "/", old + "/"),
                )
