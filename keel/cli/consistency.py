"""`keel consistency MODEL`: a counterfactual audit of logged decisions (keel.monitoring.consistency)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from keel.cli.common import _models, _state
from keel.errors import FieldError, InvalidInput

__all__ = ["cmd_consistency"]


def cmd_consistency(args: argparse.Namespace) -> int:
    """Exit 0, or 1 when a field declared invariant changes decisions beyond its tolerance."""
    from keel.decision_log.database import Database
    from keel.monitoring.consistency import audit_window, render
    from keel.monitoring.log_reader import LogReader
    from keel.monitoring.monitor import parse_window
    from keel.terminal import stage

    if args.sample < 1:
        raise InvalidInput("--sample must be at least 1", [FieldError(-1, "sample", "at least 1")])
    state = _state(registry=True, log=True)  # first: reading the registry's names needs it there
    (name,) = _models(args.model, registered=True)
    start, end = parse_window(args.window)
    reader = LogReader(Database(state.log_url), include_batch=args.include_batch)
    with stage(f"{name}: counterfactual audit over {args.window}"):
        report = audit_window(
            reader, name, start, end, args.sample, state.home_dir / "cache", args.seed, adherence=True
        )
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        Console(width=160).print(render(report))
    return 1 if report.failed else 0
