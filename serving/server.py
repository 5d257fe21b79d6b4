"""`keel serve`: one process, uvicorn running the BentoML service's ASGI app.

One process per replica keeps a kill -9 simple (nothing orphaned keeps the port) and lets any
number of replicas share a PostgreSQL decision log.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from serving.settings import ServingSettings


def serve(settings: ServingSettings) -> None:
    # BentoML's Prometheus client insists on a multiprocess directory before it is imported.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="keel-prom-"))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    logging.getLogger("keel").setLevel(logging.INFO)
    import uvicorn
    from bentoml._internal.context import server_context

    from serving import runtime
    from serving.service import DecisionService

    service: Any = DecisionService  # a bentoml.Service once decorated; mypy sees the bare class
    runtime.install(runtime.Runtime.start(settings=settings))
    server_context.service_name = service.name
    app = service.to_asgi(is_main=True)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
