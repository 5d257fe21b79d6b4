"""Alias moves with their history: the only place that moves `champion` for a person.

Every move names its actor and lands in the alias history (models.history) right after the
registry changes. The champion lineage is read back from that history, so `rollback` knows the
previous champion and `approve` knows the pending request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keel.models.history import History, HistoryEntry
from keel.models.registry import CHALLENGER, CHAMPION, client, get_version
from mlflow.exceptions import MlflowException

from keel.errors import RegistryError

__all__ = [
    "APPROVE",
    "PROMOTE",
    "REGISTER",
    "REQUEST",
    "ROLLBACK",
    "current_version",
    "move_champion",
    "pending_request",
    "previous_champion",
]

REGISTER, PROMOTE, REQUEST, APPROVE, ROLLBACK = "register", "promote", "request", "approve", "rollback"
_MOVES = {REGISTER, PROMOTE, APPROVE}


def current_version(name: str, alias: str = CHAMPION) -> str | None:
    try:
        return str(client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def move_champion(
    history: History,
    name: str,
    version: str,
    *,
    action: str,
    actor: str,
    reason: str = "",
    forced: bool = False,
    gates: Sequence[dict[str, Any]] = (),
) -> HistoryEntry:
    """Point `champion` at `version` (dropping `challenger` if it pointed there) and record it."""
    ref = get_version(name, version)
    before = current_version(name)
    c = client()
    c.set_registered_model_alias(name, CHAMPION, ref.version)
    if current_version(name, CHALLENGER) == ref.version:
        c.delete_registered_model_alias(name, CHALLENGER)
    return history.append(
        HistoryEntry(name, CHAMPION, action, before, ref.version, actor, reason, forced, tuple(gates))
    )


def record_request(
    history: History,
    name: str,
    version: str,
    actor: str,
    reason: str,
    gates: Sequence[dict[str, Any]],
    forced: bool,
) -> HistoryEntry:
    """A promotion waiting for a second person; nothing in the registry moves."""
    return history.append(
        HistoryEntry(
            name, CHAMPION, REQUEST, current_version(name), version, actor, reason, forced, tuple(gates)
        )
    )


def pending_request(entries: Sequence[HistoryEntry], version: str) -> HistoryEntry | None:
    """The newest request for `version` not yet followed by a champion move of any kind."""
    pending: HistoryEntry | None = None
    for e in entries:
        if e.alias != CHAMPION:
            continue
        if e.action == REQUEST:
            pending = e if e.to_version == version else pending
        elif e.action in (*_MOVES, ROLLBACK):
            pending = None
    return pending


def previous_champion(entries: Sequence[HistoryEntry], current: str | None) -> str:
    """The champion before the current one: promotions push, rollbacks pop."""
    stack: list[str] = []
    for e in entries:
        if e.alias != CHAMPION or e.to_version is None:
            continue
        if e.action in _MOVES:
            if not stack and e.from_version is not None:
                stack.append(e.from_version)
            if not stack or stack[-1] != e.to_version:
                stack.append(e.to_version)
        elif e.action == ROLLBACK and stack:
            stack.pop()
    if len(stack) < 2 or stack[-1] != current:
        raise RegistryError(
            f"no previous champion to roll back to (current champion {current}, recorded lineage {stack})"
        )
    return stack[-2]
