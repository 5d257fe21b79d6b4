"""The BentoML service: Keel's routes (serving/routes.py) mounted inside it; see PRODUCT.md.

Each route of the table is answered once: decide by Keel's own handler in the gate, the docs
page by serving/docs_page.py, probes by BentoML, and every other route by a function below,
registered on the mounted FastAPI app from the table (a route without a function, or a
function without a route, fails at import).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bentoml
from fastapi import FastAPI, Request, Response

from keel.errors import KeelError, ModelLoadError
from keel.serving import body_check, routes, runtime
from keel.serving.gate import Gate
from keel.serving.openapi import FeedbackRequest, document
from keel.serving.settings import ServingSettings

__all__ = ["DecisionService", "asgi_app", "served_models"]

admin = FastAPI(title="Keel", docs_url=None, redoc_url=None, openapi_url=None)


def _rt() -> runtime.Runtime:
    rt = runtime.current()
    if rt is None:
        raise ModelLoadError("service is starting")
    return rt


def _caller(request: Request) -> str:
    return str(request.scope.get("state", {}).get("caller", "anonymous"))


def _answer(response: Response, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except KeelError as exc:
        response.status_code = exc.status_code
        response.headers.update(getattr(exc, "headers", {}))
        return exc.to_dict()


# Sync functions: FastAPI runs them in its thread pool, so their database reads and writes
# never hold the event loop.
def feedback(req: FeedbackRequest, request: Request, response: Response) -> Any:
    """A reviewer's final outcome; a new Idempotency-Key is a new revision (the latest counts), a
    repeat with the same key and body returns the first record."""

    def run() -> dict[str, Any]:
        key = (request.headers.get("idempotency-key") or "").strip() or None
        record, created = _rt().decider.feedback(
            req.decision_id, req.final_outcome, req.actor, req.reason, _caller(request), key
        )
        response.status_code = 201 if created else 200
        return record

    return _answer(response, run)


def decision(decision_id: str, response: Response) -> Any:
    return _answer(response, lambda: _rt().decider.lookup(decision_id))


def models(response: Response) -> Any:
    from keel.serving.catalogue import catalogue

    return _answer(response, lambda: catalogue(_rt()))


def history(model: str, response: Response) -> Any:
    from keel.models.history import history_json, shared_history

    return _answer(response, lambda: history_json(shared_history(_rt().state.log_url), model))


def reload(response: Response) -> Any:
    def run() -> dict[str, Any]:
        report = _rt().reload()
        response.status_code = 200 if not report.failed else 207
        return {"loaded": report.loaded, "unchanged": report.unchanged, "failed": report.failed}

    return _answer(response, run)


def openapi() -> Any:
    rt = runtime.current()
    served = rt.models.snapshot.models if rt is not None else {}
    return document({name: s.loaded.model.contract for name, s in served.items()})


def metrics() -> Response:
    body = _rt().metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


APP_HANDLERS: dict[str, Callable[..., Any]] = {
    "feedback": feedback,
    "decision": decision,
    "models": models,
    "history": history,
    "reload": reload,
    "openapi": openapi,
    "metrics": metrics,
}


def _register(app: FastAPI) -> None:
    wanted = {r.name for r in routes.ROUTES if r.handler == "app"}
    if wanted != set(APP_HANDLERS):
        raise RuntimeError(f"route table and handlers disagree: {sorted(wanted ^ set(APP_HANDLERS))}")
    for route in routes.ROUTES:
        if route.handler == "app":
            app.add_api_route(route.path, APP_HANDLERS[route.name], methods=[route.method], name=route.name)


_register(admin)


def served_models() -> frozenset[str]:
    """Names of the models served right now (empty while starting)."""
    rt = runtime.current()
    return frozenset(rt.models.snapshot.models) if rt is not None else frozenset()


@bentoml.service(
    name="keel",
    workers=1,
    threads=ServingSettings().threads,
    metrics={"enabled": False},
    traffic={"timeout": 60},
    # The gate writes one log line and one metric sample per request; BentoML's access log
    # would be a second line, and its OpenTelemetry spans (no exporter is configured) cost
    # about 8% of a decide request's server CPU for nothing.
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ".*"},
)
@bentoml.asgi_app(admin, path="/")
class DecisionService:
    def __init__(self) -> None:
        if runtime.current() is None:
            runtime.install(runtime.Runtime.start())
        body_check.start()

    def __is_ready__(self) -> bool:
        # Ready means: models loaded and the decision log's writer can commit (else 503).
        rt = runtime.current()
        return rt is not None and rt.loaded.is_set() and rt.decisions.ready

    @bentoml.on_shutdown  # type: ignore[untyped-decorator]
    def shutdown(self) -> None:
        body_check.close()
        rt = runtime.current()
        if rt is not None:
            rt.close()
            runtime.install(None)


def _gate_options() -> dict[str, Any]:
    return {
        "keys": lambda: rt.keys if (rt := runtime.current()) else None,
        "metrics": lambda: rt.metrics if (rt := runtime.current()) else None,
        "max_body_bytes": ServingSettings().max_body_bytes,
        "decider": lambda: rt.decider if (rt := runtime.current()) else None,
        "served": served_models,
    }


# The decorators turn the class into a bentoml.Service, which mypy cannot see.
DecisionService.add_asgi_middleware(Gate, **_gate_options())  # type: ignore[attr-defined]


def asgi_app() -> Any:
    """The service's ASGI app as `keel serve` runs it: BentoML's app, with the decide route
    answered in front of BentoML's own middleware.

    BentoML's app runs every request through Starlette's error middleware, OpenTelemetry's
    (which builds the URL to find it excluded) and its timeout middleware (one more task per
    request) before the gate: 5 to 6% of a decide request's server CPU, on its latency path,
    for a route that needs none of them (the gate answers errors itself; the log's commit
    timeout bounds the wait). A second gate in front answers decide and hands every other
    request, untouched, to BentoML's app, where the full gate above still checks it; run any
    other way (`bentoml serve`), the service answers decide from that inner gate, the same way.
    """
    from bentoml._internal.context import server_context

    server_context.service_name = DecisionService.name  # type: ignore[attr-defined]
    inner = DecisionService.to_asgi(is_main=True)  # type: ignore[attr-defined]
    return Gate(inner, **_gate_options(), only=frozenset({"decide"}))
