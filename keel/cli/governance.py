"""Alias moves and what judges them: promote, approve, rollback, shadow, canary, compare, history, models."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from keel.cli.common import _actor, _models, _moved, _off, _state
from keel.errors import InvalidInput, KeelError

if TYPE_CHECKING:
    from keel.training.settings import PromotionSettings


def cmd_promote(args: argparse.Namespace) -> int:
    from keel.training import promotion
    from keel.training.settings import PromotionSettings

    state: Any = _state()
    name = _models(args.model, registered=True)[0]
    args.actor = _actor(args)
    out = promotion.promote(
        name,
        args.version,
        actor=args.actor,
        force=args.force,
        reason=args.reason or "",
        state=state,
        settings=PromotionSettings(),
    )
    print(f"{name}: promotion gates for version {out.version}:")
    for c in out.criteria:
        print(c.line())
    if out.pending:
        print(
            f"{name}: two-person rule: request #{out.entry.seq if out.entry else '?'} recorded by "
            f"{args.actor}; `keel approve {name} {out.version}` by another person moves champion"
        )
        return 0
    if not out.moved:
        print(
            f"keel: {name}: gates failed; champion not moved (use --force --reason TEXT to override)",
            file=sys.stderr,
        )
        return 1
    forced = " (FORCED past failed gates)" if out.entry and out.entry.forced else ""
    return _moved(name, out.entry, f"{forced} by {args.actor}")


def cmd_approve(args: argparse.Namespace) -> int:
    from keel.training import promotion

    state: Any = _state()
    name = _models(args.model, registered=True)[0]
    args.actor = _actor(args)
    entry = promotion.approve(name, args.version, actor=args.actor, state=state)
    return _moved(name, entry, f", approved by {args.actor} ({entry.reason})")


def cmd_rollback(args: argparse.Namespace) -> int:
    from keel.training import promotion

    state: Any = _state()
    name = _models(args.model, registered=True)[0]
    args.actor = _actor(args)
    entry = promotion.rollback(name, actor=args.actor, reason=args.reason or "", state=state)
    return _moved(name, entry, f" (rollback) by {args.actor}")


def cmd_shadow(args: argparse.Namespace) -> int:
    from keel.training.challenger_moves import set_shadow

    state: Any = _state()
    name = _models(args.model, registered=True)[0]
    entry = set_shadow(name, _off(args.version), actor=_actor(args), reason=args.reason or "", state=state)
    now = f"v{entry.to_version} scores live traffic in shadow" if entry.to_version else "no shadow"
    return _moved(name, entry, f" (by {entry.actor}; history #{entry.seq})", now)


def cmd_canary(args: argparse.Namespace) -> int:
    from keel.training.challenger_moves import set_canary

    state: Any = _state()
    name = _models(args.model, registered=True)[0]
    version = _off(args.version)
    if version is not None and args.share is None:
        raise InvalidInput("keel canary MODEL VERSION needs --share F (a fraction of cases, e.g. 0.1)")
    entry = set_canary(
        name,
        version,
        args.share or 0.0,
        actor=_actor(args),
        reason=args.reason or "",
        state=state,
        auto_rollback=args.auto_rollback,
    )
    now = f"v{entry.to_version} ({entry.reason})" if entry.to_version else "no canary"
    return _moved(name, entry, f" (by {entry.actor}; history #{entry.seq})", now)


def cmd_compare(args: argparse.Namespace) -> int:
    from keel.decision_log.database import Database
    from keel.monitoring.challenger_compare import compare, compare_lines
    from keel.monitoring.monitor import parse_window
    from keel.monitoring.settings import MonitorSettings
    from keel.training.settings import PromotionSettings

    state: Any = _state(log=True)
    name = _models(args.model, registered=True)[0]
    start, end = parse_window(args.window or MonitorSettings().window)
    db = Database(state.log_url)
    guarded = _guard_canary(name, db, state, PromotionSettings())
    result = compare(db, name, start, end)
    if guarded is not None:
        result["canary_guard"] = {"rolled_back": guarded.rollback, "reason": guarded.reason}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(compare_lines(result)))
    return 0


def _guard_canary(name: str, db: Any, state: Any, settings: PromotionSettings | None = None) -> Any:
    """Judge the model's canary (if auto-rollback is on for it); print when it is stopped.
    `settings` are the command's PromotionSettings (read from the environment when not given)."""
    from keel.cli.canary_guard import guard_canary
    from keel.cli.common import pickup_note
    from keel.training.settings import PromotionSettings

    judgement = guard_canary(name, db, state, settings or PromotionSettings())
    if judgement is not None and judgement.rollback:
        print(f"{name}: canary stopped automatically: {judgement.reason}", file=sys.stderr)
        print(f"{name}: {pickup_note()}", file=sys.stderr)
    return judgement


def cmd_history(args: argparse.Namespace) -> int:
    from keel.models.history import history_for, history_json

    state: Any = _state()
    name = _models(args.model, registered=True)[0]
    body = history_json(history_for(state), name)
    if args.json:
        print(json.dumps(body, indent=2))
        return 0 if body["chain_intact"] else 1
    print(
        f"{name}: {len(body['moves'])} alias moves; "
        f"hash chain {'intact' if body['chain_intact'] else 'BROKEN'}"
    )
    for m in body["moves"]:
        failed = [g["criterion"] for g in m["gates"] if not g["passed"]]
        gates = (
            f"gates failed: {', '.join(failed)}" if failed else ("gates passed" if m["gates"] else "no gates")
        )
        print(
            f"#{m['seq']} {m['created_at']} {m['action']:<8} {m['alias']} {m['from_version']} -> "
            f"{m['to_version']} by {m['actor']}{' FORCED' if m['forced'] else ''}; {gates}"
            f"{'; reason: ' + m['reason'] if m['reason'] else ''}"
        )
    plans = body.get("audit_plans", [])
    if plans:
        print(f"{name}: {len(plans)} audit plans (the latest is current)")
    for p in plans:
        cells = ", ".join(f"{k} {v:.3g}" for k, v in p["probabilities"].items()) or "uniform"
        detect = f"; planned to detect {p['detect_ratio']:g}x" if p.get("detect_ratio") else ""
        print(
            f"audit plan v{p['version']} {p['created_at']} by {p['actor']}: "
            f"{p['field'] or 'every case'} {cells}; otherwise {p['default_probability']:.3g}; "
            f"cross {p['cross_share']:.0%}"
            f"{detect}"
            f"{'; reason: ' + p['reason'] if p['reason'] else ''}"
        )
    return 0 if body["chain_intact"] else 1


def cmd_models(args: argparse.Namespace) -> int:
    from keel.models.registry import CANARY, CHALLENGER, CHAMPION, SHADOW, resolve

    _state()
    rows = []
    for name in _models("all", registered=True):
        for alias in (CHAMPION, CHALLENGER, SHADOW, CANARY):
            try:
                ref = resolve(name, alias)
            except KeelError:
                continue
            rows.append(
                {
                    "model": name,
                    "alias": alias,
                    "version": ref.version,
                    "contract": ref.tags.get("keel.contract_version", "")[:12],
                    "threshold": ref.tags.get("keel.threshold"),
                    "coverage": ref.tags.get("keel.coverage"),
                }
            )
    print(json.dumps(rows, indent=2))
    return 0
