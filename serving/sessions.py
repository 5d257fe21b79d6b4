"""Console sessions: a key exchanged at sign-in for a short-lived signed cookie, and CSRF tokens.

The gate (serving/gate.py) verifies a session on every console route, the console
(keel/console) issues one at sign-in; both use this module, so the rules live in one place.
A session is signed (itsdangerous) with KEEL_CONSOLE_SECRET, which every replica must share;
without it a secret is made once in KEEL_HOME (mode 600), good for one machine. A session
names its key by name and hash prefix (never the key) and is honoured only while that key is
active (serving/keys.py `session_key`), so revoking the key ends its sessions. Each session
carries a random CSRF token that every POST must echo; the sign-in form's token is bound to a
pre-session cookie the same way.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from keel.serving.keys import TokenBucket
from keel.settings import local_secret

__all__ = [
    "COOKIE",
    "PATH",
    "PRE_COOKIE",
    "SECRET_FILE",
    "SECURITY_HEADERS",
    "ConsoleSettings",
    "Session",
    "Sessions",
    "SignInThrottle",
    "console_secret",
    "cookie_header",
    "cookies",
    "over_tls",
]

COOKIE = "keel_console"
PRE_COOKIE = "keel_console_sign_in"
PATH = "/console"
SECRET_FILE = "console-secret"
PRE_SESSION_SECONDS = 3600
"""How long a sign-in form stays usable."""

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)
"""On every console response, the gate's redirects included."""


class ConsoleSettings(BaseSettings):
    """The review console's sessions (KEEL_CONSOLE_*)."""

    model_config = SettingsConfigDict(env_prefix="KEEL_CONSOLE_", extra="ignore")

    secret: SecretStr | None = None
    """Signs session cookies; every replica needs the same (unset: one made in KEEL_HOME)."""

    session_minutes: float = 30.0
    """How long a console session lasts after sign-in."""

    sign_in_failures_per_minute: float = Field(default=10.0, ge=0)
    """Failed sign-ins allowed per client address and minute (as a burst, then refilled at that
    rate); past them the sign-in form answers 429 without trying the key. 0: no limit."""


def console_secret(settings: ConsoleSettings, home: Path) -> tuple[str, bool]:
    """The signing secret, and whether it is this machine's own (made in `home`, not shared)."""
    if settings.secret is not None and settings.secret.get_secret_value():
        return settings.secret.get_secret_value(), False
    return local_secret(home / SECRET_FILE), True


@dataclass(frozen=True)
class Session:
    key_name: str
    hash_prefix: str
    csrf: str


class Sessions:
    """Issues and verifies session and pre-session cookies under one secret."""

    def __init__(
        self, secret: str, minutes: float, own_secret: bool = False, failures_per_minute: float = 10.0
    ) -> None:
        self.throttle = SignInThrottle(failures_per_minute)
        self._signer = URLSafeTimedSerializer(secret, salt="keel.console.session")
        self._pre = URLSafeTimedSerializer(secret, salt="keel.console.sign-in")
        self.seconds = max(1, round(minutes * 60))
        self.own_secret = own_secret
        """True when the secret was made in KEEL_HOME: replicas need KEEL_CONSOLE_SECRET."""

    @classmethod
    def from_settings(cls, settings: ConsoleSettings, home: Path) -> Sessions:
        secret, own = console_secret(settings, home)
        return cls(secret, settings.session_minutes, own, settings.sign_in_failures_per_minute)

    def issue(self, key_name: str, key_hash: str) -> tuple[str, Session]:
        session = Session(key_name, key_hash[:16], secrets.token_urlsafe(24))
        value = self._signer.dumps({"k": session.key_name, "h": session.hash_prefix, "c": session.csrf})
        return value, session

    def verify(self, value: str | None) -> Session | None:
        """The session a cookie holds, or None (missing, forged, or older than the session length)."""
        if not value:
            return None
        try:
            data: Any = self._signer.loads(value, max_age=self.seconds)
        except BadSignature:  # SignatureExpired is a BadSignature
            return None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in "khc"):
            return None
        return Session(data["k"], data["h"], data["c"])

    def issue_pre(self) -> tuple[str, str]:
        """(cookie value, form token) for a sign-in form."""
        token = secrets.token_urlsafe(24)
        return self._pre.dumps(token), token

    def pre_token_ok(self, cookie: str | None, token: str | None) -> bool:
        if not cookie or not token:
            return False
        try:
            expected = self._pre.loads(cookie, max_age=PRE_SESSION_SECONDS)
        except BadSignature:
            return False
        return isinstance(expected, str) and hmac.compare_digest(expected.encode(), token.encode())

    @staticmethod
    def csrf_ok(session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(session.csrf.encode(), (token or "").encode())


def cookies(scope: dict[str, Any] | Any) -> dict[str, str]:
    """The request's cookies (a malformed Cookie header counts as none)."""
    raw = b"; ".join(v for k, v in scope["headers"] if k.lower() == b"cookie").decode("latin-1")
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return {}
    return {k: m.value for k, m in jar.items()}


def over_tls(scope: dict[str, Any] | Any) -> bool:
    """Whether the browser reached us over TLS (directly, or through a proxy that says so)."""
    if scope.get("scheme") == "https":
        return True
    forwarded = [v for k, v in scope["headers"] if k.lower() == b"x-forwarded-proto"]
    return bool(forwarded) and forwarded[0].split(b",")[0].strip().lower() == b"https"


def cookie_header(name: str, value: str, secure: bool, max_age: int | None) -> tuple[bytes, bytes]:
    """A Set-Cookie header for the console's path; `max_age` 0 deletes the cookie."""
    parts = [f"{name}={value}", f"Path={PATH}", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return b"set-cookie", "; ".join(parts).encode("latin-1")


class SignInThrottle:
    """Failed console sign-ins per client address, as a token bucket each (serving/keys.py's).

    Keys are 256-bit, so guessing one is hopeless anyway; the limit keeps a script from using
    the sign-in form as a free oracle or a load generator (each try reads the key set). Only
    failures take a token, so people who sign in never meet it; a throttled address is refused
    before its key is tried. In memory per process: each replica counts its own tries."""

    MOST_ADDRESSES = 10_000
    """Addresses remembered (least recently failed forgotten first): memory stays bounded."""

    def __init__(self, failures_per_minute: float) -> None:
        self.rate = failures_per_minute / 60
        self.burst = max(1.0, failures_per_minute)
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def wait(self, address: str) -> float | None:
        """Seconds before `address` may try again, or None if it may now."""
        bucket = self._buckets.get(address) if self.rate else None
        return bucket.wait() if bucket is not None else None

    def failed(self, address: str) -> None:
        """Count one failed sign-in from `address`."""
        if not self.rate:
            return
        bucket = self._buckets.pop(address, None) or TokenBucket(self.rate, self.burst)
        self._buckets[address] = bucket  # most recent last
        bucket.take()
        while len(self._buckets) > self.MOST_ADDRESSES:
            self._buckets.popitem(last=False)
