"""Batch decisions (`keel score`): a file of cases decided exactly as the online route decides them.

Every case is validated against the version's contract; cases with field-level problems go to
the error file and are never scored. The others are decided by the online path's own code
(`Decider._decide_valid`: model, abstention, exact explanation of the decided class, policy,
versions), so a batch decision and an online decision of the same case are the same decision.
With `log`, the decisions are appended to the decision log, marked as batch (the caller column is
`batch:<caller>` and the record carries `batch`), chunk by chunk under an idempotency key derived
from the run, so a re-run or a resumed run writes nothing twice and returns what was logged.

Correlation context (keel.client.context) comes per run (`BatchJob.context`, with a
`traceparent`) and per row (`context.<field>` columns, whose fields win over the run's), is
checked as a decide request's is (a row with a bad context is rejected with field errors) and
is stored with the decision, never a model input.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from keel.client.context import parse_traceparent
from keel.decision_log import DecisionLog, reads, reject_changed_replay
from keel.decision_log.audit_plans import AuditPlan, PlanBook
from keel.decision_log.chain import BATCH
from keel.decision_log.database import Database
from keel.decision_log.rows import log_row
from keel.errors import FieldError, InvalidInput
from keel.feature_defs.contract import Contract
from keel.models import registry
from keel.models.decision_model import DecisionModel
from keel.models.registry import LoadedModel, VersionRef
from keel.serving.batch_io import (
    BATCH_CALLER_PREFIX,
    DECISION_COLUMNS,
    ERROR_COLUMNS,
    Chunk,
    TableWriter,
    decision_row,
    read_chunks,
)
from keel.serving.batch_pool import POOL_AFTER_ROWS, Deciders, Recipe
from keel.serving.correlation import attach, checked_context, row_contexts
from keel.serving.decider import Decider, request_digest
from keel.serving.decision_record import public, with_audit
from keel.serving.metrics import Metrics
from keel.serving.model_set import ModelSet, Served
from keel.serving.settings import ServingSettings

if TYPE_CHECKING:
    from keel.decision_log.records import DecisionRecord

__all__ = [
    "BATCH_CALLER_PREFIX",
    "BatchJob",
    "BatchResult",
    "BatchSettings",
    "ChunkDecider",
    "Decided",
    "RunOutput",
    "run_correlation",
    "run_local",
    "served_version",
    "validate_cases",
]


class BatchSettings(BaseSettings):
    """Chunking, logging identity and Spark settings of `keel score` (KEEL_BATCH_*)."""

    model_config = SettingsConfigDict(env_prefix="KEEL_BATCH_", extra="ignore")

    chunk_rows: int = Field(default=5000, ge=1, le=1_000_000)
    """Cases read, decided and written at a time: memory is bounded by one chunk."""

    caller: str = "score"
    """Caller name logged for batch decisions (stored as `batch:<caller>`)."""

    spark_master: str | None = None
    """Spark master URL; unset: whatever spark-submit or SPARK_* settings say, else local[*]."""

    workers: int = Field(default=0, ge=0, le=256)
    """Processes deciding chunks side by side in `--engine local`; 0: one per core, past 10,000 rows."""

    def local_workers(self) -> tuple[int, int]:
        """(worker processes, rows decided in-process before they start)."""
        if self.workers:
            return self.workers, 0
        return os.cpu_count() or 1, POOL_AFTER_ROWS


@dataclass(frozen=True)
class BatchJob:
    model: str
    input: Path
    output: Path
    errors: Path
    version: str | None = None
    alias: str | None = None
    log: bool = False
    run_id: str | None = None
    """Names the run in the decision log; default: digest of model version, input file and chunking."""
    context: dict[str, Any] | None = None
    """The run's correlation context (checked keel.client.context.Context fields), for every row."""
    traceparent: str | None = None
    """A valid W3C traceparent stored with every decision of the run."""


@dataclass
class BatchResult:
    model: str
    version: str
    engine: str
    run_id: str
    rows: int = 0
    decided: int = 0
    abstained: int = 0
    rejected: int = 0
    field_errors: int = 0
    logged: int = 0
    replayed: int = 0
    """Decisions that an earlier run of the same run id had logged (returned, not written again)."""
    seconds: float = 0.0
    output: str = ""
    errors: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Decided:
    """One chunk's outcome: a public record per valid case (with its input row), errors for the rest."""

    rows: list[int]
    records: list[DecisionRecord]
    errors: list[FieldError]
    """Field errors with `row` the input row number."""
    rejected_case_ids: dict[int, Any]
    contexts: list[dict[str, Any]] | None = None
    """Each record's correlation context (the run's merged with its row's); None: no context."""


def run_correlation(context: str | None, traceparent: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """A run's context (JSON text of a keel.client.context.Context) and traceparent, checked: a
    wrong one stops the run before anything is decided (field errors, exit 2). Unlike the
    header online, a malformed traceparent is refused: it was given on purpose."""
    errors: list[FieldError] = []
    fields = None
    if context is not None:
        try:
            fields = checked_context(json.loads(context), -1, errors)
        except json.JSONDecodeError as exc:
            errors.append(FieldError(-1, "context", f"not JSON: {exc.msg}"))
    if traceparent is not None and parse_traceparent(traceparent) is None:
        errors.append(FieldError(-1, "traceparent", "not a W3C traceparent (version-traceid-parentid-flags)"))
    if errors:
        raise InvalidInput("the run's correlation context is wrong", errors)
    return fields or None, traceparent.strip() if traceparent else None


def served_version(model: str, version: str | None, alias: str | None, cache_dir: Path) -> Served:
    """The registered version to decide with (champion by default), verified like `keel serve` loads it."""
    if version is not None and alias is not None:
        raise InvalidInput("give --version or --alias, not both", [FieldError(-1, "version", "conflicts")])
    ref = registry.get_version(model, version) if version else registry.resolve(model, alias or "champion")
    return Served(registry.load(ref, cache_dir))  # the policy sealed in the version


def served_from_versions(model: DecisionModel, versions: dict[str, Any]) -> Served:
    """A Served for an already loaded model and the `versions` it is registered under (Spark workers
    load the model through MLflow and are told the version); refuses a contract or policy that
    differs from the one the driver resolved."""
    ref = VersionRef(model.name, str(versions["model_version"]), versions.get("alias"), {}, None)
    served = Served(LoadedModel(ref, model))  # the policy sealed in the version
    if served.versions != versions:
        raise InvalidInput(
            "this worker's contract or policy differs from the driver's",
            [FieldError(-1, "versions", f"worker {served.versions} != driver {versions}")],
        )
    return served


class ChunkDecider:
    """Validates and decides chunks of cases with the online path's code (no log writes here)."""

    def __init__(
        self, served: Served, settings: ServingSettings | None = None, context: dict[str, Any] | None = None
    ) -> None:
        self.served = served
        self.context = context
        """The run's correlation context, which each row's own `context.*` cells override."""
        self.contract: Contract = served.loaded.model.contract
        settings = settings or ServingSettings()
        # The online Decider builds the records; its model set and log are never used by
        # `_decide_valid`, so unopened ones stand in.
        self._decider = Decider(
            ModelSet(served.loaded.ref.alias or "champion", Path("."), names=(served.loaded.ref.name,)),
            DecisionLog(Database("sqlite:///:memory:")),
            settings,
            Metrics(),
        )

    def decide(self, chunk: Chunk) -> Decided:
        keep, errors, matrix = validate_cases(self.contract, chunk.cases)
        contexts, bad = row_contexts(self.context, chunk.contexts, len(chunk.cases))
        if bad:  # a row whose context is wrong is rejected, as a case with a wrong field is
            errors = sorted(errors + bad, key=lambda e: (e.row, e.field))
            wrong = {e.row for e in bad}
            still = [j for j, p in enumerate(keep) if p not in wrong]
            keep, matrix = [keep[j] for j in still], (matrix[still] if matrix is not None and still else None)
        rejected = {chunk.first_row + e.row: chunk.cases[e.row].get("case_id") for e in errors}
        shifted = [FieldError(chunk.first_row + e.row, e.field, e.problem) for e in errors]
        if matrix is None:
            return Decided([], [], shifted, rejected)
        cases = [chunk.cases[i] for i in keep]
        records = self._decider._decide_valid(self.served, cases, matrix)
        kept = [contexts[i] for i in keep] if contexts is not None else None
        return Decided([chunk.first_row + i for i in keep], records, shifted, rejected, kept)


def validate_cases(
    contract: Contract, cases: list[dict[str, Any]]
) -> tuple[list[int], list[FieldError], np.ndarray | None]:
    """(positions of the valid cases, field errors of the others, the valid cases' feature matrix)
    with the online validation.

    `validate_records` reports key-level problems (unknown field, bad case_id) before it looks
    at values, so the valid remainder is checked again until it is clean."""
    positions = list(range(len(cases)))
    errors: list[FieldError] = []
    matrix = None
    while positions:
        checked = contract.validate_records([cases[i] for i in positions])
        if checked.matrix is not None:
            matrix = checked.matrix
            break
        bad = {e.row for e in checked.errors}
        errors += [FieldError(positions[e.row], e.field, e.problem) for e in checked.errors]
        positions = [p for j, p in enumerate(positions) if j not in bad]
    errors.sort(key=lambda e: (e.row, e.field))
    return positions, errors, matrix


def run_id_for(served: Served, path: Path, chunk_rows: int) -> str:
    """The default run id: the same file, version and chunking give the same id (and log keys)."""
    h = hashlib.sha256(f"{served.loaded.ref.name}\n{served.loaded.ref.version}\n{chunk_rows}\n".encode())
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()[:24]


class BatchLog:
    """Appends a run's decisions to the decision log, one idempotency key per chunk."""

    def __init__(self, log: DecisionLog, caller: str, run_id: str) -> None:
        self.log = log
        self.caller = f"{BATCH_CALLER_PREFIX}{caller}"
        self.run_id = run_id
        self._plans: PlanBook | None = None

    def _plan(self, model: str) -> AuditPlan:
        """The model's current audit plan, read once per run."""
        if self._plans is None:
            self._plans = PlanBook()
            self._plans.refresh(self.log.db)
        return self._plans.plan(model)

    def append(
        self,
        model: str,
        chunk_no: int,
        rows: list[int],
        records: list[DecisionRecord],
        segments: Sequence[str],
    ) -> list[DecisionRecord]:
        """Log the chunk (or find it logged by an earlier run); returns the logged records.
        `segments`: the deciding version's segment fields (its sealed spec)."""
        key = f"{self.run_id}:{chunk_no}"
        # The digest covers the cases, their input rows and their contexts (only where there are
        # any, so a run without contexts digests as before): a different file or context under
        # the same run id is refused (409), never mixed into the earlier run's decisions.
        digest = request_digest(
            [
                [r, rec["inputs"], rec["context"]] if "context" in rec else [r, rec["inputs"]]
                for r, rec in zip(rows, records, strict=True)
            ]
        )
        earlier = reads.decisions_by_key(self.log.db, self.caller, model, key)
        if earlier:
            return [r["record"] for r in reject_changed_replay(earlier, digest)]
        for row, record in zip(rows, records, strict=True):
            record["batch"] = {"run_id": self.run_id, "row": row}
        with_audit(records, self._plan(model))  # sampled like live decisions, same plan
        out = [log_row(r, i, self.caller, key, digest, segments, origin=BATCH) for i, r in enumerate(records)]

        def replay(conn: Any) -> list[dict[str, Any]] | None:
            found = reads.decisions_by_key(conn, self.caller, model, key)
            return reject_changed_replay(found, digest) if found else None

        stored = self.log.append("decisions", out, replay=replay)
        return [r["record"] for r in stored]


class RunOutput:
    """A run's decision and error files, its optional log, and its counts; a context manager that
    finishes both files on success and removes them on any failure."""

    def __init__(
        self,
        job: BatchJob,
        settings: BatchSettings,
        log: DecisionLog | None,
        result: BatchResult,
        segments: Sequence[str],
    ):
        self.job = job
        self.segments = segments
        """The deciding version's segment fields (its sealed spec), logged as columns."""
        self.result = result
        self.batch_log = BatchLog(log, settings.caller, result.run_id) if log is not None else None
        self.out = TableWriter(job.output, DECISION_COLUMNS)
        self.bad = TableWriter(job.errors, ERROR_COLUMNS)

    def decisions(
        self,
        chunk_no: int,
        rows: list[int],
        records: list[DecisionRecord],
        contexts: list[dict[str, Any]] | None = None,
    ) -> None:
        """Log (idempotently) and write one chunk of decided cases, in input order, each with its
        correlation context (`contexts`, checked) and the run's traceparent."""
        result = self.result
        if contexts is None:  # an engine that reads no context columns: the run's own, if any
            contexts, _ = row_contexts(self.job.context, None, len(records))
        attach(records, contexts, self.job.traceparent)
        if self.batch_log is not None and records:
            fresh = records[0]["decision_id"]
            records = self.batch_log.append(self.job.model, chunk_no, rows, records, self.segments)
            if records[0]["decision_id"] == fresh:
                result.logged += len(records)
            else:
                result.replayed += len(records)
        self.out.write([decision_row(r, public(rec)) for r, rec in zip(rows, records, strict=True)])
        result.decided += len(records)
        result.abstained += sum(1 for rec in records if rec["abstained"])

    def errors(self, decided: Decided) -> None:
        self.bad.write(
            [
                {
                    "row": e.row,
                    "case_id": decided.rejected_case_ids.get(e.row),
                    "field": e.field,
                    "problem": e.problem,
                }
                for e in decided.errors
            ]
        )
        self.result.rejected += len(decided.rejected_case_ids)
        self.result.field_errors += len(decided.errors)

    def __enter__(self) -> RunOutput:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.out.close()
            self.bad.close()
        else:
            self.out.abort()
            self.bad.abort()


def run_local(
    job: BatchJob,
    served: Served,
    settings: BatchSettings,
    log: DecisionLog | None = None,
    progress: Callable[[BatchResult], None] | None = None,
    cache_dir: Path | None = None,
) -> BatchResult:
    """Stream the input through `ChunkDecider`s chunk by chunk into the output and error files:
    with `cache_dir` (where the version's bundle is cached), in `settings.local_workers()`
    processes side by side (serving/batch_pool.py), else in this process."""
    started, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
    run_id = job.run_id or run_id_for(served, job.input, settings.chunk_rows)
    result = BatchResult(
        job.model, served.loaded.ref.version, "local", run_id, output=str(job.output), errors=str(job.errors)
    )
    decider = ChunkDecider(served, context=job.context)
    workers, after_rows = settings.local_workers()
    recipe = Recipe(served.loaded.ref, cache_dir, served.versions, job.context) if cache_dir else None
    with RunOutput(job, settings, log, result, served.spec.segment_fields) as output:
        chunks = read_chunks(job.input, decider.contract, settings.chunk_rows)
        deciders = Deciders(decider, workers, recipe, after_rows)
        for no, (chunk, decided) in enumerate(deciders.decided(chunks)):
            output.decisions(no, decided.rows, decided.records, decided.contexts)
            output.errors(decided)
            result.rows += len(chunk.cases)
            if progress is not None:
                progress(result)
    result.seconds = round(time.perf_counter() - started, 3)
    # CPU time beside wall time: on a shared machine the two differ, and cost per row is the CPU
    # (the workers' included: they have exited by now, so their time is in RUSAGE_CHILDREN).
    result.extra["cpu_seconds"] = round(time.process_time() - cpu + _children_cpu() - children, 3)
    result.extra["workers"] = workers if deciders.spawned else 1
    return result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
