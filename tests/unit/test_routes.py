"""The route table: matching, default denial, and the OpenAPI document generated from it."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from keel.decision_log.errors import LogUnavailable
from keel.errors import InvalidInput, KeelError, ModelLoadError, RateLimited, Unauthorized
from keel.feature_defs.contract import MODEL_NAMES, load_contract
from keel.serving import routes
from keel.serving.error_response import ANSWERED, error_response
from keel.serving.openapi import decide_request_model, document

PUBLIC = {
    "/livez", "/readyz", "/metrics", "/openapi.json", "/docs", "/", "/docs/assets/{asset}",
    # the console's sign-in form and style sheet: every other console page needs a session
    "/console/sign-in", "/console/static/{asset}",
}  # fmt: skip


def test_only_the_probes_metrics_docs_and_console_sign_in_are_public() -> None:
    assert {r.path for r in routes.ROUTES if r.public} == PUBLIC
    assert len({(r.method, r.path) for r in routes.ROUTES}) == len(routes.ROUTES)
    assert len({r.name for r in routes.ROUTES}) == len(routes.ROUTES)


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("POST", "/v1/anything_new/decide", "decide"),
        ("GET", "/v1/decisions/abc", "decision"),
        ("HEAD", "/readyz", "readyz"),
        ("GET", "/v1/models", "models"),
    ],
)
def test_paths_match_their_route(method: str, path: str, name: str) -> None:
    found = routes.match(method, path)
    assert found is not None and found.route.name == name


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/routing/decide"), ("POST", "/v1/a/b/decide"), ("GET", "/docs.json"), ("GET", "/healthz")],
)
def test_undeclared_paths_match_nothing(method: str, path: str) -> None:
    assert routes.match(method, path) is None and routes.route_label(method, path) == "other"


def test_document_has_one_decide_path_per_served_model_and_security_off_only_when_public() -> None:
    doc = document({m: load_contract(m) for m in ("routing", "discount_band")}, 1000)
    assert "/v1/routing/decide" in doc["paths"] and "/v1/invoice_classification/decide" not in doc["paths"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            found = routes.match(method.upper(), path)
            assert found is not None, path
            assert ("security" in op) == (not found.route.public), path


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_generated_request_model_accepts_the_example_and_rejects_bad_cases(name: str) -> None:
    contract = load_contract(name)
    model = decide_request_model(contract, 1000)
    model.model_validate({"cases": [contract.example_case]})
    for bad in (
        {"cases": []},
        {"cases": [{**contract.example_case, "surprise": 1}]},
        {"cases": [{**contract.example_case, "case_id": None}]},
        {"cases": [contract.example_case], "extra": 1},
    ):
        with pytest.raises(ValidationError):
            model.model_validate(bad)


def test_max_cases_is_the_schema_max_items_and_more_is_a_validation_error() -> None:
    contract = load_contract("routing")
    model = decide_request_model(contract, 3)
    model.model_validate({"cases": [contract.example_case] * 3})
    with pytest.raises(ValidationError):
        model.model_validate({"cases": [contract.example_case] * 4})
    doc = document({"routing": contract}, 3)
    schemas = doc["components"]["schemas"]
    ref = doc["paths"]["/v1/routing/decide"]["post"]["requestBody"]["content"]["application/json"]
    assert schemas[ref["schema"]["$ref"].rsplit("/", 1)[1]]["properties"]["cases"]["maxItems"] == 3


def test_error_responses_are_documented_from_the_error_classes() -> None:
    doc = document({"routing": load_contract("routing")}, 1000)
    responses = doc["paths"]["/v1/routing/decide"]["post"]["responses"]
    for cls in ANSWERED:
        assert cls.description in responses[str(cls.status_code)]["description"], cls
    # Two classes answer 503: both are described, each once.
    assert responses["503"]["description"] == f"{ModelLoadError.description}; {LogUnavailable.description}"
    assert {code for code in responses if code >= "400"} == {str(c.status_code) for c in ANSWERED}


@pytest.mark.parametrize(
    ("error", "status", "headers"),
    [
        (Unauthorized("no key"), 401, {"WWW-Authenticate": "Bearer"}),
        (RateLimited("k", 0.2), 429, {"Retry-After": "1"}),
        (RateLimited("k", 2.5), 429, {"Retry-After": "3"}),
        (LogUnavailable("away", retry_after=2.0), 503, {"Retry-After": "2"}),
        (ModelLoadError("starting"), 503, {}),
        (InvalidInput("bad"), 422, {}),
    ],
)
def test_one_function_turns_an_error_into_status_body_and_headers(
    error: KeelError, status: int, headers: dict[str, str]
) -> None:
    answer = error_response(error)
    assert answer.status == status and answer.headers == headers
    assert json.loads(answer.body) == error.to_dict()


def test_console_routes_need_read_and_stay_out_of_the_openapi_document() -> None:
    console = [r for r in routes.ROUTES if r.handler == "console"]
    assert {r.path for r in console} >= {"/console", "/console/decisions", "/console/decisions/{decision_id}"}
    assert all(r.path.startswith(routes.CONSOLE) and not r.documented for r in console)
    assert {r.role for r in console if not r.public} == {"read"}
    doc = document({"routing": load_contract("routing")}, 1000)
    assert not [p for p in doc["paths"] if p.startswith(routes.CONSOLE)]
    found = routes.match("GET", "/console/decisions/abc")
    assert found is not None and found.route.name == "console_decision"
    for path, name in (
        ("/console/monitoring", "console_monitoring"),
        ("/console/monitoring/routing", "console_monitoring_model"),
        ("/console/runs/abc-123", "console_run"),
    ):
        found = routes.match("GET", path)
        assert found is not None and found.route.name == name and found.route.role == "read", path
    assert routes.match("GET", "/console/anything") is None


def test_review_includes_read_and_feedback_and_nothing_else() -> None:
    from keel.serving.keys import ApiKey, KeyStore

    review = ApiKey("r", frozenset({"review"}), "now")
    assert KeyStore.holds(review, "read") and KeyStore.holds(review, "feedback")
    assert not KeyStore.holds(review, "decide") and not KeyStore.holds(review, "admin")
    assert not KeyStore.holds(ApiKey("x", frozenset({"read"}), "now"), "review")
