"""`keel` command line. Heavy imports happen inside each command so `--help` stays fast."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keel
from keel.errors import ExitCode, InvalidInput, KeelError, first_problem
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
    from keel import state
    from keel.settings import StateSettings

    settings = StateSettings()
    found = state.require(settings, registry=registry, log=log)
    state.announce(settings)
    return found


def cmd_train(args: argparse.Namespace) -> int:
    from keel.console import StageLog, stage
    from keel.models.registry import has_alias
    from keel.settings import StateSettings, prepare_state
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
        from keel.state import announce

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


def _train_from_log(name: str, original: Any, source: str, state: Any, settings: Any) -> Any:
    from keel.models import registry
    from keel.serving.database import Database
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


def _moved(name: str, entry: Any, how: str, now: str | None = None) -> int:
    """One line for an alias move, and when running replicas pick it up."""
    from keel.training.promotion import pickup_note

    print(f"{name}: {entry.alias} v{entry.from_version} -> {now or f'v{entry.to_version}'}{how}")
    print(f"{name}: {pickup_note()}")
    return 0


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


def _off(version: str) -> str | None:
    return None if version == "off" else version


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
    from keel.monitoring.challenger_compare import compare, compare_lines
    from keel.monitoring.monitor import parse_window
    from keel.monitoring.settings import MonitorSettings
    from keel.serving.database import Database

    state: Any = _state(log=True)
    name = _models(args.model, registered=True)[0]
    start, end = parse_window(args.window or MonitorSettings().window)
    db = Database(state.log_url)
    guarded = _guard_canary(name, db, state)
    result = compare(db, name, start, end)
    if guarded is not None:
        result["canary_guard"] = {"rolled_back": guarded.rollback, "reason": guarded.reason}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(compare_lines(result)))
    return 0


def _guard_canary(name: str, db: Any, state: Any) -> Any:
    """Judge the model's canary (if auto-rollback is on for it); print when it is stopped."""
    from keel.training.canary_guard import guard_canary
    from keel.training.promotion import pickup_note
    from keel.training.settings import PromotionSettings

    judgement = guard_canary(name, db, state, PromotionSettings())
    if judgement is not None and judgement.rollback:
        print(f"{name}: canary stopped automatically: {judgement.reason}", file=sys.stderr)
        print(f"{name}: {pickup_note()}", file=sys.stderr)
    return judgement


def cmd_history(args: argparse.Namespace) -> int:
    from keel.models.history import history_json
    from keel.training.promotion import history_for

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
    return 0 if body["chain_intact"] else 1


def _actor(args: argparse.Namespace) -> str:
    """--actor, or the operating-system user."""
    from keel.models.aliases import os_user

    return str(args.actor or os_user())


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


def cmd_serve(args: argparse.Namespace) -> int:
    from keel import state
    from keel.serving.server import serve
    from keel.serving.settings import ServingSettings
    from keel.settings import StateSettings

    # Refuse to start on a store that is not there (it would wait forever for models).
    state.require(StateSettings(), registry=True)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    serve(ServingSettings(**overrides))
    return 0


def _keys(create: bool) -> Any:
    """The key store; only `keys add` may create the state it lives in."""
    from keel.serving.database import Database
    from keel.serving.keys import KeyStore
    from keel.settings import StateSettings
    from keel.state import announce

    state = StateSettings()
    if create:
        state.home_dir.mkdir(parents=True, exist_ok=True)
        announce(state)
    else:
        state = _state(registry=False, log=True)
    db = Database(state.log_url)
    db.create_schema()
    return KeyStore(db)


def cmd_keys(args: argparse.Namespace) -> int:
    store = _keys(create=args.keys_command == "add")
    if args.keys_command == "add":
        if args.if_missing and any(k.name == args.name for k in store.list_keys() if not k.revoked_at):
            print(f"key {args.name!r} exists; not creating another (--if-missing)")
            return 0
        key = store.add(args.name, args.role, args.rate)
        print(f"created key {args.name!r} with roles {', '.join(sorted(args.role))}; it is shown only once:")
        print(f"export KEEL_KEY={key}")
    elif args.keys_command == "list":
        for k in store.list_keys():
            state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
            print(f"{k.name}\t{','.join(sorted(k.roles))}\t{k.created_at}\t{state}")
    elif args.keys_command == "rotate":
        key = store.rotate(args.name)
        print(f"key {args.name!r} replaced (same roles); the old key no longer works. Shown only once:")
        print(f"export KEEL_KEY={key}")
    else:
        store.revoke(args.name)
        print(f"revoked key {args.name!r}")
    return 0


def cmd_verify_log(args: argparse.Namespace) -> int:
    from keel.decision_log.commands import verify_log
    from keel.settings import StateSettings

    state: StateSettings = _state(registry=False, log=True)
    return verify_log(state.log_url, Path(args.checkpoint) if args.checkpoint else None)


def cmd_log_key(args: argparse.Namespace) -> int:
    from keel.decision_log.commands import log_key_create

    return log_key_create(Path(args.file) if args.file else None, args.rotate)


def cmd_simulate(args: argparse.Namespace) -> int:
    from keel.serving.simulate import SimulationConfig, run_simulation
    from keel.simulation_progress import simulation_progress

    key = args.key or os.environ.get("KEEL_KEY", "")
    if not key:
        raise InvalidInput(
            "no API key: pass --key or export KEEL_KEY "
            "(`keel keys add NAME --role decide feedback` makes one)"
        )
    cfg = SimulationConfig(
        url=args.url,
        key=key,
        models=tuple(_models(args.model)),
        cases=args.cases,
        scenario=args.scenario,
        batch_size=args.batch_size,
        rate=args.rate,
        duration=args.duration,
        feedback_share=args.feedback_share,
        seed=args.seed,
    )
    with simulation_progress(cfg) as progress:
        report = run_simulation(cfg, progress=progress)
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if not report.errors else 1


def cmd_monitor(args: argparse.Namespace) -> int:
    from keel.monitoring.checks import COULD_NOT_RUN

    try:
        return _monitor(args)
    except KeelError:
        raise  # main() prints its message; monitor's exit is 3
    except Exception as exc:  # every failure to run is one clear line and exit 3, never a traceback
        print(f"keel: monitor could not run: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return COULD_NOT_RUN


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _monitor(args: argparse.Namespace) -> int:
    from keel.console import stage
    from keel.monitoring.checks import COULD_NOT_RUN
    from keel.serving.database import Database

    state = _state(registry=args.target != "explain", log=True)
    db = Database(state.log_url)
    if args.target == "explain":
        return _explain(db, state, args)
    from keel.monitoring.log_reader import LogReader
    from keel.monitoring.monitor import model_names, monitor_model, parse_window
    from keel.monitoring.publish import publish
    from keel.monitoring.settings import MonitorSettings

    settings = MonitorSettings()
    start, end = parse_window(args.window or settings.window)
    out_root = Path(args.out) if args.out else state.home_dir / "reports"
    reader = LogReader(db, include_batch=args.include_batch)
    worst = 0
    results = []
    for name in model_names(args.target):
        try:
            with stage(f"{name}: monitoring {args.window or settings.window}"):
                result = monitor_model(name, reader, start, end, out_root, settings, state.home_dir / "cache")
        except Exception as exc:  # `monitor all` goes on with the other models
            message = exc.message if isinstance(exc, KeelError) else f"{type(exc).__name__}: {_one_line(exc)}"
            print(f"{name}: could not run: {message}", file=sys.stderr)
            worst = max(worst, COULD_NOT_RUN)
            continue
        results.append(result)
        worst = max(worst, result.exit_code)
        _guard_canary(name, db, state)
        if args.json:
            print(json.dumps(result.summary, default=str))
            continue
        print(f"{name}: {result.status.upper()} - {result.recommendation}")
        for v in result.verdicts:
            print(f"  {v.status:<8} {v.check:<24} {v.detail}")
        if result.paths:
            print(f"  report: {result.paths.index_html}")
    for problem in publish(results, out_root, settings):
        print(f"keel: {problem}", file=sys.stderr)
    return worst


def _explain(db: Any, state: Any, args: argparse.Namespace) -> int:
    from keel.monitoring.explain_report import decision_context, render_decision
    from keel.serving.decision_log import DecisionLog

    if not args.decision_id:
        raise InvalidInput("monitor explain needs a DECISION_ID (a decision's `decision_id`)")
    log = DecisionLog(db)
    row = log.get_decision(args.decision_id)
    if row is None:
        print(f"keel: no decision {args.decision_id}", file=sys.stderr)
        return 3
    out = (
        Path(args.out) if args.out else state.home_dir / "reports" / "decisions" / f"{args.decision_id}.html"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {**row["record"], "caller": row["caller"]}
    feedback = [f["record"] for f in log.feedback_for(args.decision_id)]
    path = render_decision(record, feedback, out, decision_context(record, state.home_dir / "cache"))
    print(path)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from keel.status import status_lines

    for line in status_lines(as_json=args.json):
        print(line)
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each argument's default, except where there is none to show (flags, unset options)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.help is None:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Every (sub)command's parser: help shows defaults; subparsers inherit the class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keel-decisions")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return keel.__version__


def cmd_score(args: argparse.Namespace) -> int:
    from keel.serving.batch_cli import score

    return score(args)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="keel",
        description="Serve and monitor business decision models (see README.md).",
        epilog="exit status: 0 ok; 1 the command found a problem; 2 wrong arguments or input; "
        "3 the state or service it needs is not there (keel monitor: 0 ok, 1 warning, 2 critical, "
        "3 could not run)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train, evaluate and register a model (new version -> challenger)")
    p.add_argument("model", help=f"{' | '.join(MODEL_NAMES)} | all")
    p.add_argument("--data", help="CSV or Parquet file satisfying the contract (default: generated data)")
    p.add_argument("--rows", type=int, help="rows to generate (default: KEEL_TRAIN_ROWS or 40000)")
    p.add_argument("--seed", type=int, help="generator and training seed (default: KEEL_TRAIN_SEED or 7)")
    p.add_argument("--if-missing", action="store_true", help="skip models that already have a champion")
    p.add_argument(
        "--contract", help="contract YAML defining the model (any name; needs --data); sealed in the version"
    )
    p.add_argument("--policy", help="policy YAML sealed in the version (default: the packaged one, if any)")
    p.add_argument(
        "--from-log",
        action="store_true",
        help="add reviewed cases from the decision log (overrides, labelled abstentions) and "
        "compare the new challenger with the champion on the newest reviewed cases",
    )
    p.add_argument(
        "--segment-field",
        help="certify a threshold per value of this segment field (e.g. region), jointly with the "
        "overall one (default KEEL_TRAIN_SEGMENT_FIELDS)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("promote", help="move champion to a version after its promotion gates pass")
    p.add_argument("model", help="model name (see keel models)")
    p.add_argument("version", help="registered version number (see keel models)")
    p.add_argument("--force", action="store_true", help="move even if gates fail (needs --reason)")
    p.add_argument("--reason", help="why; recorded in the alias history")
    p.add_argument("--actor", help="who moves it (default: the operating-system user)")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("approve", help="second person's approval of a pending promotion (two-person rule)")
    p.add_argument("model")
    p.add_argument("version")
    p.add_argument("--actor", help="who approves (default: the operating-system user)")
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser("rollback", help="return champion to the previous champion")
    p.add_argument("model")
    p.add_argument("--reason", help="why; recorded in the alias history")
    p.add_argument("--actor", help="who rolls back (default: the operating-system user)")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser(
        "shadow", help="score live traffic with a version beside the champion (logged, never returned)"
    )
    p.add_argument("model")
    p.add_argument("version", help="registered version, or off")
    p.add_argument("--reason", help="why; recorded in the alias history")
    p.add_argument("--actor", help="who moves it (default: the operating-system user)")
    p.set_defaults(func=cmd_shadow)

    p = sub.add_parser("canary", help="serve a version to a deterministic share of cases (by case hash)")
    p.add_argument("model")
    p.add_argument("version", help="registered version, or off")
    p.add_argument("--share", type=float, help="fraction of cases the canary decides, e.g. 0.1")
    p.add_argument(
        "--auto-rollback",
        action="store_true",
        help="stop the canary when its reviewed override rate is worse than the champion's "
        "beyond KEEL_PROMOTE_OVERRIDE_TOLERANCE (checked by keel monitor and keel compare)",
    )
    p.add_argument("--reason", help="why; recorded in the alias history")
    p.add_argument("--actor", help="who moves it (default: the operating-system user)")
    p.set_defaults(func=cmd_canary)

    p = sub.add_parser(
        "compare", help="champion vs shadow or canary on live traffic and feedback, per segment"
    )
    p.add_argument("model")
    p.add_argument("--window", help="7d, 24h, 30m or START..END (default KEEL_MONITOR_WINDOW or 7d)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("history", help="every alias move of a model: when, who, from, to, gates, reason")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print the JSON of GET /v1/models/{model}/history")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("models", help="list registered champion, challenger, shadow and canary versions")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("serve", help="run the decision service")
    p.add_argument("--host", help="interface to bind (default: KEEL_SERVE_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default: KEEL_SERVE_PORT or 3000)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "keys",
        help="API keys: add, list, revoke, rotate (a new key is printed once; only its hash is stored)",
    )
    ksub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    k = ksub.add_parser("add", help="create a key and print it once")
    k.add_argument("name", help="who uses the key; recorded as the caller of every decision")
    k.add_argument(
        "--role",
        nargs="+",
        action="extend",
        required=True,
        choices=["decide", "feedback", "read", "admin"],
        help="one or more roles; repeat --role or list several after one",
    )
    k.add_argument("--if-missing", action="store_true", help="do nothing if an active key has this name")
    k.add_argument("--rate", type=float, help="requests per second this key may make (default: KEEL_KEYS_*)")
    ksub.add_parser("list", help="list keys (names, roles, state; never the keys)")
    k = ksub.add_parser("revoke", help="revoke a key (its name can be used again)")
    k.add_argument("name", help="the key's name")
    k = ksub.add_parser(
        "rotate", help="replace a key with a new one of the same name and roles (e.g. a lost key)"
    )
    k.add_argument("name", help="the key's name")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("simulate", help="send realistic traffic and reviewer feedback to a running service")
    p.add_argument("--url", default="http://127.0.0.1:3000", help="the running service")
    p.add_argument("--key", help="API key with decide and feedback roles (default: $KEEL_KEY)")
    p.add_argument("--model", default="all", help="a model name or all")
    p.add_argument("--cases", type=int, default=500, help="cases per model")
    p.add_argument(
        "--scenario",
        default="none",
        help="none | covariate_shift | concept_shift | segment_overrides | region_process_change",
    )
    p.add_argument("--batch-size", type=int, default=20, help="cases per decide request")
    p.add_argument("--rate", type=float, default=0.0, help="max requests per second (0 = unthrottled)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = no limit)")
    p.add_argument("--feedback-share", type=float, default=0.3, help="share of decided cases reviewed")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated cases and reviewers")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "monitor",
        help="drift, override and process-drift reports (exit 0 ok, 1 warn, 2 alert, "
        "3 could not run); `monitor explain DECISION_ID` renders one decision",
    )
    p.add_argument("target", help="a registered model's name | all | explain")
    p.add_argument("decision_id", nargs="?", help="with explain: the decision to render")
    p.add_argument(
        "--window", help="7d, 24h, 30m or START..END in ISO 8601 (default KEEL_MONITOR_WINDOW or 7d)"
    )
    p.add_argument("--out", help="report folder (default $KEEL_HOME/reports) or, with explain, the HTML file")
    p.add_argument("--json", action="store_true", help="print one JSON summary line per model")
    p.add_argument(
        "--include-batch", action="store_true", help="also count batch decisions (keel score --log)"
    )
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser(
        "score", help="decide a Parquet/CSV file of cases in batch, exactly as the online route would"
    )
    p.add_argument("model", help="model name (see keel models)")
    p.add_argument("--input", required=True, help="Parquet or CSV file of cases (contract fields, case_id)")
    p.add_argument("--output", required=True, help="decisions: .parquet, .csv or .jsonl")
    p.add_argument("--errors", help="rejected cases with field-level problems (default OUTPUT.errors.SUFFIX)")
    p.add_argument("--engine", choices=["local", "spark"], default="local")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", help="model version (default: the champion)")
    which.add_argument("--alias", help="registry alias (default champion)")
    p.add_argument("--log", action="store_true", help="record the decisions in the decision log, as batch")
    p.add_argument("--run-id", help="names the run in the log (default: from version, file and chunking)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("verify-log", help="check the decision log's hash chains on one snapshot")
    p.add_argument("--checkpoint", help="signed checkpoint file: check the earlier ones, append a new one")
    p.set_defaults(func=cmd_verify_log)

    p = sub.add_parser("log-key", help="create (or --rotate) the chain key file every replica receives")
    lsub = p.add_subparsers(dest="log_key_command", required=True)
    k = lsub.add_parser("create", help="write a new key file (default $KEEL_LOG_KEY_FILE)")
    k.add_argument("--file", help="where to write it")
    k.add_argument("--rotate", action="store_true", help="add a new current key to an existing file")
    p.set_defaults(func=cmd_log_key)
    p = sub.add_parser(
        "status", help="state directory, MLflow store and decision log in use; models, versions, log size"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    p.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from keel.console import quiet_dependencies

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_dependencies()
    args = build_parser().parse_args(argv)
    handler: Handler = args.func
    try:
        return handler(args)
    except KeelError as exc:
        # One line in the user's words; the exit code says which kind of problem it was.
        text = first_problem(exc) if isinstance(exc, InvalidInput) else exc.message
        print(f"keel: {text}", file=sys.stderr)
        return int(ExitCode.NO_STATE) if args.command == "monitor" else exc.exit_code
    except KeyboardInterrupt:
        print("keel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
