"""The served models: loaded from the registry by alias, swapped atomically on reload.

A request takes one `Snapshot` and uses it to the end, so a reload never changes the model
under an in-flight request. A version that fails to load or verify leaves the old one serving.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel.feature_defs.contract import MODEL_NAMES
from keel.models.registry import LoadedModel, load, resolve
from keel.serving.policy import Policy, load_policy

from keel.errors import KeelError, ModelLoadError

log = logging.getLogger("keel.models")


@dataclass(frozen=True)
class Served:
    loaded: LoadedModel
    policy: Policy

    @property
    def versions(self) -> dict[str, Any]:
        ref = self.loaded.ref
        return {
            "model": ref.name,
            "model_version": ref.version,
            "alias": ref.alias,
            "contract_version": self.loaded.model.contract.version,
            "policy_version": self.policy.version,
        }


@dataclass(frozen=True)
class Snapshot:
    models: dict[str, Served] = field(default_factory=dict)


@dataclass
class ReloadReport:
    loaded: dict[str, str] = field(default_factory=dict)
    unchanged: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


class ModelSet:
    def __init__(self, alias: str, cache_dir: Path, names: tuple[str, ...] = MODEL_NAMES) -> None:
        self.alias = alias
        self.cache_dir = cache_dir
        self.names = names
        self._snapshot = Snapshot()
        self._lock = threading.Lock()  # one reload at a time; readers never take it

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def ready(self) -> bool:
        return all(n in self._snapshot.models for n in self.names)

    def reload(self) -> ReloadReport:
        """Load every alias whose version changed beside the old ones, then swap in one step."""
        report = ReloadReport()
        with self._lock:
            current = dict(self._snapshot.models)
            for name in self.names:
                try:
                    ref = resolve(name, self.alias)
                    old = current.get(name)
                    if old is not None and old.loaded.ref.version == ref.version:
                        report.unchanged[name] = ref.version
                        continue
                    current[name] = Served(load(ref, self.cache_dir), load_policy(name))
                    report.loaded[name] = ref.version
                except (KeelError, OSError, ValueError) as exc:
                    message = exc.message if isinstance(exc, KeelError) else str(exc)
                    report.failed[name] = message
                    log.error("model %s@%s not loaded: %s", name, self.alias, message)
            self._snapshot = Snapshot(current)
        return report

    def get(self, name: str) -> Served:
        served = self._snapshot.models.get(name)
        if served is None:
            raise ModelLoadError(f"model {name} is not loaded yet")
        return served
