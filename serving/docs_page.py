"""The API docs page: Swagger UI over Keel's own /openapi.json, every file served by Keel itself.

The Swagger UI files are the ones BentoML ships in its package (bentoml/_internal/server/
static_content), so no new dependency and nothing fetched from another host: the page's
Content-Security-Policy allows only this origin, and the validator badge (which would call
an outside service) is off. The document declares bearer security, so the page's Authorize
button takes an API key and sends it as `Authorization: Bearer <key>`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from functools import cache
from pathlib import Path
from typing import Any

import anyio.to_thread

__all__ = ["answer"]

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

PAGE = b"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Keel decision service - API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/assets/keel-docs.js"></script>
</body>
</html>
"""
INIT = b"""window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  persistAuthorization: true,
  displayRequestDuration: true,
  tryItOutEnabled: true
});
"""
ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
}
CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; connect-src 'self'; font-src 'self' data:"
)


@cache
def _asset(name: str) -> bytes:
    from bentoml._internal import server

    return (Path(server.__file__).parent / "static_content" / name).read_bytes()


async def answer(path: str, send: Send) -> None:
    """Send the page (for / and /docs) or one of its assets; 404 for any other asset name."""
    status, ctype, body = 200, "text/html; charset=utf-8", PAGE
    if path.startswith("/docs/assets/"):
        name = path.rsplit("/", 1)[1]
        if name == "keel-docs.js":
            ctype, body = "text/javascript; charset=utf-8", INIT
        elif name in ASSETS:
            ctype, body = ASSETS[name], await anyio.to_thread.run_sync(_asset, name)
        else:
            status, ctype, body = 404, "text/plain; charset=utf-8", b"no such asset"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", ctype.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"content-security-policy", CSP),
                (b"x-content-type-options", b"nosniff"),
                (b"cache-control", b"public, max-age=3600" if status == 200 else b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
