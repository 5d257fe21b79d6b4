"""`keel train`: generated data, a file with --contract/--policy, or --from-log."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from keel.cli.common import _models, _state
from keel.errors import InvalidInput, first_problem


def cmd_train(args: argparse.Namespace) -> int:
    from keel.models.registry import has_alias
    from keel.settings import StateSettings, prepare_state
    from keel.terminal import StageLog, stage
    from keel.training.data import read_table
    from keel.training.settings import TrainingSettings

    overrides: dict[str, Any] = {k: v for k, v in (("rows", args.rows), ("seed", args.seed)) if v is not None}
    if args.contract and not args.data:
        raise InvalidInput("--contract needs --data (there is no generator for a new model)")
    names = [args.model] if args.contract else _models(args.model)
    if args.segment_field:
        overrides["segment_fields"] = {n: args.segment_field for n in names}
    settings = TrainingSettings(**overrides)
    if args.data and len(names) != 1:
        raise InvalidInput("--data needs a single model name, not all")
    frames = {name: read_table(args.data) for name in names} if args.data else {}
    if args.from_log:
        state = _state(registry=True, log=True)
    else:  # training creates the state it writes to
        from keel.cli.state import announce

        state = prepare_state(StateSettings())
        announce(state)
    failed = False
    for name in names:
        if args.if_missing and has_alias(name):
            print(f"{name}: a champion is registered; skipping (--if-missing)")
            continue
        with stage(f"{name}: training") as status, StageLog(name, status).attached():
            try:
                reg = _train_one(name, args, frames.get(name), state, settings)
            except InvalidInput as exc:
                if not args.data or not exc.errors:  # not about the data file's rows and columns
                    raise
                raise InvalidInput(_file_problem(exc, args.data)) from exc
        if not args.from_log:
            _print_registered(reg)
        failed |= _refuse_uncertified(reg)
    return 1 if failed else 0


def _train_one(name: str, args: argparse.Namespace, frame: Any, state: Any, settings: Any) -> Any:
    from keel.training.generators import generate
    from keel.training.registration import train_and_register

    if frame is not None:
        source = f"file:{args.data}"
    else:
        logging.getLogger("keel.training").info("generating %d rows", settings.rows)
        frame, source = generate(name, settings.rows, settings.seed), f"generator:seed={settings.seed}"
    if args.from_log:
        return _train_from_log(name, frame, source, state, settings)
    return train_and_register(name, frame, state, settings, source=source, **_spec_files(args))


def _file_problem(exc: InvalidInput, path: str) -> str:
    """Name the file and, for CSV, the line of the first bad cell (the header is line 1)."""
    header = 1 if path.lower().endswith(".csv") else 0
    return f"{path}: {first_problem(exc, header_lines=header)}"


def _refuse_uncertified(reg: Any) -> bool:
    from keel.training.certification import uncertified_message

    if reg.result.risk.certified:
        return False
    print(f"keel: {uncertified_message(reg.name, reg.version, reg.result)}", file=sys.stderr)
    return True


def _spec_files(args: argparse.Namespace) -> dict[str, Any]:
    """--contract and --policy as train_and_register arguments (a bad file is refused here)."""
    from keel.feature_defs.contract import load_contract_file

    out: dict[str, Any] = {}
    if args.contract:
        out["contract"] = load_contract_file(args.contract)
    if args.policy:
        out["policy_text"] = Path(args.policy).read_text()
    return out


def _print_registered(reg: Any) -> None:
    m, r = reg.result.metrics, reg.result.risk
    print(
        f"{reg.name}: registered version {reg.version} as {', '.join(reg.aliases)} "
        f"(accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}, ECE {m['ece']:.3f}; "
        f"alpha={r.alpha} delta={r.delta} threshold={r.threshold:.4f} coverage {m['coverage']:.3f}, "
        f"selective error {m['selective_error']:.4f} on test)"
    )
    left_out = reg.result.extra.get("invariant_left_out")
    if left_out:
        print(
            f"{reg.name}: {', '.join(left_out)} declared invariant and left out of the features "
            "(KEEL_TRAIN_DROP_INVARIANT_FEATURES); the sealed contract marks them feature: false"
        )


def _train_from_log(name: str, original: Any, source: str, state: Any, settings: Any) -> Any:
    from keel.decision_log.database import Database
    from keel.models import registry
    from keel.training import from_log
    from keel.training.registration import train_and_register

    champion = registry.load_alias(name, registry.CHAMPION, state.home_dir / "cache")
    contract = champion.model.contract  # the champion's sealed spec, not the packaged file
    split = from_log.split_log(from_log.labelled_from_log(Database(state.log_url), contract))
    mixed = from_log.mixed_training_frame(original, split.train, contract, settings.seed)
    reg = train_and_register(
        name,
        mixed.frame,
        state,
        settings,
        source=f"log({mixed.reviewed_used} reviewed)+{source}",
        extra_tags=mixed.tags,
        contract=contract,
        policy_text=champion.model.spec.policy.source,
    )
    _print_registered(reg)
    print(f"{name}: {from_log.REVIEW_HANDLING} ({mixed.reviewed_dropped} oldest reviewed cases left out)")
    challenger = registry.load(registry.get_version(name, reg.version), state.home_dir / "cache")
    print(
        f"{name}: champion v{champion.ref.version} vs challenger v{reg.version} on the newest "
        f"{len(split.holdout)} reviewed cases (held out from training):"
    )
    print(
        from_log.comparison_table(
            from_log.score(champion.model, split.holdout), from_log.score(challenger.model, split.holdout)
        )
    )
    return reg
