"""What every `keel` command shares: model names, the state it reads, alias-move lines, actors."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from keel.errors import InvalidInput
from keel.feature_defs.contract import MODEL_NAMES

Handler = Callable[[argparse.Namespace], int]


def _models(arg: str, registered: bool = False) -> list[str]:
    """The named model (or all); with `registered`, models defined by a contract file count too."""
    known = list(MODEL_NAMES)
    if registered:
        from keel.models.registry import keel_model_names

        known += [n for n in keel_model_names() if n not in known]
    if arg == "all":
        return known
    if arg not in known:
        raise InvalidInput(f"unknown model {arg!r}; choose from {', '.join(known)} or all")
    return [arg]


def _state(registry: bool = True, log: bool = False) -> Any:
    """The state a reading command uses, said on stderr; StateMissing (exit 3) where there is none."""
    from keel.cli import state
    from keel.settings import StateSettings

    settings = StateSettings()
    found = state.require(settings, registry=registry, log=log)
    state.announce(settings)
    return found


def _moved(name: str, entry: Any, how: str, now: str | None = None) -> int:
    """One line for an alias move, and when running replicas pick it up."""
    print(f"{name}: {entry.alias} v{entry.from_version} -> {now or f'v{entry.to_version}'}{how}")
    print(f"{name}: {pickup_note()}")
    return 0


def _off(version: str) -> str | None:
    return None if version == "off" else version


def _actor(args: argparse.Namespace) -> str:
    """--actor, or the operating-system user."""
    from keel.models.aliases import os_user

    return str(args.actor or os_user())


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def pickup_note() -> str:
    """When running replicas serve an alias move (printed by every command that moves one)."""
    from keel.serving.settings import ServingSettings

    poll = ServingSettings().reload_poll_seconds
    if poll > 0:
        return (
            f"running replicas pick this up by themselves within {poll:g} s "
            f"(KEEL_SERVE_RELOAD_POLL_SECONDS) plus the time to load the version; "
            f"POST /v1/admin/reload makes one switch now"
        )
    return (
        "alias polling is off (KEEL_SERVE_RELOAD_POLL_SECONDS=0): running replicas keep the old "
        "version until POST /v1/admin/reload"
    )
