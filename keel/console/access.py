"""Signing in and out: a key with `read` or `review` becomes a session cookie (serving/sessions.py).

Every POST carries a CSRF token: the sign-in form's is bound to a pre-session cookie, the
sign-out form's to the session; a POST without the matching token is refused with 403.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from keel.errors import Unauthorized
from keel.serving.keys import ApiKey, hash_key
from keel.serving.routes import CONSOLE
from keel.serving.sessions import COOKIE, PRE_COOKIE, cookie_header, cookies, over_tls

if TYPE_CHECKING:
    from keel.console.app import Console

__all__ = ["safe_next", "sign_in_form", "sign_in_post", "sign_out"]

MAX_FORM_BYTES = 4096
CONSOLE_ROLES = ("read", "review")


def sign_in_form(
    console: Console, request: Request, error: str | None = None, status: int = 200, next_: str | None = None
) -> Response:
    cookie, token = console.sessions.issue_pre()
    back = safe_next(next_ if next_ is not None else request.query_params.get("next"))
    response = console.render(request, "sign_in.j2", status, token=token, error=error, next=back or "")
    _set(response, cookie_header(PRE_COOKIE, cookie, over_tls(request.scope), 3600))
    return response


async def _form(request: Request) -> dict[str, str] | None:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=10)
    return {k: v[0] for k, v in fields.items()}


def _forbidden(console: Console, request: Request, why: str) -> Response:
    return console.render(request, "error.j2", 403, title="Refused", message=why)


async def sign_in_post(console: Console, request: Request) -> Response:
    form = await _form(request)
    pre = cookies(request.scope).get(PRE_COOKIE)
    if form is None or not console.sessions.pre_token_ok(pre, form.get("csrf")):
        return _forbidden(
            console, request, "The form's security token is missing or stale. Load the sign-in page again."
        )
    address = request.client.host if request.client is not None else "-"
    wait = console.sessions.throttle.wait(address)
    if wait is not None:
        seconds = max(1, math.ceil(wait))
        why = f"Too many failed sign-ins from this address. Try again in {seconds} s."
        refused = sign_in_form(console, request, why, 429, form.get("next"))
        refused.headers["Retry-After"] = str(seconds)
        return refused
    key = await anyio.to_thread.run_sync(_authenticate, console, form.get("key", "").strip())
    if key is None:
        console.sessions.throttle.failed(address)
        return sign_in_form(console, request, "That key is unknown or revoked.", 401, form.get("next"))
    if not any(console.rt.keys.holds(key, role) for role in CONSOLE_ROLES):
        why = f"Key {key.name!r} has neither the read nor the review role."
        return sign_in_form(console, request, why, 403, form.get("next"))
    value, _ = console.sessions.issue(key.name, hash_key(form["key"].strip()))
    back = safe_next(form.get("next")) or console.paths["console_overview"]
    response = Response(status_code=303, headers={"location": back})
    tls = over_tls(request.scope)
    _set(response, cookie_header(COOKIE, value, tls, console.sessions.seconds))
    _set(response, cookie_header(PRE_COOKIE, "", tls, 0))
    return response


def safe_next(value: str | None) -> str | None:
    """A console page to return to after sign-in, or None: only this console's own paths, so
    the sign-in form cannot be made to send a browser to another site."""
    if not value or len(value) > 2000 or any(c in value for c in "\\\r\n\t"):
        return None
    if not (value == CONSOLE or value.startswith((f"{CONSOLE}/", f"{CONSOLE}?"))):
        return None
    if value.startswith(f"{CONSOLE}/sign-"):
        return None
    return value


def _authenticate(console: Console, key: str) -> ApiKey | None:
    """The key's identity; a key the in-memory set does not hold yet is read once from the database."""
    if not key:
        return None
    store = console.rt.keys
    try:
        return store.authenticate(f"Bearer {key}")
    except Unauthorized:
        store.refresh()
    try:
        return store.authenticate(f"Bearer {key}")
    except Unauthorized:
        return None


async def sign_out(console: Console, request: Request) -> Response:
    form = await _form(request)
    session = request.scope.get("state", {}).get("console_session")
    if form is None or session is None or not console.sessions.csrf_ok(session, form.get("csrf")):
        return _forbidden(console, request, "The form's security token is missing or wrong.")
    response = Response(status_code=303, headers={"location": console.paths["console_sign_in"]})
    _set(response, cookie_header(COOKIE, "", over_tls(request.scope), 0))
    return response


def _set(response: Response, header: tuple[bytes, bytes]) -> None:
    response.raw_headers.append(header)
