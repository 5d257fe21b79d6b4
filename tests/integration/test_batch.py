"""`keel score`: the same cases through the online route, `--engine local` and `--engine spark`.

Decisions and explanations must be identical (floats to 1e-9), rejected cases must carry the
same field-level problems the online route answers with (422), and `--log` must write each batch
decision once, marked as batch, however often the run is repeated.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from keel.cli.simulate import case_payloads
from keel.decision_log import DecisionLog, reads
from keel.decision_log.database import Database
from keel.errors import Conflict, KeelError
from keel.feature_defs.contract import load_contract
from keel.monitoring.log_reader import LogReader
from keel.serving.batch import (
    BATCH_CALLER_PREFIX,
    BatchJob,
    BatchSettings,
    ChunkDecider,
    run_local,
    served_version,
)
from keel.serving.batch_io import Chunk, error_path
from keel.serving.batch_pool import Deciders, Recipe
from keel.training.generators import generate
from tests.conftest import Store, cli_env, run_keel
from tests.integration.conftest import Server

MODEL = "invoice_classification"
VOLATILE = ("decision_id", "created_at", "audit")
"""Differ between any two decisions of one case, online or batch (the audit draw is keyed by the
decision_id; a batch run samples for audit only when it logs, test_audits.py checks that)."""
BROKEN = [
    ("amount", -5.0, "below the minimum"),
    ("currency", "XXX", "unknown category"),
    ("line_count", None, "must not be null"),
    ("case_id", "x" * 201, "1 to 200 characters"),
]


def same(a: Any, b: Any, path: str = "") -> None:
    """Equal, with floats to 1e-9 (JSON and Parquet both round-trip a double exactly)."""
    if isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=0, abs_tol=1e-9), (path, a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), (path, set(a) ^ set(b))
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


def stable(decision: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in decision.items() if k not in VOLATILE}


def cases_with_errors(n: int, seed: int) -> tuple[list[dict[str, Any]], dict[int, tuple[str, str]]]:
    """n generated cases; every 25th is broken in one field (row -> (field, problem))."""
    contract = load_contract(MODEL)
    cases = case_payloads(generate(MODEL, n, seed), contract)
    broken = {}
    for j, i in enumerate(range(3, n, 25)):
        field, value, problem = BROKEN[j % len(BROKEN)]
        cases[i][field] = value
        broken[i] = (field, problem)
    return cases, broken


def online(server: Server, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with server.client("decide") as c:
        r = c.post(f"/v1/{MODEL}/decide", json={"cases": cases})
    assert r.status_code == 200, r.text
    return list(r.json()["decisions"])


def online_errors(server: Server, case: dict[str, Any]) -> list[tuple[str, str]]:
    with server.client("decide") as c:
        r = c.post(f"/v1/{MODEL}/decide", json={"cases": [case]})
    assert r.status_code == 422, r.text
    return [(e["field"], e["problem"]) for e in r.json()["errors"]]


def score(store: Store, tmp: Path, source: Path, out: str, *extra: str, **env: str) -> dict[str, Any]:
    done = run_keel(
        cli_env(store, **env),
        "score", MODEL, "--input", str(source), "--output", str(tmp / out), *extra,
        timeout=900,  # Spark starts a JVM and Python workers: minutes on a busy 2-core machine
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_online_local_and_spark_give_identical_decisions_and_explanations(
    store: Store, registered: dict[str, str], server: Server, tmp_path: Path
) -> None:
    cases, broken = cases_with_errors(300, seed=71)
    valid = [c for i, c in enumerate(cases) if i not in broken]
    want = online(server, valid)
    source = tmp_path / "cases.parquet"
    pd.DataFrame(cases).to_parquet(source)

    # Five chunks: two worker processes decide them side by side; one decides them in-process.
    local = score(store, tmp_path, source, "local.jsonl", KEEL_BATCH_CHUNK_ROWS="64", KEEL_BATCH_WORKERS="2")
    alone = score(store, tmp_path, source, "alone.jsonl", KEEL_BATCH_CHUNK_ROWS="64", KEEL_BATCH_WORKERS="1")
    assert local["extra"]["workers"] == 2 and alone["extra"]["workers"] == 1
    spark = score(store, tmp_path, source, "spark.jsonl", "--engine", "spark")
    for summary in (local, alone, spark):
        assert summary["rows"] == 300 and summary["decided"] == len(valid), summary
        assert summary["rejected"] == len(broken) and summary["version"] == registered[MODEL]

    valid_rows = [i for i in range(len(cases)) if i not in broken]
    for name in ("local", "alone", "spark"):
        got = read_jsonl(tmp_path / f"{name}.jsonl")
        assert [d.pop("row") for d in got] == valid_rows, name
        for mine, theirs in zip(got, want, strict=True):
            same(stable(mine), stable(theirs), name)
        assert len({d["decision_id"] for d in got}) == len(got)
        # Rejected cases: the online route's own field-level problems, under the input row.
        errors = read_jsonl(tmp_path / f"{name}.errors.jsonl")
        assert sorted({e["row"] for e in errors}) == sorted(broken), name
        for row, (field, problem) in broken.items():
            mine_errors = [(e["field"], e["problem"]) for e in errors if e["row"] == row]
            assert mine_errors == online_errors(server, cases[row]), (name, row)
            assert any(f == field and problem in p for f, p in mine_errors), (name, row, mine_errors)


def test_csv_chunks_and_formats_read_like_json_requests(
    store: Store, registered: dict[str, str], server: Server, tmp_path: Path
) -> None:
    """A CSV file (region "NA" is a region, not a null; empty cells are nulls) in chunks of 7
    decides as the online route does; the Parquet output carries the same JSON object per row."""
    model = "discount_band"
    contract = load_contract(model)
    cases = case_payloads(generate(model, 40, seed=5), contract)
    cases[1]["region"] = "NA"
    cases[2]["usage_growth_pct"] = None
    source = tmp_path / "quotes.csv"
    pd.DataFrame(cases).to_csv(source, index=False)
    with server.client("decide") as c:
        want = c.post(f"/v1/{model}/decide", json={"cases": cases}).json()["decisions"]
    done = run_keel(
        cli_env(store, KEEL_BATCH_CHUNK_ROWS="7"),
        "score", model, "--input", str(source), "--output", str(tmp_path / "out.parquet"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = pd.read_parquet(tmp_path / "out.parquet")
    assert list(table["row"]) == list(range(40))
    got = [json.loads(t) for t in table["decision"]]
    assert got[1]["versions"]["model"] == model
    for mine, theirs in zip(got, want, strict=True):
        same(stable(mine), stable(theirs))
    assert list(table["outcome"]) == [d["outcome"] for d in got]
    assert pd.read_parquet(tmp_path / "out.errors.parquet").empty


def score_logged(
    store: Store, source: Path, out: Path, log_url: str, run_id: str | None = None, workers: int = 1
) -> dict:
    """`keel score --log` driven from this process (the CLI path is covered above), chunks of 50;
    with `workers` > 1 the chunks after the first are decided in that many worker processes."""
    cache = store.home / "cache"
    served = served_version(MODEL, None, None, cache)
    job = BatchJob(MODEL, source, out, error_path(out), log=True, run_id=run_id)
    log = DecisionLog(Database(log_url)).open()
    try:
        return run_local(
            job, served, BatchSettings(chunk_rows=50, workers=workers), log, cache_dir=cache
        ).to_dict()
    finally:
        log.close()


def test_log_writes_each_batch_decision_once_marked_as_batch(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    cases, broken = cases_with_errors(120, seed=9)
    source = tmp_path / "cases.parquet"
    pd.DataFrame(cases).to_parquet(source)
    url = f"sqlite:///{tmp_path / 'decisions.db'}"
    # Logged by two worker processes, replayed by this one: the log is written here either way.
    first = score_logged(store, source, tmp_path / "a.jsonl", url, workers=2)
    again = score_logged(store, source, tmp_path / "b.jsonl", url)
    n = 120 - len(broken)
    assert first["extra"]["workers"] == 2 and again["extra"]["workers"] == 1
    assert (first["logged"], first["replayed"]) == (n, 0), first
    assert (again["logged"], again["replayed"]) == (0, n), again
    # The repeated run answers with what was logged the first time.
    assert read_jsonl(tmp_path / "a.jsonl") == read_jsonl(tmp_path / "b.jsonl")

    with sqlite3.connect(tmp_path / "decisions.db") as db:
        rows = db.execute("SELECT caller, idempotency_key, record FROM decisions ORDER BY seq").fetchall()
        origins = {o for (o,) in db.execute("SELECT origin FROM decisions")}
    assert len(rows) == n and origins == {"batch"}
    assert all(caller.startswith(BATCH_CALLER_PREFIX) for caller, _, _ in rows)
    assert all(key.startswith(first["run_id"]) for _, key, _ in rows)
    rows_logged = [json.loads(r)["batch"]["row"] for _, _, r in rows]
    assert rows_logged == [i for i in range(120) if i not in broken]
    assert DecisionLog(Database(url)).verify().ok

    # Live monitoring leaves batch decisions out unless asked.
    start, end = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(minutes=1)
    assert LogReader(Database(url)).summary(MODEL, start, end).n_decisions == 0
    assert LogReader(Database(url), include_batch=True).summary(MODEL, start, end).n_decisions == n

    # The same run id over a changed file is refused, not mixed into the earlier run.
    cases[0]["amount"] = float(cases[0]["amount"]) + 1
    pd.DataFrame(cases).to_parquet(source)
    with pytest.raises(Conflict):
        score_logged(store, source, tmp_path / "c.jsonl", url, run_id=first["run_id"])
    assert not (tmp_path / "c.jsonl").exists()


def test_file_level_problems_stop_the_run_before_anything_is_decided(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    contract = load_contract(MODEL)
    frame = pd.DataFrame(case_payloads(generate(MODEL, 5, seed=1), contract))
    frame.rename(columns={"amount": "amout"}).to_parquet(tmp_path / "typo.parquet")
    done = run_keel(
        cli_env(store),
        "score", MODEL, "--input", str(tmp_path / "typo.parquet"), "--output", str(tmp_path / "o.jsonl"),
    )  # fmt: skip
    assert done.returncode == 2
    assert "amout: unknown column" in done.stderr and "amount: missing column" in done.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_a_logged_run_carries_the_runs_and_each_rows_correlation_context(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    """`--context` for the run and `context.<field>` columns per row (a row's fields win), stored
    with each batch decision as online, found by process instance; a row whose context is wrong
    is rejected like a case with a wrong field; a wrong run context stops the run."""
    cases = case_payloads(generate(MODEL, 30, seed=12), load_contract(MODEL))
    frame = pd.DataFrame(cases)
    frame["context.process_instance_id"] = ["0042" if i % 3 == 0 else "" for i in range(30)]
    frame["context.element_id"] = ["x" * 1025 if i == 4 else "rescore" for i in range(30)]
    source, out = tmp_path / "rescore.csv", tmp_path / "out.jsonl"
    frame.to_csv(source, index=False)
    log_url = f"sqlite:///{tmp_path / 'decisions.db'}"
    run_context = {"process_definition_id": "ap-nightly", "process_instance_id": "night-7"}
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    args = ("--log", "--context", json.dumps(run_context), "--traceparent", trace)
    summary = score(store, tmp_path, source, out.name, *args, KEEL_DECISION_LOG_URL=log_url)
    assert (summary["decided"], summary["rejected"], summary["logged"]) == (29, 1, 29), summary
    (error,) = read_jsonl(tmp_path / "out.errors.jsonl")
    assert error["row"] == 4 and error["field"] == "context.element_id" and "1024" in error["problem"]

    db = Database(log_url)
    with db.reading() as reader:
        rows = reader.all("SELECT process_instance, record FROM decisions ORDER BY seq")
    by_row = {json.loads(r)["batch"]["row"]: (pi, json.loads(r)) for pi, r in rows}
    assert sorted(by_row) == [i for i in range(30) if i != 4]
    for row, (instance, record) in by_row.items():
        own = "0042" if row % 3 == 0 else "night-7"  # an empty cell leaves the run's field
        assert record["context"] == {**run_context, "process_instance_id": own, "element_id": "rescore"}
        assert instance == own and record["traceparent"] == trace
        assert "context.element_id" not in record["inputs"]  # never a model input
    decided = {d["row"]: d for d in read_jsonl(out)}
    assert decided[3]["context"]["process_instance_id"] == "0042" and decided[3]["traceparent"] == trace
    page, _, _ = reads.decisions_of_process(db, "0042", 200)
    assert sorted(r["record"]["batch"]["row"] for r in page) == list(range(0, 30, 3))
    assert {r["origin"] for r in page} == {"batch"}

    # The same file with another run context under the same run id is refused, not mixed in.
    other = run_keel(
        cli_env(store, KEEL_DECISION_LOG_URL=log_url),
        "score", MODEL, "--input", str(source), "--output", str(tmp_path / "other.jsonl"), "--log",
        "--run-id", summary["run_id"], "--context", '{"process_definition_id": "ap-other"}',
    )  # fmt: skip
    assert other.returncode != 0 and not (tmp_path / "other.jsonl").exists(), other.stdout + other.stderr
    with db.reading() as reader:
        assert reader.all("SELECT COUNT(*) FROM decisions") == [(29,)]
    # A wrong run context or traceparent stops the run before anything is decided.
    for bad in (("--context", '{"process_instance": "1"}'), ("--traceparent", "00-abc-def-01")):
        done = run_keel(
            cli_env(store),
            "score",
            MODEL,
            "--input",
            str(source),
            "--output",
            str(tmp_path / "no.jsonl"),
            *bad,
        )
        assert done.returncode == 2 and not (tmp_path / "no.jsonl").exists(), done.stdout + done.stderr
        assert ("context.process_instance" if bad[0] == "--context" else "traceparent") in done.stderr
    # Spark reads no context columns: said before any Spark work starts.
    spark = run_keel(
        cli_env(store), "score", MODEL, "--input", str(source), "--output", str(tmp_path / "s.jsonl"),
        "--engine", "spark",
    )  # fmt: skip
    assert spark.returncode == 2 and "context.process_instance_id" in spark.stderr, spark.stderr
    db.dispose()


def test_a_worker_that_cannot_load_the_version_stops_the_run_with_a_keel_error(
    store: Store, registered: dict[str, str]
) -> None:
    """The first chunk is decided in this process; the workers then refuse a version that records
    no artefact hashes (registry.load never loads an unverifiable bundle), and the run stops with
    Keel's error instead of concurrent.futures' BrokenProcessPool."""
    served = served_version(MODEL, None, None, store.home / "cache")
    cases = case_payloads(generate(MODEL, 3, seed=2), load_contract(MODEL))
    unverifiable = replace(served.loaded.ref, tags={})
    deciders = Deciders(
        ChunkDecider(served), 2, Recipe(unverifiable, store.home / "cache", served.versions, None)
    )
    decided = []
    with pytest.raises(KeelError, match="batch worker process stopped"):
        for _, chunk_decided in deciders.decided([Chunk(i, [c]) for i, c in enumerate(cases)]):
            decided.append(chunk_decided)
    assert len(decided) == 1 and len(decided[0].records) == 1 and deciders.spawned
