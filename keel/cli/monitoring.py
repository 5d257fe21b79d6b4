"""`keel simulate` and `keel monitor` (a model, all, or explain DECISION_ID)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from keel.cli.common import _models, _one_line, _state
from keel.cli.governance import _guard_canary
from keel.errors import InvalidInput, KeelError


def cmd_simulate(args: argparse.Namespace) -> int:
    from keel.cli.simulate import SimulationConfig, run_simulation
    from keel.cli.simulation_progress import simulation_progress

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
        duplicate_share=args.duplicate_share,
        seed=args.seed,
    )
    with simulation_progress(cfg) as progress:
        report = run_simulation(cfg, progress=progress)
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if not report.errors else 1


def cmd_monitor(args: argparse.Namespace) -> int:
    from keel.monitoring.verdict import COULD_NOT_RUN

    try:
        return _monitor(args)
    except KeelError:
        raise  # main() prints its message; monitor's exit is 3
    except Exception as exc:  # every failure to run is one clear line and exit 3, never a traceback
        print(f"keel: monitor could not run: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return COULD_NOT_RUN


def _monitor(args: argparse.Namespace) -> int:
    from keel.decision_log.database import Database
    from keel.monitoring.verdict import COULD_NOT_RUN
    from keel.terminal import stage

    state = _state(registry=args.target != "explain", log=True)
    db = Database(state.log_url)
    if args.target == "explain":
        return _explain(db, state, args)
    from keel.monitoring.log_reader import LogReader
    from keel.monitoring.monitor import model_names, monitor_model, parse_window
    from keel.monitoring.publish import publish
    from keel.monitoring.run_history import import_reports
    from keel.monitoring.settings import MonitorSettings
    from keel.training.settings import PromotionSettings

    settings = MonitorSettings()
    promotion = PromotionSettings()
    start, end = parse_window(args.window or settings.window)
    out_root = Path(args.out) if args.out else state.home_dir / "reports"
    # The runs and the sequential evidence live in the log's tables (migration 0006 and later).
    db.create_schema()
    imported = import_reports(db, out_root)
    if imported and any(imported):
        print(
            f"keel: imported {imported[0]} earlier runs and {imported[1]} sequential states from "
            f"{out_root} into the decision log; those files are no longer read",
            file=sys.stderr,
        )
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
        _guard_canary(name, db, state, promotion)
        if args.json:
            print(json.dumps(result.summary, default=str))
            continue
        print(f"{name}: {result.status.upper()} - {result.recommendation}")
        for v in result.verdicts:
            print(f"  {v.status:<8} {v.check:<24} {v.detail}")
        if result.paths:
            print(f"  report: {result.paths.index_html}")
    for problem in publish(results, out_root, settings, db, state.artifact_location):
        print(f"keel: {problem}", file=sys.stderr)
    if results:
        _check_event_settings(state.home_dir)
    return worst


def _check_event_settings(home: Path) -> None:
    """The verdicts are queued in the outbox whatever the settings say; a sink setting no
    dispatcher could use (KEEL_MONITOR_WEBHOOK_URL without signing keys, say) is said here too,
    where users of the monitor webhook look, not only when `keel serve` starts."""
    from keel.events.settings import EventSettings

    try:
        EventSettings.load(home)
    except InvalidInput as exc:
        print(f"keel: verdict events are queued but no dispatcher can deliver them: {exc}", file=sys.stderr)


def _explain(db: Any, state: Any, args: argparse.Namespace) -> int:
    from keel.decision_log import DecisionLog
    from keel.monitoring.explain_report import decision_context, render_decision

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
    feedback = [f["record"] for f in log.feedback_for(args.decision_id, row)]
    path = render_decision(record, feedback, out, decision_context(record, state.home_dir / "cache"))
    if "archived" in row:
        where = row["archived"]
        print(f"{args.decision_id}: read from the archive {where['url']}, month {where['month']}")
    print(path)
    return 0
