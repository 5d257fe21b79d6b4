"""The lines `keel serve` prints: what it starts from, then one line once every model is loaded."""

from __future__ import annotations

import threading
from typing import Any

from keel.terminal import console

__all__ = ["announce_start", "announce_when_ready"]


def _address(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # a wildcard bind is reachable on loopback
    return f"http://{shown}:{port}"


def announce_start(state: Any, settings: Any) -> None:
    from keel.cli.state import locations

    console().print(
        f"keel serve: loading the {settings.alias!r} version of each model; using {locations(state).line()}"
    )


def ready_line(rt: Any, sessions: Any = None) -> str:
    """Address, models and versions served, the API docs and console, and where the API keys
    come from; when the console's secret was made on this machine, that replicas need one."""
    from keel.decision_log.database import redact
    from keel.serving.routes import ROUTES

    url = _address(rt.settings.host, rt.settings.port)
    path = {r.name: r.path for r in ROUTES}  # the route table owns where the docs are
    served = ", ".join(
        f"{name} v{s.loaded.ref.version}" for name, s in sorted(rt.models.snapshot.models.items())
    )
    active = sum(1 for k in rt.keys.list_keys() if not k.revoked_at)
    return (
        f"keel serve: ready on {url} (bound to {rt.settings.host}) - {served} ({rt.settings.alias}) - "
        f"API docs {url}{path['docs']} (OpenAPI {url}{path['openapi']}) - "
        f"{active} active API key(s) from the api_keys table of {redact(rt.state.log_url)} "
        "(`keel keys add` / `keel keys rotate`) - "
        f"review console {url}{path['console_overview']}"
        + (
            f" (session secret made in {rt.state.home_dir}; replicas need the same KEEL_CONSOLE_SECRET)"
            if sessions is not None and sessions.own_secret
            else ""
        )
    )


def announce_when_ready(rt: Any, sessions: Any = None) -> None:
    """Print the ready line from a daemon thread once the models are in (never if it stops first)."""

    def wait() -> None:
        while not rt.stopping.is_set():
            if rt.loaded.wait(1.0):
                console().print(ready_line(rt, sessions))
                return

    threading.Thread(target=wait, name="ready-line", daemon=True).start()
