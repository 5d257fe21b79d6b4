"""`keel status`: which state is in use and what it holds (models, versions, decision-log size)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from keel.cli.state import locations, log_counts, log_file_size, require
from keel.errors import KeelError
from keel.feature_defs.contract import MODEL_NAMES
from keel.settings import StateSettings

__all__ = ["status", "status_lines"]


def status(settings: StateSettings | None = None) -> dict[str, Any]:
    """Everything `keel status` shows, for people and scripts; StateMissing where there is no store."""
    from keel.decision_log.database import redact
    from keel.models.registry import CHALLENGER, resolve
    from keel.serving.settings import ServingSettings

    settings = settings or StateSettings()
    where = locations(settings)
    require(settings, registry=True)
    served = ServingSettings().alias
    models: dict[str, dict[str, str | None]] = {}
    for name in MODEL_NAMES:
        versions: dict[str, str | None] = {}
        for alias in dict.fromkeys((served, CHALLENGER)):
            try:
                versions[alias] = resolve(name, alias).version
            except KeelError:
                versions[alias] = None
        models[name] = versions
    return {
        "keel_home": str(where.home),
        "mlflow_store": redact(where.tracking_uri),
        "decision_log": redact(where.log_url),
        "served_alias": served,
        "models": models,
        "decisions": log_counts(settings),
        "decision_log_bytes": log_file_size(settings),
    }


def status_lines(as_json: bool = False) -> Iterator[str]:
    found = status()
    if as_json:
        yield json.dumps(found)
        return
    yield f"KEEL_HOME      {found['keel_home']}"
    yield f"MLflow store   {found['mlflow_store']}"
    yield f"decision log   {found['decision_log']}"
    counts, size = found["decisions"], found["decision_log_bytes"]
    if counts is None:
        yield "               not created yet (keel serve or keel keys add creates it)"
    else:
        mb = f", {size / 1e6:.1f} MB" if size is not None else ""
        yield f"               {sum(counts.values())} decisions{mb}"
    served = found["served_alias"]
    yield f"models (served alias: {served})"
    for name, versions in found["models"].items():
        shown = ", ".join(f"{alias} v{v}" for alias, v in versions.items() if v) or "not registered"
        decided = f"; {counts.get(name, 0)} decisions logged" if counts is not None else ""
        yield f"  {name:<24} {shown}{decided}"
