"""The console's ASGI app: its pages, the templates that draw them and the headers on every answer.

The gate has authorised every request that reaches it (a session for the pages, none for the
sign-in form and the style sheet) and put the session and key in the scope's state. Pages are
plain functions Starlette runs in its thread pool, so their database reads never hold the event
loop; sign-in reads its small form body on the loop and checks the key in a worker thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from keel.console import access, monitoring_pages, pages, workload_pages
from keel.console.monitoring_source import MonitoringSource
from keel.errors import KeelError
from keel.serving.routes import ROUTES
from keel.serving.runtime import Runtime
from keel.serving.sessions import SECURITY_HEADERS, Sessions

__all__ = ["Console", "console_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

NAV = (
    ("console_overview", "Overview"),
    ("console_decisions", "Decisions"),
    ("console_monitoring", "Monitoring"),
    ("console_queue", "Review queue"),
    ("console_overrides", "Overrides"),
    ("console_changes", "Changes"),
)
STATIC = frozenset({"console.css"})


class Console:
    """What every page needs: the runtime, sessions, the log's database and the templates."""

    def __init__(self, rt: Runtime, sessions: Sessions, monitoring: MonitoringSource | None) -> None:
        self.rt = rt
        self.sessions = sessions
        self.monitoring = monitoring
        self.db = rt.decisions.db
        self.templates = Environment(
            loader=PackageLoader("keel.console", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["num"] = _num
        self.templates.filters["pct"] = _pct
        self.paths = {r.name: r.path for r in ROUTES if r.handler == "console"}

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        state = request.scope.get("state", {})
        session = state.get("console_session")
        key = state.get("console_key")
        page = self.templates.get_template(template).render(
            paths=self.paths,
            nav=NAV,
            current=request.scope.get("route_name", ""),
            signed_in=key.name if key is not None else None,
            roles=", ".join(sorted(key.roles)) if key is not None else "",
            csrf=session.csrf if session is not None else "",
            **context,
        )
        return HTMLResponse(page, status_code=status, headers={"cache-control": "no-store"})


def console_app(rt: Runtime, sessions: Sessions, monitoring: MonitoringSource | None = None) -> ASGIApp:
    """The console's ASGI app over `rt`; `monitoring` gives the Overview its verdicts and the
    Monitoring pages their runs (None: no run store, the pages say so)."""
    console = Console(rt, sessions, monitoring)

    def page(name: str, handler: Callable[[Console, Request], Response]) -> Route:
        def endpoint(request: Request) -> Response:
            request.scope["route_name"] = name
            return handler(console, request)

        return Route(console.paths[name], endpoint, methods=["GET"], name=name)

    async def sign_in_post(request: Request) -> Response:
        return await access.sign_in_post(console, request)

    def sign_in(request: Request) -> Response:
        return access.sign_in_form(console, request)

    async def sign_out(request: Request) -> Response:
        return await access.sign_out(console, request)

    routes = [
        Route(console.paths["console_sign_in"], sign_in, methods=["GET"]),
        Route(console.paths["console_sign_in_post"], sign_in_post, methods=["POST"]),
        Route(console.paths["console_sign_out"], sign_out, methods=["POST"]),
        Route(console.paths["console_static"], static, methods=["GET"]),
        page("console_overview", pages.overview),
        page("console_decisions", pages.decisions),
        page("console_decisions_csv", pages.decisions_csv),
        page("console_decision", pages.decision),
        page("console_queue", workload_pages.queue),
        page("console_overrides", workload_pages.overrides),
        page("console_changes", pages.changes),
        page("console_monitoring", monitoring_pages.monitoring),
        page("console_monitoring_model", monitoring_pages.monitoring_model),
        page("console_run", monitoring_pages.run_page),
    ]

    def refused(request: Request, exc: Exception) -> Response:
        # A Keel error (the log's database away, a rate limit) as a page, with its status.
        status = exc.status_code if isinstance(exc, KeelError) else 500
        return console.render(request, "error.j2", status, title="Not available", message=str(exc))

    return _with_headers(Starlette(routes=routes, exception_handlers={KeelError: refused}))


def _num(value: Any, digits: int = 4) -> str:
    """A number to `digits` decimals; anything else (None, a per-segment mapping) as text."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, int | float):
        return f"{value:.{digits}f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_num(v, digits)}" for k, v in value.items())
    return str(value)


def _pct(value: Any, digits: int = 1) -> str:
    """A share as a percentage; anything not a number as a dash."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    return f"{value * 100:.{digits}f}%"


def static(request: Request) -> Response:
    name = request.path_params["asset"]
    if name not in STATIC:
        return Response("not found", status_code=404, media_type="text/plain")
    body = resources.files("keel.console").joinpath("static", name).read_bytes()
    return Response(body, media_type="text/css", headers={"cache-control": "public, max-age=3600"})


def _with_headers(app: ASGIApp) -> ASGIApp:
    """Every console answer carries the security headers; pages are never cached."""

    async def wrapped(scope: Scope, receive: Any, send: Any) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*headers, *SECURITY_HEADERS]}
            await send(message)

        await app(scope, receive, with_headers)

    return wrapped
