"""`keel serve`: one process, uvicorn running the BentoML service's ASGI app.

One process per replica keeps a kill -9 simple (nothing orphaned keeps the port) and lets any
number of replicas share a PostgreSQL decision log.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from keel.serving.settings import ServingSettings


def serve(settings: ServingSettings) -> None:
    # BentoML's Prometheus client insists on a multiprocess directory before it is imported.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="keel-prom-"))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    logging.getLogger("keel").setLevel(logging.INFO)
    # One log line per request only on request (KEEL_SERVE_LOG_REQUESTS); errors are logged anyway.
    logging.getLogger("keel.http").setLevel(logging.INFO if settings.log_requests else logging.WARNING)
    from keel.serving import runtime
    from keel.serving.service import asgi_app

    from keel.ready_line import announce_start, announce_when_ready

    rt = runtime.Runtime.start(settings=settings)
    announce_start(rt.state, settings)
    announce_when_ready(rt)
    runtime.install(rt)
    run_app(asgi_app(), settings.host, settings.port)


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
