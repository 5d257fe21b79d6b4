"""The BentoML service: Keel's routes (serving/routes.py) mounted inside it; see PRODUCT.md.

Each route of the table is answered once: decide by Keel's own handler in the gate, the docs
page by serving/docs_page.py, probes by BentoML, and every other route by a function below,
registered on the mounted FastAPI app from the table. Nothing is built at import: the entry
point (serving/server.py `serve`) builds the runtime and passes it to `asgi_app`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import bentoml
from fastapi import FastAPI, Query, Request, Response

from keel.client.context import parse_traceparent
from keel.decision_log.reads import MAX_PAGE
from keel.errors import KeelError
from keel.serving import body_check, routes
from keel.serving.error_response import fastapi_handler
from keel.serving.gate import Gate
from keel.serving.openapi import FeedbackRequest, document
from keel.serving.runtime import Runtime
from keel.serving.sessions import Sessions

__all__ = ["admin_app", "asgi_app", "decision_service"]


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _caller(request: Request) -> str:
    return str(request.scope.get("state", {}).get("caller", "anonymous"))


# Sync functions: FastAPI runs them in its thread pool, so their database reads and writes
# never hold the event loop. A KeelError they raise is answered by error_response.fastapi_handler.
def feedback(req: FeedbackRequest, request: Request, response: Response) -> Any:
    """A reviewer's final outcome; a new Idempotency-Key is a new revision (the latest counts), a
    repeat with the same key and body returns the first record."""
    key = (request.headers.get("idempotency-key") or "").strip() or None
    record, created = _rt(request).decider.feedback(
        req.decision_id,
        req.final_outcome,
        req.actor,
        req.reason,
        _caller(request),
        key,
        reviewer_pool=req.reviewer_pool,
        reviewer_segment=req.reviewer_segment,
        context=req.context.fields() if req.context is not None else None,
        traceparent=parse_traceparent(request.headers.get("traceparent")),
    )
    response.status_code = 201 if created else 200
    return record


def decision(decision_id: str, request: Request) -> Any:
    return _rt(request).decider.lookup(decision_id)


def decisions(
    request: Request,
    process_instance: str = Query(
        min_length=1, max_length=1024, description="a context's process_instance_id"
    ),
    limit: int = Query(default=50, ge=1, le=MAX_PAGE, description="decisions per page"),
    after: int | None = Query(default=None, ge=0, description="the previous page's `next_after`"),
) -> Any:
    """A process instance's decisions, oldest first, each with its feedback; keyset-paginated."""
    return _rt(request).decider.of_process(process_instance, limit, after)


def models(request: Request) -> Any:
    from keel.serving.catalogue import catalogue

    return catalogue(_rt(request))


def history(model: str, request: Request) -> Any:
    from keel.models.history import history_json, shared_history

    return history_json(shared_history(_rt(request).state.log_url), model)


def reload(request: Request, response: Response) -> Any:
    report = _rt(request).reload()
    response.status_code = 200 if not report.failed else 207
    return {"loaded": report.loaded, "unchanged": report.unchanged, "failed": report.failed}


def openapi(request: Request) -> Any:
    rt = _rt(request)
    served = rt.models.snapshot.models
    return document({name: s.loaded.model.contract for name, s in served.items()}, rt.settings.max_cases)


def metrics(request: Request) -> Response:
    body = _rt(request).metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


APP_HANDLERS: dict[str, Callable[..., Any]] = {
    "feedback": feedback,
    "decision": decision,
    "decisions": decisions,
    "models": models,
    "history": history,
    "reload": reload,
    "openapi": openapi,
    "metrics": metrics,
}


def admin_app(rt: Runtime) -> FastAPI:
    """The FastAPI app answering every `app` route of the table, its handlers reading `rt` from
    the app's state; a route without a function, or a function without a route, fails here."""
    wanted = {r.name for r in routes.ROUTES if r.handler == "app"}
    if wanted != set(APP_HANDLERS):
        raise RuntimeError(f"route table and handlers disagree: {sorted(wanted ^ set(APP_HANDLERS))}")
    app = FastAPI(title="Keel", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = rt
    app.add_exception_handler(KeelError, fastapi_handler)
    for route in routes.ROUTES:
        if route.handler == "app":
            app.add_api_route(route.path, APP_HANDLERS[route.name], methods=[route.method], name=route.name)
    return app


def decision_service(rt: Runtime) -> Any:
    """The BentoML service over `rt`: Keel's FastAPI app mounted at /, the gate in front of it,
    BentoML's probes (ready once the models are loaded and the log's writer can commit)."""

    @bentoml.service(
        name="keel",
        workers=1,
        threads=rt.settings.threads,
        metrics={"enabled": False},
        traffic={"timeout": 60},
        # The gate writes one log line and one metric sample per request; BentoML's access log
        # would be a second line, and its OpenTelemetry spans (no exporter is configured) cost
        # about 8% of a decide request's server CPU for nothing.
        logging={"access": {"enabled": False}},
        tracing={"excluded_urls": ".*"},
    )
    @bentoml.asgi_app(admin_app(rt), path="/")
    class DecisionService:
        def __init__(self) -> None:
            body_check.start()

        def __is_ready__(self) -> bool:
            # Ready means: models loaded and the decision log's writer can commit (else 503).
            return rt.loaded.is_set() and rt.decisions.ready

        @bentoml.on_shutdown  # type: ignore[untyped-decorator]
        def shutdown(self) -> None:
            body_check.close()
            rt.close()

    # The decorators turn the class into a bentoml.Service, which mypy cannot see.
    service: Any = DecisionService
    service.add_asgi_middleware(Gate, runtime=rt)
    return service


def asgi_app(rt: Runtime, mounts: Mapping[str, Any] | None = None, sessions: Sessions | None = None) -> Any:
    """The service's ASGI app as `keel serve` runs it: BentoML's app over `rt`, with the decide
    route answered in front of BentoML's own middleware, and the apps the caller `mounts` (the
    review console at /console, whose routes the table declares) answered by that front gate,
    authorised by `sessions`.

    BentoML's app runs every request through Starlette's error middleware, OpenTelemetry's
    (which builds the URL to find it excluded) and its timeout middleware (one more task per
    request) before the gate: 5 to 6% of a decide request's server CPU, on its latency path,
    for a route that needs none of them (the gate answers errors itself; the log's commit
    timeout bounds the wait). A second gate in front answers decide and hands every other
    request, untouched, to BentoML's app, where the full gate still checks it.
    """
    from bentoml._internal.context import server_context

    service = decision_service(rt)
    server_context.service_name = service.name
    inner = service.to_asgi(is_main=True)
    return Gate(inner, rt, only=frozenset({"decide", "console"}), mounts=mounts, sessions=sessions)
