"""The HTTP floor for `bench.decide_path`: an ASGI app that reads the body and answers a fixed 200.

Served exactly as `keel serve` serves Keel's app (serving.server.run_app: one process, uvicorn
with the same options), so what it costs per request is what the HTTP stack under Keel costs
before any of Keel's own work: the floor under any endpoint served this way.

    python -m bench.noop_app --port 3002
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["app", "main"]

Message = MutableMapping[str, Any]

BODY = b'{"decisions":[{"decision_id":"00000000-0000-0000-0000-000000000000"}]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(
    scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = bool((await receive()).get("more_body", False))
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="no-op ASGI endpoint served as keel serve serves Keel")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3002)
    args = parser.parse_args(argv)
    from keel.serving.server import run_app

    run_app(app, args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
