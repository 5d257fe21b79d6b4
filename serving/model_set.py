"""The served models: loaded from the registry by alias, swapped atomically on reload.

A request takes one `Snapshot` and uses it to the end, so a reload never changes the model
under an in-flight request. A version that fails to load or verify, for any reason, leaves the
old one serving and is reported; the next reload tries again.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel.errors import KeelError, ModelLoadError
from keel.feature_defs.policy import Policy
from keel.models.registry import (
    CANARY,
    CANARY_SHARE_TAG,
    CHAMPION,
    SHADOW,
    LoadedModel,
    RegisteredAliases,
    keel_models,
    load,
    resolve,
)
from keel.models.spec import DecisionSpec

__all__ = ["Challengers", "ModelSet", "ReloadReport", "Served", "Snapshot"]

log = logging.getLogger("keel.models")


@dataclass(frozen=True)
class Served:
    loaded: LoadedModel
    policy: Policy = None  # type: ignore[assignment]  # None: the policy sealed in the version's spec

    def __post_init__(self) -> None:
        if self.policy is None:
            object.__setattr__(self, "policy", self.loaded.model.spec.policy)

    @property
    def spec(self) -> DecisionSpec:
        return self.loaded.model.spec

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
class Challengers:
    """What a served model has beside its champion (serving/challengers.py uses them)."""

    shadow: Served | None = None
    canary: Served | None = None
    share: float = 0.0


@dataclass(frozen=True)
class Snapshot:
    models: dict[str, Served] = field(default_factory=dict)
    challengers: dict[str, Challengers] = field(default_factory=dict)
    """Only models that have a shadow or a canary: the decide path looks them up once per request."""


@dataclass
class ReloadReport:
    loaded: dict[str, str] = field(default_factory=dict)
    unchanged: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


class ModelSet:
    """Every registered Keel model holding `alias` (or only `names`, when given)."""

    def __init__(self, alias: str, cache_dir: Path, names: tuple[str, ...] | None = None) -> None:
        self.alias = alias
        self.cache_dir = cache_dir
        self.fixed_names = names
        self.names: tuple[str, ...] = names or ()
        self._snapshot = Snapshot()
        self._lock = threading.Lock()  # one reload at a time; readers never take it

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def ready(self) -> bool:
        return bool(self.names) and all(n in self._snapshot.models for n in self.names)

    def spec(self, name: str, version: str) -> DecisionSpec:
        """The spec of a version: the served one when it is loaded, else loaded from the registry."""
        served = self._snapshot.models.get(name)
        if served is not None and served.loaded.ref.version == str(version):
            return served.spec
        from keel.models.registry import get_version

        return load(get_version(name, str(version)), self.cache_dir).model.spec

    def reload(self) -> ReloadReport:
        """Load every alias whose version changed beside the old ones, then swap in one step.

        One registry listing says which version each alias points at; an unchanged version costs
        nothing more (no per-model lookup, no download), so polling every few seconds is cheap."""
        report = ReloadReport()
        with self._lock:
            current = dict(self._snapshot.models)
            try:
                listing: dict[str, Any] | None = keel_models()
            except Exception as exc:  # a registry outage must not stop polling
                listing = None
                report.failed["*"] = f"cannot list registered models: {exc}"
                log.error("cannot list registered models: %s", exc)
            if self.fixed_names is None and listing is not None:
                held = {n for n, m in listing.items() if self.alias in m.aliases}
                self.names = tuple(sorted({*held, *current}))
            for name in self.names:
                try:
                    old = current.get(name)
                    listed = listing[name].aliases.get(self.alias) if listing and name in listing else None
                    if old is not None and listed == old.loaded.ref.version:
                        report.unchanged[name] = listed
                        continue
                    ref = resolve(name, self.alias)
                    if old is not None and old.loaded.ref.version == ref.version:
                        report.unchanged[name] = ref.version
                        continue
                    current[name] = Served(load(ref, self.cache_dir))
                    report.loaded[name] = ref.version
                except Exception as exc:  # any failure refuses this version only; the old one serves on
                    message = exc.message if isinstance(exc, KeelError) else f"{type(exc).__name__}: {exc}"
                    report.failed[name] = message
                    log.error("model %s@%s not loaded: %s", name, self.alias, message)
            challengers = dict(self._snapshot.challengers)
            if self.alias == CHAMPION and listing is not None:
                challengers = self._challengers(listing, current, report)
            self._snapshot = Snapshot(current, challengers)
        return report

    def _challengers(
        self, listing: dict[str, RegisteredAliases], current: dict[str, Served], report: ReloadReport
    ) -> dict[str, Challengers]:
        """Shadow and canary versions of the served models, loaded only when their version moved.

        A challenger must take the champion's requests (same sealed contract); one that fails to
        load or differs is not used, and reported, while the champion serves on."""
        out: dict[str, Challengers] = {}
        for name, champion in current.items():
            entry = listing.get(name)
            if entry is None:
                continue
            old = self._snapshot.challengers.get(name, Challengers())
            picked: dict[str, Served | None] = {}
            for alias, before in ((SHADOW, old.shadow), (CANARY, old.canary)):
                version = entry.aliases.get(alias)
                picked[alias] = None
                if version is None:
                    continue
                if before is not None and before.loaded.ref.version == version:
                    picked[alias] = before
                    continue
                try:
                    loaded = Served(load(resolve(name, alias), self.cache_dir))
                except Exception as exc:
                    report.failed[f"{name}@{alias}"] = exc.message if isinstance(exc, KeelError) else str(exc)
                    continue
                if loaded.loaded.model.contract.version != champion.loaded.model.contract.version:
                    report.failed[f"{name}@{alias}"] = f"v{version} has another contract than the champion"
                    continue
                picked[alias] = loaded
                report.loaded[f"{name}@{alias}"] = version
            share = _share(entry.tags.get(CANARY_SHARE_TAG)) if picked[CANARY] is not None else 0.0
            if picked[SHADOW] is not None or (picked[CANARY] is not None and share > 0.0):
                out[name] = Challengers(picked[SHADOW], picked[CANARY] if share > 0.0 else None, share)
        return out

    def challengers(self, name: str) -> Challengers | None:
        return self._snapshot.challengers.get(name)

    def get(self, name: str) -> Served:
        served = self._snapshot.models.get(name)
        if served is None:
            raise ModelLoadError(f"model {name} is not loaded yet")
        return served


def _share(tag: str | None) -> float:
    try:
        share = float(tag) if tag is not None else 0.0
    except ValueError:
        return 0.0
    return share if 0.0 < share < 1.0 else 0.0
