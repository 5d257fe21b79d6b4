"""`keel shadow` and `keel canary`: alias moves that put a challenger beside the champion.

Both move a registry alias (`shadow`, `canary`) and record the move in the alias history like
any other; the canary's share is a registered-model tag (keel.canary_share), written before the
alias so a replica never sees a canary without its share. A challenger must verify and take the
champion's requests (the same sealed contract), and cannot be the champion itself; a canary,
which answers real cases, must certify some coverage.
"""

from __future__ import annotations

from collections.abc import Sequence

from keel.decision_log.outbox import OutboxEvent
from keel.errors import InvalidInput
from keel.models import aliases
from keel.models.history import HistoryEntry, history_for
from keel.models.registry import CANARY, CANARY_SHARE_TAG, CHAMPION, SHADOW, client, get_version, load
from keel.models.thresholds import NEVER_DECIDE
from keel.settings import StateSettings

__all__ = ["AUTO_ROLLBACK_TAG", "set_canary", "set_shadow"]

AUTO_ROLLBACK_TAG = "keel.canary_auto_rollback"
"""Registered-model tag: stop this canary automatically when it is worse (training.canary_guard)."""


def _check(name: str, version: str, state: StateSettings, *, serves: bool = False) -> str:
    champion = aliases.current_version(name, CHAMPION)
    if champion is None:
        raise InvalidInput(f"{name} has no champion to challenge")
    if str(version) == champion:
        raise InvalidInput(f"{name}: version {version} is the champion; a challenger is another version")
    cache = state.home_dir / "cache"
    candidate = load(get_version(name, str(version)), cache)  # downloads and verifies every hash
    served = load(get_version(name, champion), cache).model.contract.version
    if candidate.model.contract.version != served:
        raise InvalidInput(
            f"{name}: version {version} has contract {candidate.model.contract.version[:12]}, the champion "
            f"v{champion} {served[:12]}: a challenger must take the champion's requests"
        )
    if serves and float(candidate.model.bundle.abstention["threshold"]) >= NEVER_DECIDE:
        raise InvalidInput(f"{name}: version {version} certifies nothing; it cannot serve a canary share")
    return champion


def set_shadow(
    name: str, version: str | None, *, actor: str, reason: str, state: StateSettings
) -> HistoryEntry:
    """Point `shadow` at `version` (None: remove it) and record the move."""
    if version is not None:
        champion = _check(name, version, state)
        reason = f"shadowing champion v{champion}" + (f": {reason}" if reason else "")
    return aliases.move_alias(
        history_for(state), name, SHADOW, version, action=SHADOW, actor=actor, reason=reason
    )


def set_canary(
    name: str,
    version: str | None,
    share: float,
    *,
    actor: str,
    reason: str,
    state: StateSettings,
    auto_rollback: bool = False,
    also: Sequence[OutboxEvent] = (),
) -> HistoryEntry:
    """Serve `version` to `share` of the cases (None: stop the canary) and record the move.

    `auto_rollback` marks the canary for training.canary_guard (tag AUTO_ROLLBACK_TAG): it is
    stopped once its reviewed override rate is worse than the champion's beyond the tolerance.
    `also`: events announced with a stop (the guard's rollback event), staged with the move.
    """
    c = client()
    history = history_for(state)
    if version is None:
        entry = aliases.move_alias(
            history, name, CANARY, None, action=CANARY, actor=actor, reason=reason, also=also
        )
        tags = c.get_registered_model(name).tags or {}
        for tag in (CANARY_SHARE_TAG, AUTO_ROLLBACK_TAG):
            if tag in tags:
                c.delete_registered_model_tag(name, tag)
        return entry
    if not 0.0 < share < 1.0:
        raise InvalidInput(f"--share must be a fraction between 0 and 1 (exclusive), not {share:g}")
    champion = _check(name, version, state, serves=True)
    c.set_registered_model_tag(name, CANARY_SHARE_TAG, f"{share:g}")
    if auto_rollback:
        c.set_registered_model_tag(name, AUTO_ROLLBACK_TAG, "true")
    elif AUTO_ROLLBACK_TAG in (c.get_registered_model(name).tags or {}):
        c.delete_registered_model_tag(name, AUTO_ROLLBACK_TAG)
    guard = "; automatic rollback on" if auto_rollback else ""
    why = f"share {share:g} of cases, champion v{champion} the rest{guard}" + (
        f": {reason}" if reason else ""
    )
    return aliases.move_alias(history, name, CANARY, version, action=CANARY, actor=actor, reason=why)
