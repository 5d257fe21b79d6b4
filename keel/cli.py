"""`keel` command line. Heavy imports happen inside each command so `--help` stays fast."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from feature_defs.contract import MODEL_NAMES
from keel.errors import InvalidInput, KeelError

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
    from keel.settings import StateSettings, prepare_state
    from models.registry import has_alias
    from training.data import read_table
    from training.generators import generate
    from training.registration import train_and_register
    from training.settings import TrainingSettings

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
        reg = train_and_register(name, frame, state, settings, source=source)
        m, r = reg.result.metrics, reg.result.risk
        print(
            f"{name}: registered version {reg.version} as {', '.join(reg.aliases)} "
            f"(accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}, ECE {m['ece']:.3f}; "
            f"alpha={r.alpha} delta={r.delta} threshold={r.threshold:.4f} coverage {m['coverage']:.3f}, "
            f"selective error {m['selective_error']:.4f} on test)"
        )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from models.registry import promote

    _state()
    ref = promote(_models(args.model)[0], args.version)
    print(f"{ref.name}: champion -> version {ref.version}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from models.registry import CHALLENGER, CHAMPION, resolve

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
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("promote", help="move the champion alias to a model version")
    p.add_argument("model")
    p.add_argument("version")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("models", help="list registered champion and challenger versions")
    p.set_defaults(func=cmd_models)
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
        return 2
    except KeelError as exc:
        print(f"keel: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
