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

from keel.errors import InvalidInput, KeelError
from keel.feature_defs.contract import MODEL_NAMES

Handler = Callable[[argparse.Namespace], int]


def _models(arg: str) -> list[str]:
    if arg == "all":
        return list(MODEL_NAMES)
    if arg not in MODEL_NAMES:
        raise SystemExit(f"keel: unknown model {arg!r}; choose from {', '.join(MODEL_NAMES)} or all")
    return [arg]


def _state() -> object:
    from keel.settings import StateSettings, prepare_state

    return prepare_state(StateSettings())


def cmd_train(args: argparse.Namespace) -> int:
    from keel.models.registry import has_alias
    from keel.settings import StateSettings, prepare_state
    from keel.training.data import read_table
    from keel.training.generators import generate
    from keel.training.registration import train_and_register
    from keel.training.settings import TrainingSettings

    state = prepare_state(StateSettings())
    overrides = {k: v for k, v in (("rows", args.rows), ("seed", args.seed)) if v is not None}
    settings = TrainingSettings(**overrides)
    names = _models(args.model)
    if args.data and len(names) != 1:
        raise SystemExit("keel: --data needs a single model name")
    for name in names:
        if args.if_missing and has_alias(name):
            print(f"{name}: a champion is registered; skipping (--if-missing)")
            continue
        if args.data:
            frame, source = read_table(args.data), f"file:{args.data}"
        else:
            frame, source = generate(name, settings.rows, settings.seed), f"generator:seed={settings.seed}"
        if args.from_log:
            _train_from_log(name, frame, source, state, settings)
            continue
        reg = train_and_register(name, frame, state, settings, source=source)
        _print_registered(reg)
    return 0


def _print_registered(reg: Any) -> None:
    m, r = reg.result.metrics, reg.result.risk
    print(
        f"{reg.name}: registered version {reg.version} as {', '.join(reg.aliases)} "
        f"(accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}, ECE {m['ece']:.3f}; "
        f"alpha={r.alpha} delta={r.delta} threshold={r.threshold:.4f} coverage {m['coverage']:.3f}, "
        f"selective error {m['selective_error']:.4f} on test)"
    )


def _train_from_log(name: str, original: Any, source: str, state: Any, settings: Any) -> None:
    from keel.feature_defs.contract import load_contract
    from keel.models import registry
    from keel.serving.database import Database
    from keel.training import from_log
    from keel.training.registration import train_and_register

    contract = load_contract(name)
    champion = registry.load_alias(name, registry.CHAMPION, state.home_dir / "cache")
    split = from_log.split_log(from_log.labelled_from_log(Database(state.log_url), contract))
    frame = from_log.mixed_training_frame(original, split.train, contract, settings.seed)
    reg = train_and_register(
        name, frame, state, settings, source=f"log({len(split.train)} reviewed)+{source}"
    )
    _print_registered(reg)
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


def cmd_promote(args: argparse.Namespace) -> int:
    from keel.models.registry import promote

    _state()
    ref = promote(_models(args.model)[0], args.version)
    print(f"{ref.name}: champion -> version {ref.version}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from keel.models.registry import CHALLENGER, CHAMPION, resolve

    _state()
    rows = []
    for name in MODEL_NAMES:
        for alias in (CHAMPION, CHALLENGER):
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
    from keel.serving.server import serve
    from keel.serving.settings import ServingSettings

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    serve(ServingSettings(**overrides))
    return 0


def _keys() -> Any:
    from keel.serving.database import Database
    from keel.serving.keys import KeyStore
    from keel.settings import StateSettings

    state = StateSettings()
    state.home_dir.mkdir(parents=True, exist_ok=True)
    db = Database(state.log_url)
    db.create_schema()
    return KeyStore(db)


def cmd_keys(args: argparse.Namespace) -> int:
    store = _keys()
    if args.keys_command == "add":
        if args.if_missing and any(k.name == args.name for k in store.list_keys() if not k.revoked_at):
            print(f"key {args.name!r} exists; not creating another (--if-missing)")
            return 0
        key = store.add(args.name, args.role)
        print(f"created key {args.name!r} with roles {', '.join(sorted(args.role))}; it is shown only once:")
        print(f"export KEEL_KEY={key}")
    elif args.keys_command == "list":
        for k in store.list_keys():
            state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
            print(f"{k.name}\t{','.join(sorted(k.roles))}\t{k.created_at}\t{state}")
    else:
        store.revoke(args.name)
        print(f"revoked key {args.name!r}")
    return 0


def cmd_verify_log(args: argparse.Namespace) -> int:
    from keel.serving.database import Database, redact
    from keel.serving.decision_log import DecisionLog
    from keel.settings import StateSettings

    state = StateSettings()
    result = DecisionLog(Database(state.log_url)).verify()
    if result.ok:
        print(f"decision log {redact(state.log_url)}: {result.rows_checked} rows, hash chains intact")
        return 0
    print(
        f"decision log BROKEN in table {result.table} at seq {result.bad_seq}: {result.problem} "
        f"({result.rows_checked} rows checked)",
        file=sys.stderr,
    )
    return 1


def cmd_simulate(args: argparse.Namespace) -> int:
    from keel.serving.simulate import SimulationConfig, run_simulation

    key = args.key or os.environ.get("KEEL_KEY", "")
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
    report = run_simulation(cfg)
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if not report.errors else 1


def cmd_monitor(args: argparse.Namespace) -> int:
    from keel.monitoring.checks import COULD_NOT_RUN
    from keel.serving.database import Database
    from keel.settings import StateSettings, prepare_state

    state = prepare_state(StateSettings())
    db = Database(state.log_url)
    if args.target == "explain":
        return _explain(db, state, args)
    from keel.monitoring.log_reader import LogReader
    from keel.monitoring.monitor import monitor_model, parse_window
    from keel.monitoring.settings import MonitorSettings

    settings = MonitorSettings()
    start, end = parse_window(args.window or settings.window)
    out_root = Path(args.out) if args.out else state.home_dir / "reports"
    reader = LogReader(db, include_batch=args.include_batch)
    worst = 0
    for name in _models(args.target):
        try:
            result = monitor_model(name, reader, start, end, out_root, settings, state.home_dir / "cache")
        except KeelError as exc:
            print(f"{name}: could not run: {exc.message}", file=sys.stderr)
            worst = max(worst, COULD_NOT_RUN)
            continue
        worst = max(worst, result.exit_code)
        if args.json:
            print(json.dumps(result.summary, default=str))
            continue
        print(f"{name}: {result.status.upper()} - {result.recommendation}")
        for v in result.verdicts:
            print(f"  {v.status:<8} {v.check:<22} {v.detail}")
        if result.paths:
            print(f"  report: {result.paths.index_html}")
    return worst


def _explain(db: Any, state: Any, args: argparse.Namespace) -> int:
    from keel.monitoring.explain_report import render_decision
    from keel.serving.decision_log import DecisionLog

    if not args.decision_id:
        raise SystemExit("keel: monitor explain needs a DECISION_ID")
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
    path = render_decision(record, [f["record"] for f in log.feedback_for(args.decision_id)], out)
    print(path)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from keel.serving.batch_cli import score

    return score(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keel", description="Serve and monitor business decision models (see README.md)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train, evaluate and register a model (new version -> challenger)")
    p.add_argument("model", help=f"{' | '.join(MODEL_NAMES)} | all")
    p.add_argument("--data", help="CSV or Parquet file satisfying the contract (default: generated data)")
    p.add_argument("--rows", type=int, help="rows to generate (default KEEL_TRAIN_ROWS or 40000)")
    p.add_argument("--seed", type=int, help="generator and training seed")
    p.add_argument("--if-missing", action="store_true", help="skip models that already have a champion")
    p.add_argument(
        "--from-log",
        action="store_true",
        help="add reviewed cases from the decision log (overrides, labelled abstentions) and "
        "compare the new challenger with the champion on the newest reviewed cases",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("promote", help="move the champion alias to a model version")
    p.add_argument("model")
    p.add_argument("version")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("models", help="list registered champion and challenger versions")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("serve", help="run the decision service")
    p.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 3000)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("keys", help="manage API keys (add prints the key once; only its hash is stored)")
    ksub = p.add_subparsers(dest="keys_command", required=True)
    k = ksub.add_parser("add", help="create a key")
    k.add_argument("name")
    k.add_argument("--role", nargs="+", required=True, choices=["decide", "feedback", "read", "admin"])
    k.add_argument("--if-missing", action="store_true", help="do nothing if an active key has this name")
    ksub.add_parser("list", help="list keys (names, roles, state; never the keys)")
    k = ksub.add_parser("revoke", help="revoke a key")
    k.add_argument("name")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("simulate", help="send realistic traffic and reviewer feedback to a running service")
    p.add_argument("--url", default="http://127.0.0.1:3000")
    p.add_argument("--key", help="API key with decide and feedback roles (default: $KEEL_KEY)")
    p.add_argument("--model", default="all", help="a model name or all")
    p.add_argument("--cases", type=int, default=500, help="cases per model")
    p.add_argument(
        "--scenario",
        default="none",
        help="none | covariate_shift | concept_shift | segment_overrides | region_process_change",
    )
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--rate", type=float, default=0.0, help="max requests per second (0 = unthrottled)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = no limit)")
    p.add_argument("--feedback-share", type=float, default=0.3, help="share of decided cases reviewed")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "monitor",
        help="drift, override and process-drift reports (exit 0 ok, 1 warn, 2 alert, "
        "3 could not run); `monitor explain DECISION_ID` renders one decision",
    )
    p.add_argument("target", help=f"{' | '.join(MODEL_NAMES)} | all | explain")
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
    p.add_argument("model", help=" | ".join(MODEL_NAMES))
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

    p = sub.add_parser("verify-log", help="check the decision log's hash chains")
    p.set_defaults(func=cmd_verify_log)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    handler: Handler = args.func
    try:
        return handler(args)
    except InvalidInput as exc:
        print(f"keel: {exc.message}", file=sys.stderr)
        for err in exc.errors:
            where = "" if err.row < 0 else f"row {err.row}, "
            print(f"  {where}{err.field}: {err.problem}", file=sys.stderr)
        return 3 if args.command == "monitor" else 2
    except KeelError as exc:
        print(f"keel: {exc.message}", file=sys.stderr)
        return 3 if args.command == "monitor" else 1


if __name__ == "__main__":
    sys.exit(main())
