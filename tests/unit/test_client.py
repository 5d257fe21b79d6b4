"""keel.client's pure parts: the context schema, W3C traceparent parsing, the retry schedule,
and that the package imports nothing of the service."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest
from pydantic import ValidationError

from keel.client import MAX_CONTEXT_BYTES, Context, RetryPolicy, parse_traceparent
from keel.client.calls import Tries, decide_call, feedback_call, retry_after
from keel.errors import FieldError, InvalidInput
from keel.serving.batch_io import frame_contexts
from keel.serving.correlation import case_contexts, row_contexts

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (VALID, True),
        ("  " + VALID + " ", True),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", True),  # a later version
        (VALID + "-x", False),  # version 00 has four fields
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),
        (VALID.upper(), False),
        ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", False),
        ("", False),
        (None, False),
    ],
)
def test_traceparent_is_kept_only_when_valid(value: str | None, kept: bool) -> None:
    assert (parse_traceparent(value) is not None) is kept


def test_context_schema_refuses_extra_keys_and_more_than_2_kib() -> None:
    ctx = Context(process_instance_id="pi", process_definition_version=3)
    assert ctx.fields() == {"process_instance_id": "pi", "process_definition_version": 3}
    with pytest.raises(ValidationError):
        Context.model_validate({"process_instance": "pi"})
    with pytest.raises(ValidationError):
        Context(process_instance_id="")
    with pytest.raises(ValidationError, match=str(MAX_CONTEXT_BYTES)):
        Context(business_key="k" * 1000, element_id="e" * 1000, tenant_id="t" * 100)


def test_case_contexts_merge_per_field_and_report_every_problem() -> None:
    cases = [{"a": 1}, {"a": 2, "context": {"element_id": "e2", "process_instance_id": "own"}}]
    clean, contexts = case_contexts({"process_instance_id": "pi", "business_key": "b"}, cases)
    assert clean == [{"a": 1}, {"a": 2}] and cases[1]["context"]  # the caller's dicts are left alone
    assert contexts == [
        {"process_instance_id": "pi", "business_key": "b"},
        {"process_instance_id": "own", "business_key": "b", "element_id": "e2"},
    ]
    assert case_contexts(None, [{"a": 1}]) == ([{"a": 1}], None)
    with pytest.raises(InvalidInput) as bad:
        case_contexts({"x": 1}, [{"context": {"element_id": 5}}, {"context": {"tenant_id": "t" * 1025}}])
    assert [(e.row, e.field) for e in bad.value.errors] == [
        (-1, "context.x"),
        (0, "context.element_id"),
        (1, "context.tenant_id"),
    ]
    assert all(isinstance(e, FieldError) for e in bad.value.errors)


def test_batch_rows_take_the_runs_context_overridden_by_their_own_columns() -> None:
    frame = pd.DataFrame(
        {
            "amount": [1.0, 2.0, 3.0],
            "context.process_instance_id": [42, None, 7],  # a Parquet number column with a gap
            "context.process_definition_version": [3, 3, 4],
        }
    )
    own = frame_contexts(frame)
    assert own == [
        {"process_instance_id": "42", "process_definition_version": 3},
        {"process_definition_version": 3},
        {"process_instance_id": "7", "process_definition_version": 4},
    ]
    assert frame_contexts(frame[["amount"]]) is None
    contexts, errors = row_contexts({"process_instance_id": "run", "element_id": "e"}, own, 3)
    assert errors == [] and contexts is not None
    assert [c["process_instance_id"] for c in contexts] == ["42", "run", "7"] and contexts[1][
        "element_id"
    ] == "e"
    assert row_contexts(None, None, 2) == (None, [])  # no context anywhere: records stay as before
    assert row_contexts({"business_key": "b"}, None, 2) == ([{"business_key": "b"}] * 2, [])
    _, bad = row_contexts({"business_key": "b" * 1024}, [{}, {"element_id": "e" * 1024}], 2)
    assert [(e.row, e.field) for e in bad] == [(1, "context")]  # merged over 2 KiB


def test_retry_waits_grow_honour_retry_after_and_stop_at_the_limits() -> None:
    policy = RetryPolicy(attempts=5, deadline=100, backoff=0.2, max_backoff=1.0)
    tries = Tries(policy, httpx.Timeout(30))
    waits = [tries.wait(None) for _ in range(5)]
    assert [w is not None for w in waits] == [True] * 4 + [False]  # 5 tries: 4 waits between them
    bounds = [(0.1, 0.2), (0.2, 0.4), (0.4, 0.8), (0.5, 1.0)]
    assert all(lo <= w <= hi for w, (lo, hi) in zip(waits, bounds, strict=False) if w is not None)
    tries = Tries(policy, httpx.Timeout(30))
    wait = tries.wait(3.0)
    assert wait is not None and 3.0 <= wait <= 3.2
    short = Tries(RetryPolicy(deadline=1.0), httpx.Timeout(30))
    assert short.wait(5.0) is None  # Retry-After beyond the deadline: give up now
    assert short.attempt_timeout().read is not None and short.attempt_timeout().read <= 1.0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after(httpx.Response(503, headers={"Retry-After": "2"})) == 2.0
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    seconds = retry_after(httpx.Response(429, headers={"Retry-After": later}))
    assert seconds is not None and 25 <= seconds <= 31
    assert retry_after(httpx.Response(503)) is None
    assert retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) is None


def test_one_idempotency_key_per_logical_call() -> None:
    a = decide_call("routing", [{"x": 1}], None, None, None)
    b = decide_call("routing", [{"x": 1}], {"process_instance_id": "pi"}, None, VALID)
    assert a.idempotency_key and b.idempotency_key and a.idempotency_key != b.idempotency_key
    assert "context" not in a.body and b.body["context"] == {"process_instance_id": "pi"}
    assert b.headers["traceparent"] == VALID
    mine = feedback_call("d", "legal", "r", None, None, None, None, "mine", None)
    assert mine.idempotency_key == "mine" and set(mine.body) == {"decision_id", "final_outcome", "actor"}


def test_the_client_imports_nothing_of_the_service() -> None:
    code = (
        "import sys, keel.client; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('bentoml', 'mlflow', 'sqlalchemy', 'lightgbm', 'sklearn', 'numpy', 'pandas', 'psycopg') "
        "or m.startswith(('keel.serving', 'keel.decision_log', 'keel.models', 'keel.cli.'))); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_large_body_is_checked_in_process_without_its_contexts() -> None:
    import orjson

    from keel.feature_defs.contract import load_contract
    from keel.serving.body_check import _check

    contract = load_contract("routing")
    case = {**contract.example_case, "context": {"element_id": "e"}}
    good = orjson.dumps({"cases": [case], "context": {"process_instance_id": "pi"}})
    assert _check(good, contract, 1000) is None
    bad = orjson.dumps({"cases": [{**case, "context": {"element": "e"}}]})
    found = _check(bad, contract, 1000)
    assert found is not None and [e.field for e in found[1]] == ["context.element"]
