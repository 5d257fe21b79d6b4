"""The BentoML service: thin routes over `serving.decider`; see PRODUCT.md for the interface."""

from __future__ import annotations

import json
from typing import Any

import bentoml
from fastapi import FastAPI, Response
from keel.serving import runtime
from keel.serving.gate import Gate
from keel.serving.settings import ServingSettings
from pydantic import BaseModel, Field

from keel.errors import KeelError

admin = FastAPI(title="Keel reads and admin", docs_url=None, redoc_url=None, openapi_url=None)


class DecideRequest(BaseModel):
    cases: list[dict[str, Any]] = Field(
        description="1 to 1,000 cases; each holds the model's contract fields (GET /v1/models) and an "
        "optional case_id. Decisions come back in the same order."
    )


class FeedbackRequest(BaseModel):
    decision_id: str = Field(description="decision_id returned by a decide call")
    final_outcome: str = Field(description="the reviewer's final class for the case")
    actor: str = Field(min_length=1, max_length=200, description="who decided (reviewer id)")
    reason: str | None = Field(default=None, max_length=2000, description="why, in the reviewer's words")


def _rt() -> runtime.Runtime:
    rt = runtime.current()
    if rt is None:
        raise KeelError("service is starting")
    return rt


def _answer(ctx: bentoml.Context, fn: Any, *args: Any, status: int = 200) -> Any:
    try:
        ctx.response.status_code = status
        return fn(*args)
    except KeelError as exc:
        ctx.response.status_code = exc.status_code
        return exc.to_dict()


def _caller(ctx: bentoml.Context) -> str:
    return str(ctx.request.scope.get("state", {}).get("caller", "anonymous"))


@bentoml.service(
    name="keel",
    workers=1,
    threads=ServingSettings().threads,
    metrics={"enabled": False},
    traffic={"timeout": 60},
)
@bentoml.asgi_app(admin, path="/")
class DecisionService:
    def __init__(self) -> None:
        if runtime.current() is None:
            runtime.install(runtime.Runtime.start())

    def __is_ready__(self) -> bool:
        rt = runtime.current()
        return rt is not None and rt.loaded.is_set()

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        rt = runtime.current()
        if rt is not None:
            rt.close()
            runtime.install(None)

    async def _decide(self, model: str, req: DecideRequest, ctx: bentoml.Context) -> Any:
        # Async on purpose: BentoML runs a sync route in a worker thread, and that hop (plus the
        # writer thread waking a parked request thread) cost more than deciding one case.
        key = (ctx.request.headers.get("idempotency-key") or "").strip() or None
        ctx.response.status_code = 200
        try:
            return await _rt().decider.decide_async(
                model, req.cases, _caller(ctx), key, render=lambda d: _json({"decisions": d})
            )
        except KeelError as exc:
            ctx.response.status_code = exc.status_code
            return _json(exc.to_dict())

    @bentoml.api(route="/v1/invoice_classification/decide")
    async def invoice_classification(self, req: DecideRequest, /, ctx: bentoml.Context) -> dict[str, Any]:
        """Decide supplier invoices' exception paths."""
        return await self._decide("invoice_classification", req, ctx)

    @bentoml.api(route="/v1/discount_band/decide")
    async def discount_band(self, req: DecideRequest, /, ctx: bentoml.Context) -> dict[str, Any]:
        """Decide the discount band sales quotes may be approved at."""
        return await self._decide("discount_band", req, ctx)

    @bentoml.api(route="/v1/routing/decide")
    async def routing(self, req: DecideRequest, /, ctx: bentoml.Context) -> dict[str, Any]:
        """Decide which team queue operational exceptions go to."""
        return await self._decide("routing", req, ctx)

    @bentoml.api(route="/v1/feedback")
    def feedback(self, req: FeedbackRequest, /, ctx: bentoml.Context) -> dict[str, Any]:
        """Record a reviewer's final outcome (idempotent: a repeat returns the first record)."""

        def run() -> dict[str, Any]:
            record, created = _rt().decider.feedback(
                req.decision_id, req.final_outcome, req.actor, req.reason, _caller(ctx)
            )
            ctx.response.status_code = 201 if created else 200
            return record

        return _answer(ctx, run)

    @admin.get("/v1/decisions/{decision_id}")
    def get_decision(self, decision_id: str, response: Response) -> Any:
        return _plain(response, lambda: _rt().decider.lookup(decision_id))

    @admin.get("/v1/models")
    def list_models(self, response: Response) -> Any:
        from keel.serving.catalogue import catalogue

        return _plain(response, lambda: catalogue(_rt()))

    @admin.get("/v1/models/{model}/history")
    def model_history(self, model: str, response: Response) -> Any:
        from keel.models.history import history_json, shared_history

        return _plain(response, lambda: history_json(shared_history(_rt().state.log_url), model))

    @admin.post("/v1/admin/reload")
    def reload(self, response: Response) -> Any:
        def run() -> dict[str, Any]:
            report = _rt().reload()
            response.status_code = 200 if not report.failed else 207
            return {"loaded": report.loaded, "unchanged": report.unchanged, "failed": report.failed}

        return _plain(response, run)

    @admin.get("/openapi.json")
    def openapi(self) -> Any:
        from keel.serving.openapi import document

        service: Any = DecisionService  # the bentoml.Service the decorators made
        return document(service.openapi_spec.asdict())

    @admin.get("/metrics")
    def metrics(self) -> Response:
        body = _rt().metrics.render()
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def _json(body: dict[str, Any]) -> Response:
    """The JSON response BentoML would make of `body`, byte for byte (`json.dumps` of it).

    Returned as a ready response because BentoML's own path for a `dict` return value rebuilds
    the output model's JSON schema on every request just to find its media type (~0.5 ms).
    The routes keep their `dict` annotation, which is what the OpenAPI document describes.
    """
    return Response(json.dumps(body).encode(), media_type="application/json")


def _plain(response: Response, fn: Any) -> Any:
    try:
        return fn()
    except KeelError as exc:
        response.status_code = exc.status_code
        return exc.to_dict()


# The decorators turn the class into a bentoml.Service, which mypy cannot see.
DecisionService.add_asgi_middleware(  # type: ignore[attr-defined]
    Gate,
    keys=lambda: rt.keys if (rt := runtime.current()) else None,
    metrics=lambda: rt.metrics if (rt := runtime.current()) else None,
    max_body_bytes=ServingSettings().max_body_bytes,
)
