"""Every event Keel publishes, built in one place: type names, sources, subjects and data.

The data carries what happened and who did it, never a case's input values: alias moves carry
the history row (model, alias, versions, actor, reason, gate results); monitor verdicts carry
each check's status and value, not its detail text (which may quote segment values); canary
rollbacks carry the judgement's numbers. docs/events.md lists the types and their fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keel.decision_log.outbox import OutboxEvent

__all__ = [
    "ALIAS_MOVED",
    "CANARY_ROLLED_BACK",
    "MONITOR_VERDICT",
    "PROMOTION_REQUESTED",
    "TYPES",
    "alias_moved",
    "canary_rolled_back",
    "monitor_verdict",
]

ALIAS_MOVED = "io.keel.alias.moved"
PROMOTION_REQUESTED = "io.keel.promotion.requested"
"""A promotion waiting for a second person's approval (an alias-history row; nothing moved yet)."""
MONITOR_VERDICT = "io.keel.monitor.verdict"
CANARY_ROLLED_BACK = "io.keel.canary.rolled_back"
TYPES = (ALIAS_MOVED, PROMOTION_REQUESTED, MONITOR_VERDICT, CANARY_ROLLED_BACK)
_REQUEST = "request"
"""The alias-history action of a promotion request (keel.models.aliases.REQUEST)."""


def _model_source(model: str) -> str:
    return f"/keel/models/{model}"


def alias_moved(move: Mapping[str, Any], seq: int, row_hash: str) -> OutboxEvent:
    """The event of one alias-history row (`move` holds its columns; `gates` a list of dicts)."""
    data = {
        "model": move["model"],
        "alias": move["alias"],
        "action": move["action"],
        "from_version": move["from_version"],
        "to_version": move["to_version"],
        "actor": move["actor"],
        "reason": move["reason"],
        "forced": bool(move["forced"]),
        "gates": list(move["gates"]),
        "created_at": move["created_at"],
        "history_seq": seq,
        "history_hash": row_hash,
    }
    kind = PROMOTION_REQUESTED if move["action"] == _REQUEST else ALIAS_MOVED
    return OutboxEvent(type=kind, source=_model_source(move["model"]), subject=move["alias"], data=data)


def canary_rolled_back(model: str, version: str | None, actor: str, judgement: str) -> OutboxEvent:
    """Keel stopped `model`'s canary `version` by itself; `judgement` holds the numbers why."""
    data = {"model": model, "version": version, "actor": actor, "judgement": judgement}
    return OutboxEvent(type=CANARY_ROLLED_BACK, source=_model_source(model), subject="canary", data=data)


def monitor_verdict(
    run_id: str,
    model: str,
    generated_at: str,
    status: str,
    recommendation: str,
    window: Mapping[str, Any] | None,
    decisions: int | None,
    verdicts: Sequence[Mapping[str, Any]],
    report_dir: str | None,
) -> OutboxEvent:
    """The event of one `keel monitor` run of one model."""
    data = {
        "run_id": run_id,
        "model": model,
        "generated_at": generated_at,
        "status": status,
        "recommendation": recommendation,
        "window": {"start": window.get("start"), "end": window.get("end")} if window else None,
        "decisions": decisions,
        "verdicts": [{k: v.get(k) for k in ("check", "status", "value", "warn", "alert")} for v in verdicts],
        "report_dir": report_dir,
    }
    return OutboxEvent(type=MONITOR_VERDICT, source=f"/keel/monitor/{model}", subject=run_id, data=data)
