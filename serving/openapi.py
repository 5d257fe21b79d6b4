"""The OpenAPI document at /openapi.json, generated from the route table and the served contracts.

Every documented route of serving/routes.py appears once; the decide route once per served
model, its request schema a pydantic model generated from that version's contract (types,
ranges, categories, nullability, no extra fields) with the contract's example case. Routes
other than the public ones carry bearer security and Keel's error body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from keel.client.context import Context
from keel.decision_log.reads import MAX_PAGE
from keel.feature_defs.contract import Contract, FieldSpec
from keel.serving.error_response import described_statuses
from keel.serving.routes import ROUTES, Route

__all__ = ["FeedbackRequest", "case_model", "decide_request_model", "document"]

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "error_count": {"type": "integer"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "row": {"type": "integer"},
                    "field": {"type": "string"},
                    "problem": {"type": "string"},
                },
            },
        },
    },
}
SCHEMA_REF = "#/components/schemas/{model}"
MEDIA = {"metrics": "text/plain", "docs": "text/html", "livez": "text/plain", "readyz": "text/plain"}


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision_id: str = Field(
        min_length=1, max_length=200, description="decision_id returned by a decide call"
    )
    final_outcome: str = Field(min_length=1, max_length=200, description="the reviewer's final class")
    actor: str = Field(min_length=1, max_length=200, description="who decided (reviewer id)")
    reason: str | None = Field(default=None, max_length=2000, description="why, in the reviewer's words")
    reviewer_pool: str | None = Field(
        default=None,
        max_length=20,
        description="the reviewer's pool: `local` (the case's own segment) or `cross` (another one), "
        "as the decision's `audit.pool` asked; anything else is a 422",
        json_schema_extra={"enum": ["local", "cross", None]},
    )
    reviewer_segment: str | None = Field(
        default=None, max_length=200, description="the segment (e.g. region) the reviewer works in"
    )
    context: Context | None = Field(
        default=None,
        description="which process step sends it (at most 2 KiB as JSON); without a process instance "
        "of its own, the feedback is found under its decision's",
    )


def _field_type(spec: FieldSpec) -> tuple[Any, Any]:
    described = spec.description + (f" ({spec.unit})" if spec.unit else "")
    kind: Any
    if spec.type == "category":
        kind = Literal[spec.categories]
    else:
        kind = {"bool": bool, "int": int, "float": float}[spec.type]
    bounds: dict[str, Any] = (
        {} if spec.type in ("category", "bool") else {"ge": spec.minimum, "le": spec.maximum}
    )
    if spec.nullable:
        kind = kind | None
    return kind, Field(..., description=described, **bounds)


def case_model(contract: Contract) -> type[BaseModel]:
    """One case of `contract` as a pydantic model (its JSON schema is what the docs show)."""
    fields: dict[str, Any] = {
        "case_id": (
            str,
            Field(default=None, min_length=1, max_length=200, description="your reference, echoed back"),
        )
    }
    fields["context"] = (
        Context | None,
        Field(default=None, description="this case's correlation context; its fields win over the call's"),
    )
    fields.update({f.name: _field_type(f) for f in contract.fields})
    example = dict(contract.example_case)
    config = ConfigDict(extra="forbid", json_schema_extra={"example": example})
    return create_model(f"Case_{contract.name}", __config__=config, **fields)


def decide_request_model(contract: Contract, max_cases: int) -> type[BaseModel]:
    """The decide request: 1 to `max_cases` cases (KEEL_SERVE_MAX_CASES). More is answered 422 with
    a field error on `cases`, as maxItems tells a schema-driven client to expect."""
    case = case_model(contract)
    described = f"decided in this order; at most {max_cases:,} (more: 422 with an error on `cases`)"
    cases = (list[case], Field(..., min_length=1, max_length=max_cases, description=described))  # type: ignore[valid-type]
    config = ConfigDict(extra="forbid")
    context: tuple[Any, Any] = (
        Context | None,
        Field(
            default=None,
            description="which process step asks, for every case (logged, returned, never a model input)",
        ),
    )
    return create_model(f"DecideRequest_{contract.name}", __config__=config, cases=cases, context=context)


IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key and body replay the first answer and write nothing twice.",
    "schema": {"type": "string", "maxLength": 200},
}

TRACEPARENT_HEADER = {
    "name": "traceparent",
    "in": "header",
    "required": False,
    "description": "W3C Trace Context; logged and returned with the record. A malformed one is ignored.",
    "schema": {"type": "string", "maxLength": 512},
}
PROCESS_QUERY = [
    {
        "name": "process_instance",
        "in": "query",
        "required": True,
        "description": "a correlation context's process_instance_id",
        "schema": {"type": "string", "minLength": 1, "maxLength": 1024},
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "decisions per page",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50},
    },
    {
        "name": "after",
        "in": "query",
        "required": False,
        "description": "the previous page's `next_after`",
        "schema": {"type": "integer", "minimum": 0},
    },
]


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=SCHEMA_REF)
    components.update(schema.pop("$defs", {}))
    for definition in (schema, *components.values()):
        definition.get("properties", {}).get("case_id", {}).pop("default", None)  # optional, never null
    components[model.__name__] = schema
    return {"$ref": SCHEMA_REF.format(model=model.__name__)}


def _operation(
    route: Route,
    components: dict[str, Any],
    path: str,
    model: str | None,
    contract: Contract | None = None,
    max_cases: int = 0,
) -> dict[str, Any]:
    media = MEDIA.get(route.name, "application/json")
    op: dict[str, Any] = {
        "summary": route.summary if model is None else f"{route.summary} ({model})",
        "operationId": route.name if model is None else f"decide_{model}",
        "responses": {
            str(code): {
                "description": "OK",
                "content": {
                    media: {
                        "schema": {"type": "object"} if media == "application/json" else {"type": "string"}
                    }
                },
            }
            for code in route.statuses
        },
    }
    params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
    if params:
        op["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params
        ]
    if route.public:
        return op
    op["security"] = [{"bearer": []}]
    for code, text in described_statuses().items():
        op["responses"][code] = {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": SCHEMA_REF.format(model="KeelError")}}},
        }
    if params:  # a path segment the router cannot take gets its plain-text 404
        op["responses"]["404"]["content"]["text/plain"] = {"schema": {"type": "string"}}
    if route.name == "decide":
        body: dict[str, Any] = {"schema": {"type": "object", "required": ["cases"]}}
        if contract is not None:
            body = {
                "schema": _schema(decide_request_model(contract, max_cases), components),
                "example": {"cases": [dict(contract.example_case)]},
            }
        op["requestBody"] = {"required": True, "content": {"application/json": body}}
        op.setdefault("parameters", []).extend((IDEMPOTENCY_HEADER, TRACEPARENT_HEADER))
    elif route.name == "feedback":
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _schema(FeedbackRequest, components)}},
        }
        op.setdefault("parameters", []).extend((IDEMPOTENCY_HEADER, TRACEPARENT_HEADER))
    elif route.name == "decisions":
        op.setdefault("parameters", []).extend(PROCESS_QUERY)
    return op


def document(served: Mapping[str, Contract], max_cases: int) -> dict[str, Any]:
    """The whole document for the models served now (decide routes only for those), each decide
    request schema generated from the contract sealed in the version being served and holding
    at most `max_cases` cases."""
    models = sorted(served)
    components: dict[str, Any] = {"KeelError": ERROR_SCHEMA}
    paths: dict[str, Any] = {}
    for route in ROUTES:
        if not route.documented:
            continue
        if route.name == "decide" and models:
            for model in models:
                path = route.path.replace("{model}", model)
                paths.setdefault(path, {})[route.method.lower()] = _operation(
                    route, components, path, model, served[model], max_cases
                )
        else:
            paths.setdefault(route.path, {})[route.method.lower()] = _operation(
                route, components, route.path, None
            )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Keel decision service",
            "version": "1",
            "description": "Decisions or explicit abstentions with exact explanations; see GET /v1/models "
            "for each model's contract. Send an API key as `Authorization: Bearer <key>`.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
