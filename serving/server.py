"""`keel serve`: one process, uvicorn running the BentoML service's ASGI app.

One process per replica keeps a kill -9 simple (nothing orphaned keeps the port) and lets any
number of replicas share a PostgreSQL decision log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

from keel.serving.settings import ServingSettings
from keel.settings import StateSettings

if TYPE_CHECKING:
    from keel.serving.runtime import Runtime
    from keel.serving.sessions import Sessions

__all__ = ["run_app", "serve"]


def serve(
    state: StateSettings,
    settings: ServingSettings,
    on_start: Callable[[Runtime, Sessions], None] | None = None,
    mounts: Callable[[Runtime, Sessions], Mapping[str, Any]] | None = None,
) -> None:
    """Build the runtime, hand it to `on_start` (the CLI prints its lines there) and serve until stopped.

    The entry point of the service: the settings come from the caller (the `keel serve` command),
    per-key rates, console sessions (KEEL_CONSOLE_*) and tracing (KEEL_TRACING_*) are read here,
    the runtime is passed to the app, never looked up, and `mounts` builds the apps the caller
    mounts beside the API (the review console), which serving never imports."""
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    logging.getLogger("keel").setLevel(logging.INFO)
    # One log line per request only on request (KEEL_SERVE_LOG_REQUESTS); errors are logged anyway.
    logging.getLogger("keel.http").setLevel(logging.INFO if settings.log_requests else logging.WARNING)
    # BentoML's Prometheus client insists on a multiprocess directory before it is imported; one
    # made here is removed when the server stops instead of being left in the temp folder.
    with _stopped_by_sigterm(), tempfile.TemporaryDirectory(prefix="keel-prom-") as prom:
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom
        from keel.serving.keys import KeySettings
        from keel.serving.runtime import Runtime
        from keel.serving.service import asgi_app
        from keel.serving.sessions import ConsoleSettings, Sessions
        from keel.serving.tracing import TracingSettings

        rt = Runtime.start(state, settings, KeySettings(), TracingSettings())
        sessions = Sessions.from_settings(ConsoleSettings(), rt.state.home_dir)
        if on_start is not None:
            on_start(rt, sessions)
        try:
            app = asgi_app(rt, mounts(rt, sessions) if mounts else None, sessions)
            run_app(app, settings.host, settings.port)
        finally:
            if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == prom:
                del os.environ["PROMETHEUS_MULTIPROC_DIR"]


class _Terminated(BaseException):
    """SIGTERM arrived after uvicorn's graceful shutdown: unwind, cleaning up, then die of it."""


@contextlib.contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """Let cleanup run when the process is stopped with SIGTERM, and still die of the signal.

    uvicorn shuts down gracefully on SIGTERM, then restores the handler it found and raises the
    signal again; with the default handler the process would die on the spot, skipping every
    `finally` (the Prometheus folder would stay behind). This handler unwinds the stack instead;
    once cleanup is done the signal is raised once more with the default handler, so the exit
    status is the same as before (killed by SIGTERM).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def unwind(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_app(app: Any, host: str, port: int) -> None:
    """Serve an ASGI app in this process with uvicorn (blocks until stopped)."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
