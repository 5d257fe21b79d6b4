"""A real `keel serve` process over HTTP on 127.0.0.1, with real keys, registry and decision log."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.decision_log.database import Database
from keel.feature_defs.contract import MODEL_NAMES
from keel.serving.keys import KeyStore
from tests import cli_process
from tests.cli_process import KeelProcess
from tests.conftest import Store

ROLES = ("decide", "feedback", "read", "admin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: KeelProcess
    env: dict[str, str]
    keys: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None

    def client(self, role: str = "all") -> httpx.Client:
        return httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {self.keys[role]}"}
        )

    def stop(self, sig_kill: bool = False) -> None:
        if self.process.poll() is None:
            if sig_kill:
                self._kill_group()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.process.wait(timeout=10)

    def _kill_group(self) -> None:
        """SIGKILL the server and every process it started, as a container stop or systemd's
        control-group kill does: killing the server alone left its multiprocessing children
        orphaned (21 of them, 160 MB each, after the 20-restart test in a CI run)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def start_server(
    store: Store,
    tmp: Path,
    log_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    ready_timeout: float = 300,
    port: int | None = None,
) -> Server:
    """Start `keel serve` on a free port (or `port`: a restart) and wait (bounded) until /readyz says yes."""
    port = port or free_port()
    env = {**os.environ, **store.env, "BENTOML_HOME": str(tmp / "bentoml")}
    env.pop("MLFLOW_TRACKING_URI", None)
    # Alias moves reach a test's server only by POST /v1/admin/reload unless it asks for polling
    # (polling_server), so a test that reloads by hand sees exactly its own reload.
    env["KEEL_SERVE_RELOAD_POLL_SECONDS"] = "0"
    env.update(extra_env or {})  # after the pop: a test may point the server at a tracking server
    if log_url:
        env["KEEL_DECISION_LOG_URL"] = log_url
    log_path = tmp / f"serve-{port}.log"
    with log_path.open("wb") as out:
        # Its own session (process group): stop(sig_kill=True) kills the group.
        proc = cli_process.start(["serve", "--port", str(port)], env, out, out, new_session=True)
    server = Server(f"http://127.0.0.1:{port}", proc, env, log_path=log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"keel serve exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # a refused connect costs next to nothing; restarts add up (test_client)
    server.stop()
    raise RuntimeError(f"keel serve not ready in {ready_timeout}s:\n{log_path.read_text()[-3000:]}")


def session_models_loaded(report: dict[str, Any]) -> dict[str, str]:
    """A reload report's `loaded`, limited to the session's own models: other test files on the
    same pytest-xdist worker register models of their own into the session store (the
    consistency tests do), and a reload loads whatever has a champion."""
    return {k: v for k, v in report["loaded"].items() if k in MODEL_NAMES}


def make_keys(log_url: str, prefix: str) -> dict[str, str]:
    db = Database(log_url)
    db.create_schema()
    store = KeyStore(db)
    keys = {role: store.add(f"{prefix}-{role}", [role]) for role in ROLES}
    keys["all"] = store.add(f"{prefix}-all", list(ROLES))
    return keys


@pytest.fixture(scope="session")
def server(
    store: Store, registered: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serve")
    log_url = f"sqlite:///{tmp / 'decisions.db'}"
    keys = make_keys(log_url, "main")
    # Per-request log lines are opt-in; the session's server turns them on so tests can read them.
    srv = start_server(store, tmp, log_url, extra_env={"KEEL_SERVE_LOG_REQUESTS": "true"})
    srv.keys = keys
    yield srv
    srv.stop()


@pytest.fixture
def polling_server(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> Iterator[tuple[Server, dict[str, str]]]:
    """A `keel serve` of its own (own decision log) polling the session's registry every 0.5 s,
    and the `keel` CLI environment that moves aliases on it; afterwards the session's champions
    are back and no shadow or canary is left."""
    from keel.models import registry
    from tests.conftest import cli_env

    log_url = f"sqlite:///{tmp_path / 'decisions.db'}"
    keys = make_keys(log_url, "poll")
    srv = start_server(store, tmp_path, log_url, extra_env={"KEEL_SERVE_RELOAD_POLL_SECONDS": "0.5"})
    srv.keys = keys
    env = cli_env(store, KEEL_DECISION_LOG_URL=log_url, KEEL_SERVE_RELOAD_POLL_SECONDS="0.5")
    try:
        yield srv, env
    finally:
        srv.stop()
        client = registry.client()
        for name, version in registered.items():
            registry.promote(name, version)
            for alias in (registry.SHADOW, registry.CANARY):
                if registry.has_alias(name, alias):
                    client.delete_registered_model_alias(name, alias)
