"""The OpenAPI document Keel serves at /openapi.json.

BentoML's /docs.json describes its own error bodies (400/500), not Keel's, marks request
bodies optional and types cases as free objects. This document starts from it and states what
the service really does: typed cases per contract, Keel's error body and status codes, and
bearer-key security on every route but the probes.
"""

from __future__ import annotations

import copy
from typing import Any

from keel.feature_defs.contract import MODEL_NAMES, Contract, load_contract

ERROR_STATUSES = {
    "401": "Missing or unknown API key",
    "403": "The key lacks the route's role",
    "404": "Unknown decision",
    "409": "Idempotency-Key reused with a different body",
    "413": "More than 1,000 cases or body over the size limit",
    "415": "Body is not application/json",
    "422": "Field-level validation errors",
    "503": "Models not loaded yet or decision log unavailable",
}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
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
OPEN = ("/livez", "/readyz", "/healthz", "/metrics")


def case_schema(contract: Contract) -> dict[str, Any]:
    props: dict[str, Any] = {"case_id": {"type": "string", "minLength": 1, "maxLength": 200}}
    for f in contract.fields:
        if f.type == "category":
            s: dict[str, Any] = {"type": "string", "enum": list(f.categories)}
        elif f.type == "bool":
            s = {"type": "boolean"}
        else:
            s = {"type": "number" if f.type == "float" else "integer"}
            if f.minimum is not None:
                s["minimum"] = f.minimum
            if f.maximum is not None:
                s["maximum"] = f.maximum
        if f.nullable:
            s["nullable"] = True
        s["description"] = f.description + (f" ({f.unit})" if f.unit else "")
        props[f.name] = s
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": props,
        "required": contract.field_names,
        "example": contract.example_case,
    }


def document(bento_spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(bento_spec)
    spec["openapi"] = "3.0.3"
    spec.setdefault("info", {})["title"] = "Keel decision service"
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {})["KeelError"] = ERROR_SCHEMA
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    paths = spec.get("paths", {})
    for path, ops in paths.items():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            for code in ("400", "500"):
                responses.pop(code, None)
            if path == "/metrics":
                responses["200"] = {
                    "description": "Prometheus text",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            if path in OPEN:
                continue
            op["security"] = [{"bearer": []}]
            for code, text in ERROR_STATUSES.items():
                responses[code] = {
                    "description": text,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KeelError"}}},
                }
            body = op.get("requestBody")
            if body:
                body["required"] = True
                for media in body.get("content", {}).values():
                    media.get("schema", {}).pop("root_input", None)
            if "{" in path:  # an unroutable id gets the router's plain-text 404
                responses["404"]["content"]["text/plain"] = {"schema": {"type": "string"}}
            if path == "/v1/feedback":
                responses["201"] = {
                    "description": "Feedback recorded",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
    for name in MODEL_NAMES:
        op = paths.get(f"/v1/{name}/decide", {}).get("post")
        if op is None:
            continue
        contract = load_contract(name)
        op["requestBody"]["content"]["application/json"]["schema"] = {
            "type": "object",
            "required": ["cases"],
            "additionalProperties": False,
            "properties": {
                "cases": {"type": "array", "minItems": 1, "maxItems": 1000, "items": case_schema(contract)}
            },
        }
        op.setdefault("parameters", []).append(
            {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"}}
        )
    return spec
