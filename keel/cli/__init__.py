"""`keel` command line. Heavy imports happen inside each command so `--help` stays fast."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from keel.cli.common import Handler
from keel.cli.parser import build_parser
from keel.errors import ExitCode, InvalidInput, KeelError, first_problem

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    from keel.terminal import quiet_dependencies

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
