"""Console sessions and CSRF tokens (serving/sessions.py): signing, expiry, binding, the secret file."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from keel.serving.sessions import (
    ConsoleSettings,
    Sessions,
    console_secret,
    cookie_header,
    cookies,
    over_tls,
)


def test_a_session_round_trips_and_names_the_key_never_the_key_itself() -> None:
    sessions = Sessions("s" * 32, 30)
    value, issued = sessions.issue("alice", "ab" * 32)
    assert sessions.verify(value) == issued
    assert issued.key_name == "alice" and issued.hash_prefix == "ab" * 8 and "ab" * 32 not in value


def test_a_forged_tampered_or_foreign_session_is_refused() -> None:
    sessions = Sessions("s" * 32, 30)
    value, _ = sessions.issue("alice", "ab" * 32)
    assert sessions.verify(value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]) is None
    assert Sessions("t" * 32, 30).verify(value) is None  # another secret
    assert sessions.verify("") is None and sessions.verify(None) is None and sessions.verify("x.y.z") is None
    # a sign-in form token is not a session, and a session is not a sign-in token
    pre, token = sessions.issue_pre()
    assert sessions.verify(pre) is None and not sessions.pre_token_ok(value, token)


def test_a_session_expires() -> None:
    sessions = Sessions("s" * 32, 1 / 60)  # one second
    value, _ = sessions.issue("alice", "ab" * 32)
    assert sessions.verify(value) is not None
    time.sleep(2.1)
    assert sessions.verify(value) is None


def test_csrf_tokens_are_bound_to_their_session_and_sign_in_form() -> None:
    sessions = Sessions("s" * 32, 30)
    _, one = sessions.issue("alice", "ab" * 32)
    _, two = sessions.issue("alice", "ab" * 32)
    assert one.csrf != two.csrf
    assert sessions.csrf_ok(one, one.csrf) and not sessions.csrf_ok(one, two.csrf)
    assert not sessions.csrf_ok(one, None) and not sessions.csrf_ok(one, "")
    pre, token = sessions.issue_pre()
    other_pre, other_token = sessions.issue_pre()
    assert sessions.pre_token_ok(pre, token)
    assert not sessions.pre_token_ok(pre, other_token) and not sessions.pre_token_ok(other_pre, token)
    assert not sessions.pre_token_ok(None, token) and not sessions.pre_token_ok(pre, None)


def test_without_a_configured_secret_one_is_made_once_in_keel_home_mode_600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEEL_CONSOLE_SECRET", raising=False)
    first, own = console_secret(ConsoleSettings(), tmp_path)
    again, _ = console_secret(ConsoleSettings(), tmp_path)
    assert own and first == again and len(first) >= 40
    assert stat.S_IMODE(os.stat(tmp_path / "console-secret").st_mode) == 0o600
    monkeypatch.setenv("KEEL_CONSOLE_SECRET", "shared-by-every-replica")
    monkeypatch.setenv("KEEL_CONSOLE_SESSION_MINUTES", "5")
    settings = ConsoleSettings()
    assert console_secret(settings, tmp_path) == ("shared-by-every-replica", False)
    assert Sessions.from_settings(settings, tmp_path).seconds == 300


def test_cookies_are_http_only_strict_on_the_console_path_and_secure_over_tls() -> None:
    name, value = cookie_header("keel_console", "v", secure=False, max_age=60)
    text = value.decode()
    assert name == b"set-cookie" and "HttpOnly" in text and "SameSite=Strict" in text
    assert "Path=/console" in text and "Max-Age=60" in text and "Secure" not in text
    assert "Secure" in cookie_header("keel_console", "v", secure=True, max_age=60)[1].decode()
    plain = {"scheme": "http", "headers": [(b"cookie", b"a=1; keel_console=xyz")]}
    assert cookies(plain) == {"a": "1", "keel_console": "xyz"} and not over_tls(plain)
    assert over_tls({"scheme": "http", "headers": [(b"x-forwarded-proto", b"https")]})
    assert over_tls({"scheme": "https", "headers": []})


@pytest.mark.parametrize(
    ("asked", "kept"),
    [
        ("/console", True),
        ("/console/decisions?model=routing&region=EMEA", True),
        ("/console/decisions/abc", True),
        ("https://evil.example/console", False),
        ("//evil.example/console", False),
        ("/console/sign-in", False),
        ("/consolation", False),
        ("/console/\\evil", False),
        ("/console/x\r\nSet-Cookie: a=b", False),
        ("", False),
        (None, False),
    ],
)
def test_sign_in_returns_only_to_this_consoles_own_pages(asked: str | None, kept: bool) -> None:
    from keel.console.access import safe_next

    assert safe_next(asked) == (asked if kept else None)


def test_the_sign_in_throttle_counts_failures_per_address_forgets_the_oldest_and_0_turns_it_off() -> None:
    from keel.serving.sessions import SignInThrottle

    throttle = SignInThrottle(2)
    throttle.failed("10.0.0.1")
    assert throttle.wait("10.0.0.1") is None  # one of a burst of two
    throttle.failed("10.0.0.1")
    wait = throttle.wait("10.0.0.1")
    assert wait is not None and 0 < wait <= 30  # a token every 30 s
    assert throttle.wait("10.0.0.2") is None
    small = SignInThrottle(1)
    small.MOST_ADDRESSES = 3
    for n in range(5):
        small.failed(f"10.0.1.{n}")
    assert small.wait("10.0.1.0") is None and small.wait("10.0.1.1") is None  # forgotten
    assert small.wait("10.0.1.4") is not None
    off = SignInThrottle(0)
    for _ in range(100):
        off.failed("10.0.0.3")
    assert off.wait("10.0.0.3") is None
