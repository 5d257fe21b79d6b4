"""Automatic canary rollback: stop a canary whose reviewed decisions are overridden more than the champion's.

Opt-in per model (`keel canary MODEL V --share F --auto-rollback`, the registered-model tag
keel.canary_auto_rollback) or for every model (KEEL_PROMOTE_CANARY_AUTO_ROLLBACK). Whenever
Keel measures the canary against the champion (`keel monitor`, `keel compare`), it compares
their override rates on reviewed decided cases since the canary started; canary and champion
decide disjoint cases split by case hash, so the two groups are alike by construction and are
compared as independent samples. The canary is stopped (alias removed, share tag cleared, the
move in the alias history with actor keel-monitor and the numbers as its reason) when

- both sides have at least `min_reviewed_cases` reviewed decided cases, and
- the canary's override rate exceeds the champion's by more than `override_tolerance` (the
  promotion gate's tolerance), and
- the 95% Newcombe interval of the difference lies above zero, so one unlucky batch of reviews
  does not stop a canary that is as good as the champion.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from keel.decision_log.database import Database
from keel.events.catalog import canary_rolled_back
from keel.models.history import HistoryEntry, history_for
from keel.models.registry import CANARY, client
from keel.monitoring.challenger_compare import compare
from keel.settings import StateSettings
from keel.training.challenger_moves import AUTO_ROLLBACK_TAG, set_canary
from keel.training.settings import PromotionSettings

__all__ = ["GUARD_ACTOR", "CanaryJudgement", "auto_rollback_on", "guard_canary", "judge"]

GUARD_ACTOR = "keel-monitor"


@dataclass(frozen=True)
class CanaryJudgement:
    rollback: bool
    reason: str
    """The numbers behind the judgement, in words (also the history entry's reason)."""


def _pct(r: dict[str, Any]) -> str:
    return "n/a" if r.get("rate") is None else f"{100 * r['rate']:.1f}% of {r['n']}"


def judge(canary: dict[str, Any], settings: PromotionSettings) -> CanaryJudgement:
    """Judge one `compare(...)["canary"]` block against the rule in the module docstring."""
    overall = canary["overall"]
    champ, chall = overall["champion"]["override_rate"], overall["challenger"]["override_rate"]
    diff = overall["override_difference"]
    numbers = f"override rate canary {_pct(chall)} vs champion {_pct(champ)}"
    need = settings.min_reviewed_cases
    if min(champ["n"], chall["n"]) < need:
        return CanaryJudgement(False, f"{numbers}: fewer than {need} reviewed decided cases on a side")
    assert diff is not None  # both sides have reviewed cases
    worse = diff["difference"] > settings.override_tolerance and diff["low"] > 0
    span = f"{100 * diff['difference']:+.1f} pts [{100 * diff['low']:+.1f}, {100 * diff['high']:+.1f}]"
    verdict = "exceeds" if worse else "within"
    return CanaryJudgement(
        worse, f"{numbers} ({span}) {verdict} the tolerance of {100 * settings.override_tolerance:g} pts"
    )


def auto_rollback_on(name: str, settings: PromotionSettings) -> bool:
    if settings.canary_auto_rollback:
        return True
    return str((client().get_registered_model(name).tags or {}).get(AUTO_ROLLBACK_TAG, "")).lower() == "true"


def _canary_start(name: str, state: StateSettings) -> HistoryEntry | None:
    """The move that started the current canary (its latest move onto a version), or None."""
    moves = [e for e in history_for(state).entries(name) if e.alias == CANARY]
    if not moves or moves[-1].to_version is None:
        return None
    return moves[-1]


def guard_canary(
    name: str, db: Database, state: StateSettings, settings: PromotionSettings
) -> CanaryJudgement | None:
    """Judge `name`'s canary and stop it if it is worse; None when there is nothing to judge."""
    if not auto_rollback_on(name, settings):
        return None
    start = _canary_start(name, state)
    if start is None:
        return None
    canary = compare(db, name, datetime.fromisoformat(start.created_at), datetime.now(UTC))["canary"]
    if canary is None:
        return None
    judgement = judge(canary, settings)
    if judgement.rollback:
        set_canary(
            name,
            None,
            0.0,
            actor=GUARD_ACTOR,
            reason=f"automatic rollback: {judgement.reason}",
            state=state,
            also=[canary_rolled_back(name, start.to_version, GUARD_ACTOR, judgement.reason)],
        )
    return judgement
