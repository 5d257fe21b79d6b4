"""Alias moves with their history: the only place that moves a model's aliases.

Every move (a person's promote, approve, rollback, shadow or canary, and training's own
registrations) names its actor and lands in the alias history (models.history) right after the
registry changes. The champion lineage is read back from that history, so `rollback` knows the
previous champion and `approve` knows the pending request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlflow.exceptions import MlflowException

from keel.decision_log.outbox import OutboxEvent
from keel.errors import RegistryError
from keel.models.history import History, HistoryEntry
from keel.models.registry import CHALLENGER, CHAMPION, client, get_version

__all__ = [
    "APPROVE",
    "PROMOTE",
    "REGISTER",
    "REQUEST",
    "ROLLBACK",
    "current_version",
    "move_alias",
    "move_champion",
    "os_user",
    "pending_request",
    "previous_champion",
]

REGISTER, PROMOTE, REQUEST, APPROVE, ROLLBACK = "register", "promote", "request", "approve", "rollback"
_MOVES = {REGISTER, PROMOTE, APPROVE}


def os_user() -> str:
    """The default actor of an alias move: the operating-system user."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def current_version(name: str, alias: str = CHAMPION) -> str | None:
    try:
        return str(client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def move_alias(
    history: History,
    name: str,
    alias: str,
    version: str | None,
    *,
    action: str,
    actor: str,
    reason: str = "",
    forced: bool = False,
    gates: Sequence[dict[str, Any]] = (),
    also: Sequence[OutboxEvent] = (),
) -> HistoryEntry:
    """Point `alias` at `version` (None: remove the alias) and record the move (its event, and
    the events `also` given, staged with it: models.history.History.append)."""
    before = current_version(name, alias)
    c = client()
    if version is None:
        if before is not None:
            c.delete_registered_model_alias(name, alias)
    else:
        c.set_registered_model_alias(name, alias, version)
    return history.append(
        HistoryEntry(name, alias, action, before, version, actor, reason, forced, tuple(gates)), also=also
    )


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
    entry = move_alias(
        history,
        name,
        CHAMPION,
        ref.version,
        action=action,
        actor=actor,
        reason=reason,
        forced=forced,
        gates=gates,
    )
    if current_version(name, CHALLENGER) == ref.version:
        client().delete_registered_model_alias(name, CHALLENGER)
    return entry


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
