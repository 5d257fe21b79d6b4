"""The console's sign-in form over HTTP on a real `keel serve`: failed sign-ins from one address
are limited (KEEL_CONSOLE_SIGN_IN_FAILURES_PER_MINUTE), a throttled address is refused before its
key is tried, and people who sign in with their key never meet the limit."""

from __future__ import annotations

import re
from contextlib import closing
from pathlib import Path

import httpx

from tests.conftest import Store
from tests.integration.conftest import make_keys, start_server


def _post(client: httpx.Client, key: str) -> httpx.Response:
    form = client.get("/console/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    return client.post("/console/sign-in", data={"csrf": token.group(1), "key": key})


def test_failed_sign_ins_from_one_address_are_limited_and_good_ones_are_not(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    log_url = f"sqlite:///{tmp_path / 'decisions.db'}"
    keys = make_keys(log_url, "sign-in")
    srv = start_server(store, tmp_path, log_url, extra_env={"KEEL_CONSOLE_SIGN_IN_FAILURES_PER_MINUTE": "3"})
    try:
        with closing(httpx.Client(base_url=srv.url, timeout=30, follow_redirects=False)) as client:
            for _ in range(5):  # successes take no token
                assert _post(client, keys["read"]).status_code == 303
            for n in range(3):
                wrong = _post(client, f"keel_wrong-{n}")
                assert wrong.status_code == 401 and "unknown or revoked" in wrong.text
            refused = _post(client, keys["read"])  # the right key, but the address is throttled
            assert refused.status_code == 429, refused.text
            assert "Too many failed sign-ins" in refused.text
            assert 1 <= int(refused.headers["retry-after"]) <= 20  # one token back at 3 a minute
            assert "keel_console" not in refused.cookies
            # A signed-in session keeps working meanwhile: only the form is limited.
            assert client.get("/console").status_code == 200
    finally:
        srv.stop()
