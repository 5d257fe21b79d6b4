"""ASGI middleware in front of every route: route table, API keys, content type, size limit, logs.

BentoML has no auth, body limit or content-type check of its own. The gate authorises every
request from the one route table (serving/routes.py): a path not declared there is denied (401
without a key, 404 with one), public routes pass without a key. The decide route is answered by
Keel's own handler (serving/decide_endpoint.py); every other route goes on to the BentoML app,
whose bare 400 for a pydantic error the gate turns into Keel's 422 with field-level errors.
Console routes (handler `console`) go to the app the caller mounted at /console once a
session cookie (serving/sessions.py) names an active key with the route's role; without one,
the browser is sent to sign in. Every error the gate answers leaves through
serving/error_response.py. The gate holds the service's runtime (keys, metrics, decider,
models), handed to it when the app is built.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import urlencode

import orjson

from keel.errors import (
    FieldError,
    InvalidInput,
    KeelError,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from keel.serving import decide_endpoint, docs_page, routes
from keel.serving.error_response import send_error
from keel.serving.runtime import Runtime
from keel.serving.sessions import COOKIE, SECURITY_HEADERS, Sessions, cookies
from keel.serving.tracing import DecideSpan

__all__ = ["Gate"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

WANTED_HEADERS = frozenset(
    {b"authorization", b"content-type", b"content-length", b"idempotency-key", b"traceparent"}
)
log = logging.getLogger("keel.http")


class Gate:
    def __init__(
        self,
        app: App,
        runtime: Runtime,
        only: frozenset[str] | None = None,
        mounts: Mapping[str, App] | None = None,
        sessions: Sessions | None = None,
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.mounts = dict(mounts or {})
        """Apps the caller mounts (the console at routes.CONSOLE): they get the unchanged scope."""
        self.sessions = sessions
        self.max_body_bytes = runtime.settings.max_body_bytes
        self.tracing = runtime.tracing
        """Decide spans (serving/tracing.py), or None: then tracing costs one check per request."""
        self.only = only
        """Answer only these handlers (serving/routes.py) and pass every other request on
        untouched, to an app with a full gate of its own (see serving/service.py `asgi_app`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = routes.match(scope["method"], scope["path"])
        if self.only is not None and (found is None or found.route.handler not in self.only):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, Any] = {"status": 500}
        trace = None
        if self.tracing is not None and found is not None and found.route.handler == "decide":
            trace = self.tracing.begin(scope["headers"])

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif seen["status"] >= 400 and "error" not in seen:
                seen["error"] = _error_code(message.get("body", b""))
            await send(message)

        try:
            await self._handle(scope, found, receive, tracked, trace)
        finally:
            self._observe(scope, found, seen, time.perf_counter() - started)
            if trace is not None:
                trace.end(seen["status"], seen.get("error"))

    def _observe(
        self, scope: Scope, found: routes.Match | None, seen: dict[str, Any], elapsed: float
    ) -> None:
        """One metric sample and one log line per request: route template, status, caller, error code.

        Never the raw path, a body or a key: they may hold ids, case data or secrets.
        """
        route = found.route.path if found else "other"
        if found and found.route.handler == "decide" and found.params["model"] in self.served():
            route = f"/v1/{found.params['model']}/decide"  # bounded: served model names only
        self.runtime.metrics.requests.labels(scope["method"], route, str(seen["status"])).observe(elapsed)
        if not log.isEnabledFor(logging.INFO):
            return
        line: dict[str, Any] = {
            "method": scope["method"],
            "route": route,
            "status": seen["status"],
            "ms": round(elapsed * 1000, 2),
            "caller": scope.get("state", {}).get("caller", "-"),
        }
        if "error" in seen:
            line["error"] = seen["error"]
        log.info(orjson.dumps(line).decode())

    async def _handle(
        self,
        scope: Scope,
        found: routes.Match | None,
        receive: Receive,
        send: Send,
        trace: DecideSpan | None = None,
    ) -> None:
        if found is None and (bare := _console_without_slash(scope)) is not None:
            await _redirect(send, 308, bare)  # people type and link `/console/`
            return
        if found is not None and found.route.handler == "console":
            await self._console(scope, found.route, receive, send)
            return
        if found is not None and found.route.public:
            if found.route.handler == "docs":
                await docs_page.answer(scope["path"], send)
            else:
                await self.app(scope, receive, send)
            return
        headers = {k: v.decode("latin-1") for k, v in scope["headers"] if k.lower() in WANTED_HEADERS}
        body = b""
        try:
            keys = self.runtime.keys
            key = await keys.authenticate_async(headers.get(b"authorization"))
            scope.setdefault("state", {})["caller"] = key.name
            keys.check_rate(key)
            if found is None:
                raise NotFound("no such route; see /openapi.json")
            route = found.route
            if route.role != routes.ANY_KEY:
                keys.authorize(key, route.role)
            if route.json_body:
                ctype = headers.get(b"content-type", "").split(";")[0].strip().lower()
                if ctype != "application/json":
                    raise UnsupportedMediaType("send the request body as application/json")
                body = await self._read_body(headers, receive)
            if route.handler == "decide":
                idempotency_key = (headers.get(b"idempotency-key") or "").strip() or None
                await decide_endpoint.answer(
                    self.runtime.decider,
                    found.params["model"],
                    self.served(),
                    body,
                    key.name,
                    idempotency_key,
                    send,
                    traceparent=headers.get(b"traceparent"),
                    on_decided=trace.decided if trace is not None else None,
                )
                return
        except KeelError as exc:
            await send_error(send, exc)
            return
        await self.app(scope, _replay(body, receive) if found.route.json_body else receive, _as_422(send))

    async def _console(self, scope: Scope, route: routes.Route, receive: Receive, send: Send) -> None:
        """A console route: authorised by a session cookie, never a bearer key. Without a valid
        session (none, forged, expired, or its key revoked) the browser is sent to sign in."""
        mount = self.mounts.get(routes.CONSOLE)
        if mount is None or (self.sessions is None and not route.public):
            await send_error(send, NotFound("the console is not mounted on this app"))
            return
        if route.public:
            await mount(scope, receive, send)
            return
        assert self.sessions is not None
        session = self.sessions.verify(cookies(scope).get(COOKIE))
        key = self.runtime.keys.session_key(session.key_name, session.hash_prefix) if session else None
        if session is None or key is None:
            await _to_sign_in(scope, send)
            return
        scope.setdefault("state", {})["caller"] = key.name
        try:
            self.runtime.keys.check_rate(key)
            self.runtime.keys.authorize(key, route.role)
        except KeelError as exc:
            await send_error(send, exc)
            return
        scope["state"]["console_session"] = session
        scope["state"]["console_key"] = key
        await mount(scope, receive, send)

    def served(self) -> frozenset[str]:
        """Names of the models served right now (decide routes and their metric labels)."""
        return frozenset(self.runtime.models.snapshot.models)

    async def _read_body(self, headers: dict[bytes, str], receive: Receive) -> bytes:
        """The whole body, up to the limit (413 past it, before reading it if it says so)."""
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise PayloadTooLarge(f"request body over {self.max_body_bytes} bytes")
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge(f"request body over {self.max_body_bytes} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def _console_without_slash(scope: Scope) -> str | None:
    """A console page asked for with a trailing slash: where it really is (with its query)."""
    path = str(scope["path"])
    if not (path.startswith(routes.CONSOLE) and path.endswith("/")):
        return None
    bare = path.rstrip("/")
    if routes.match(str(scope["method"]), bare) is None:
        return None
    query = scope.get("query_string", b"").decode("latin-1")
    return bare + (f"?{query}" if query else "")


async def _to_sign_in(scope: Scope, send: Send) -> None:
    """303 to the sign-in form; a page asked for by GET is named there, to come back to after."""
    location = f"{routes.CONSOLE}/sign-in"
    if scope["method"] in ("GET", "HEAD"):
        query = scope.get("query_string", b"").decode("latin-1")
        location += "?" + urlencode({"next": scope["path"] + (f"?{query}" if query else "")})
    await _redirect(send, 303, location)


async def _redirect(send: Send, status: int, location: str) -> None:
    headers = [
        (b"location", location.encode("latin-1")),
        (b"cache-control", b"no-store"),
        (b"content-length", b"0"),
        *SECURITY_HEADERS,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the app the body the gate already read, then the connection's own messages."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _error_code(body: bytes) -> str:
    """The `error` name of a Keel error body, for the request log line (nothing else of it)."""
    try:
        value = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return "-"
    return str(value)[:60] if value else "-"


def _as_422(send: Send) -> Send:
    """FastAPI answers a bad body with 400/422 {"detail": [...] or "..."}: make them Keel 422s."""
    held: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] in (400, 422):
            held["start"] = message
            return
        if "start" not in held:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(chunks)
        try:
            detail = orjson.loads(body).get("detail")
        except (orjson.JSONDecodeError, AttributeError):
            detail = None
        if isinstance(detail, str):  # FastAPI's answer to a body that is not JSON at all
            detail = [{"loc": ["body"], "msg": detail}]
        if not isinstance(detail, list):
            await send(held["start"])
            await send({"type": "http.response.body", "body": body})
            return
        errors = [_field_error(d) for d in detail[:100] if isinstance(d, dict)]
        error = InvalidInput("the request body does not match the schema", errors, len(detail))
        await send_error(send, error)

    return wrapped


def _field_error(detail: dict[str, Any]) -> FieldError:
    loc = [str(x) for x in detail.get("loc", [])]
    loc = loc[1:] if loc[:1] == ["body"] and len(loc) > 1 else loc  # FastAPI's "where": not a field
    return FieldError(-1, ".".join(loc) or "body", str(detail.get("msg", "invalid")))
