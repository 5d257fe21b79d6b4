"""`keel score`: argument handling around serving/batch.py; prints one JSON summary line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from keel.decision_log import DecisionLog
from keel.decision_log.database import Database
from keel.errors import FieldError, InvalidInput
from keel.feature_defs.contract import MODEL_NAMES
from keel.serving.batch import (
    BatchJob,
    BatchResult,
    BatchSettings,
    run_correlation,
    run_local,
    served_version,
)
from keel.serving.batch_io import error_path, table_format
from keel.serving.model_set import Served
from keel.settings import StateSettings, prepare_state

__all__ = ["score"]


def score(args: argparse.Namespace) -> int:
    if args.model not in MODEL_NAMES:
        raise InvalidInput(f"unknown model {args.model!r}; choose from {', '.join(MODEL_NAMES)}")
    state = prepare_state(StateSettings())
    settings = BatchSettings()
    output = Path(args.output)
    context, traceparent = run_correlation(args.context, args.traceparent)
    job = BatchJob(
        model=args.model,
        input=Path(args.input),
        output=output,
        errors=Path(args.errors) if args.errors else error_path(output),
        version=args.version,
        alias=args.alias,
        log=args.log,
        run_id=args.run_id,
        context=context,
        traceparent=traceparent,
    )
    if not job.input.is_file():
        raise InvalidInput(f"no input file {job.input}", [FieldError(-1, "input", "file not found")])
    table_format(job.input, reading=True)
    table_format(job.output)
    table_format(job.errors)
    cache_dir = state.home_dir / "cache"
    served = served_version(job.model, job.version, job.alias, cache_dir)
    log = DecisionLog(Database(state.log_url)).open() if job.log else None
    try:
        result = _run(args.engine, job, served, settings, log, cache_dir)
    finally:
        if log is not None:
            log.close()
    print(json.dumps(result.to_dict()))
    if result.rejected:
        print(
            f"keel: {result.rejected} case(s) rejected with {result.field_errors} field error(s); "
            f"see {job.errors}",
            file=sys.stderr,
        )
    return 0


def _run(
    engine: str,
    job: BatchJob,
    served: Served,
    settings: BatchSettings,
    log: DecisionLog | None,
    cache_dir: Path,
) -> BatchResult:
    if engine == "spark":
        from keel.serving.batch_spark import run_spark

        return run_spark(job, served, settings, log)
    return run_local(job, served, settings, log, cache_dir=cache_dir)
