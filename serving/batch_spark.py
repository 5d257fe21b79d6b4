"""`keel score --engine spark`: the batch run on Apache Spark, through MLflow's `spark_udf`.

Spark reads the input, numbers its rows (input order), and validates every case in its Python
workers with the contract; the valid cases go through `mlflow.pyfunc.spark_udf` on the registered
models-from-code pyfunc (no pickled model is shipped: each worker runs serving/pyfunc_model.py on
the version's data files), which returns each case's decision record built by the online path's
code. Spark writes decisions and rejected cases as Parquet parts; the driver then streams them, in
input order and a bounded number of rows at a time, into the same output files `--engine local`
writes (and, with --log, into the decision log, where the hash chain makes writes sequential).

Any cluster works through the usual Spark settings (spark-submit, SPARK_* or KEEL_BATCH_SPARK_MASTER);
alone, it runs in local mode on every core.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

from keel.decision_log import DecisionLog
from keel.errors import FieldError, InvalidInput
from keel.feature_defs.contract import Contract, load_contract_text
from keel.models.decision_model import DecisionModel
from keel.serving.batch import (
    BatchJob,
    BatchResult,
    BatchSettings,
    ChunkDecider,
    Decided,
    RunOutput,
    run_id_for,
    served_from_versions,
    validate_cases,
)
from keel.serving.batch_io import (
    Chunk,
    check_columns,
    context_columns,
    frame_cases,
    input_columns,
    table_format,
)
from keel.serving.model_set import Served

__all__ = ["records_json", "run_spark"]

_DECIDERS: dict[tuple[int, str], ChunkDecider] = {}
_SPARK_TYPES = {"float": "double", "int": "bigint", "bool": "boolean", "category": "string"}


def records_json(model: DecisionModel, frame: Any, versions_json: str) -> list[str]:
    """In a Spark worker: each case's record as JSON, or `{"errors": [...]}` for an invalid case."""
    key = (id(model), versions_json)
    decider = _DECIDERS.get(key)
    if decider is None:
        decider = _DECIDERS[key] = ChunkDecider(served_from_versions(model, json.loads(versions_json)))
    decided = decider.decide(Chunk(0, frame_cases(frame, model.contract)))
    out = _errors_json(decided, len(frame))
    for row, record in zip(decided.rows, decided.records, strict=True):
        out[row] = json.dumps(record, separators=(",", ":"))
    return out


def _errors_json(decided: Decided, n: int) -> list[str]:
    out = [""] * n
    by_row: dict[int, list[dict[str, str]]] = {}
    for e in decided.errors:
        by_row.setdefault(e.row, []).append({"field": e.field, "problem": e.problem})
    for row, problems in by_row.items():
        out[row] = json.dumps({"errors": problems})
    return out


def _session(settings: BatchSettings) -> Any:
    from pyspark.sql import SparkSession

    # Workers must run this interpreter (Keel and MLflow installed), not whatever `python3` is.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("keel-score").config("spark.ui.showConsoleProgress", "false")
    if settings.spark_master:
        builder = builder.master(settings.spark_master)
    return builder.getOrCreate()


def _read(spark: Any, path: Path, contract: Contract) -> Any:
    columns = input_columns(path)
    check_columns(columns, contract)
    if table_format(path, reading=True) == "parquet":
        return spark.read.parquet(path.as_posix())
    kinds = {f.name: _SPARK_TYPES[f.type] for f in contract.fields} | {"case_id": "string"}
    schema = ", ".join(f"`{c}` {kinds[c]}" for c in columns)
    # Only an empty cell is missing: "NA" is a region, not a null (as `--engine local` reads it).
    return spark.read.csv(path.as_posix(), header=True, schema=schema, nullValue="", mode="PERMISSIVE")


def _numbered(df: Any) -> Any:
    """Adds `_row`, the 0-based input row: partition offsets from one count over the partition ids
    that `monotonically_increasing_id` carries in its upper bits."""
    from pyspark.sql import functions as F

    df = df.withColumn("_mid", F.monotonically_increasing_id())
    counts = sorted(
        (int(r["p"]), int(r["n"]))
        for r in df.groupBy(F.shiftright(F.col("_mid"), 33).alias("p")).agg(F.count("*").alias("n")).collect()
    )
    offsets, total = [], 0
    for p, n in counts:
        offsets += [F.lit(p), F.lit(total)]
        total += n
    offset = F.create_map(*offsets)[F.shiftright(F.col("_mid"), 33)] if offsets else F.lit(0)
    return df.withColumn("_row", offset + (F.col("_mid").bitwiseAND((1 << 33) - 1))).drop("_mid")


def _validator(contract_text: str) -> Any:
    """mapInPandas function: adds `_errors` (JSON list of field problems, null when valid)."""

    def validate(frames: Iterator[Any]) -> Iterator[Any]:
        contract = load_contract_text(contract_text)
        for frame in frames:
            cases = frame_cases(frame.drop(columns=["_row"]), contract)
            _, errors, _ = validate_cases(contract, cases)
            by_row: dict[int, list[dict[str, str]]] = {}
            for e in errors:
                by_row.setdefault(e.row, []).append({"field": e.field, "problem": e.problem})
            frame["_errors"] = [json.dumps(by_row[i]) if i in by_row else None for i in range(len(frame))]
            yield frame

    return validate


def run_spark(job: BatchJob, served: Served, settings: BatchSettings, log: DecisionLog | None) -> BatchResult:
    import mlflow.pyfunc
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    started = time.perf_counter()
    if own := context_columns(input_columns(job.input)):
        raise InvalidInput(
            "--engine spark does not read context columns",
            [
                FieldError(-1, c, "per-row contexts need --engine local; --context sets one per run")
                for c in own
            ],
        )
    ref = served.loaded.ref
    contract = served.loaded.model.contract
    uri = f"models:/{ref.name}/{ref.version}"
    if "keel_versions" not in {p.name for p in (mlflow.models.get_model_info(uri).signature.params or [])}:
        raise InvalidInput(
            f"{ref.name} version {ref.version} was registered before batch scoring existed",
            [FieldError(-1, "version", "retrain it (keel train) to score it with --engine spark")],
        )
    run_id = job.run_id or f"spark-{run_id_for(served, job.input, settings.chunk_rows)}"
    result = BatchResult(
        job.model, ref.version, "spark", run_id, output=str(job.output), errors=str(job.errors)
    )
    staging = job.output.with_name(f".{job.output.name}.spark")
    shutil.rmtree(staging, ignore_errors=True)
    spark = _session(settings)
    df = _numbered(_read(spark, job.input, contract))
    schema = T.StructType([*df.schema.fields, T.StructField("_errors", T.StringType())])
    checked = df.mapInPandas(_validator(contract.source), schema)
    id_column = F.col("case_id") if "case_id" in df.columns else F.lit(None).cast("string")
    rejected = checked.filter(F.col("_errors").isNotNull())
    rejected.select("_row", id_column.alias("case_id"), "_errors").write.parquet(
        (staging / "errors").as_posix()
    )
    udf = mlflow.pyfunc.spark_udf(
        spark,
        uri,
        result_type="record string",
        env_manager="local",
        params={"keel_versions": json.dumps(served.versions, sort_keys=True)},
    )
    # The signature's types: a file may hold an int field as double (a column with a gap); the
    # cases left are valid, so their values are whole numbers and the cast loses nothing.
    kinds = {f.name: _SPARK_TYPES[f.type] for f in contract.fields} | {"case_id": "string"}
    features = [
        F.col(c).cast(kinds[c]).alias(c) for c in ("case_id", *contract.field_names) if c in df.columns
    ]
    valid = checked.filter(F.col("_errors").isNull())
    valid.select("_row", udf(F.struct(*features)).record.alias("record")).write.parquet(
        (staging / "decisions").as_posix()
    )
    spark_seconds = time.perf_counter() - started
    _collect(staging, job, settings, log, result, served.spec.segment_fields)
    shutil.rmtree(staging, ignore_errors=True)
    result.seconds = round(time.perf_counter() - started, 3)
    result.extra = {"spark_seconds": round(spark_seconds, 3), "spark_version": spark.version}
    return result


def _parts(folder: Path, columns: list[str], rows: int) -> Iterator[dict[str, list[Any]]]:
    """The columns of Spark's Parquet parts in input order, `rows` at a time."""
    files = sorted(p.as_posix() for p in folder.glob("part-*.parquet"))
    if not files:
        return
    last = -1
    for batch in ds.dataset(files, format="parquet").to_batches(columns=columns, batch_size=rows):
        part = {c: batch.column(c).to_pylist() for c in columns}
        if part["_row"] and part["_row"][0] <= last:
            raise RuntimeError("Spark parts are not in input order")  # a bug, never silently reordered
        last = part["_row"][-1] if part["_row"] else last
        yield part


def _collect(
    staging: Path,
    job: BatchJob,
    settings: BatchSettings,
    log: DecisionLog | None,
    result: BatchResult,
    segments: Sequence[str],
) -> None:
    """Stream Spark's parts into the output and error files (and the log), in input order."""
    with RunOutput(job, settings, log, result, segments) as output:
        for no, part in enumerate(_parts(staging / "decisions", ["_row", "record"], settings.chunk_rows)):
            output.decisions(no, part["_row"], [json.loads(t) for t in part["record"]])
        for part in _parts(staging / "errors", ["_row", "case_id", "_errors"], settings.chunk_rows):
            decided = Decided([], [], [], dict(zip(part["_row"], part["case_id"], strict=True)))
            for row, text in zip(part["_row"], part["_errors"], strict=True):
                decided.errors += [FieldError(row, e["field"], e["problem"]) for e in json.loads(text)]
            output.errors(decided)
    result.rows = result.decided + result.rejected
