"""The bare baseline for `bench.serving`: a plain `@bentoml.api` route around `booster.predict`.

It shares no code with Keel: it imports only BentoML, pydantic, numpy and LightGBM, and reads
two files the benchmark writes from the registered model version Keel serves: the booster in
LightGBM's text format and a JSON feature spec (input fields with their category lists,
feature order, derived differences, class names). Per request it does what any user's
endpoint for this booster does at the least: BentoML parses the JSON body into the request
model, the route encodes each case into a feature row and calls `booster.predict`
(one OpenMP thread) and returns the class probabilities. No auth, no explanation, no policy,
no log.

Its launch is its own too: one process, uvicorn over `BareService.to_asgi(is_main=True)`
(BentoML's HTTP app without its multi-process supervisor), as `keel serve` is run.

    BARE_SPEC=spec.json BARE_THREADS=8 python -m bench.bare_service --port 3001
"""

from __future__ import annotations

import os
import tempfile

# BentoML's Prometheus client insists on a multiprocess directory before it is imported.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-bare-prom-"))
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import bentoml
import lightgbm as lgb
import numpy as np
from pydantic import BaseModel

__all__ = ["BareService", "main"]

SPEC_ENV = "BARE_SPEC"
THREADS_ENV = "BARE_THREADS"


class BareRequest(BaseModel):
    cases: list[dict[str, Any]]


@bentoml.service(
    name="bare",
    workers=1,
    threads=int(os.environ.get(THREADS_ENV, "8")),
    metrics={"enabled": False},  # as Keel, whose own /metrics replaces BentoML's middleware
    traffic={"timeout": 60},
)
class BareService:
    def __init__(self) -> None:
        spec = json.loads(Path(os.environ[SPEC_ENV]).read_text())
        text = Path(spec["booster"]).read_text()
        self.booster = lgb.Booster(model_str=text)
        self.booster_sha256 = hashlib.sha256(text.encode()).hexdigest()
        self.fields: list[tuple[str, dict[str, int] | None]] = [
            (f["name"], {c: i for i, c in enumerate(f["categories"])} if f["categories"] else None)
            for f in spec["fields"]
        ]
        self.features: list[str] = spec["features"]
        self.derived: list[tuple[str, str]] = [(a, b) for a, b in spec["derived"]]
        self.classes: list[str] = spec["classes"]
        self.model_version = spec["model_version"]

    def encode(self, case: dict[str, Any]) -> list[float]:
        values: dict[str, float] = {}
        for name, codes in self.fields:
            value = case[name]
            if value is None:
                values[name] = np.nan
            elif codes is not None:
                values[name] = float(codes[value])
            else:
                values[name] = float(value)
        return [values[f] for f in self.features] + [values[a] - values[b] for a, b in self.derived]

    @bentoml.api(route="/v1/predict")
    def predict(self, req: BareRequest, /) -> dict[str, Any]:
        try:
            matrix = np.array([self.encode(c) for c in req.cases], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise bentoml.exceptions.InvalidArgument(f"bad case: {type(exc).__name__}") from None
        proba = np.asarray(self.booster.predict(matrix, num_threads=1))
        return {
            "model_version": self.model_version,
            "probabilities": [dict(zip(self.classes, map(float, row), strict=True)) for row in proba],
        }

    @bentoml.api(route="/v1/info")
    def info(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "booster_sha256": self.booster_sha256,
            "booster_trees": int(self.booster.num_trees()),
            "pid": os.getpid(),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bare BentoML predict endpoint (bench baseline)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    args = parser.parse_args(argv)
    import uvicorn
    from bentoml._internal.context import server_context

    server_context.service_name = BareService.name  # type: ignore[attr-defined]
    app = BareService.to_asgi(is_main=True)  # type: ignore[attr-defined]
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", access_log=False, server_header=False
    )
    return 0


if __name__ == "__main__":
    # Serve the module's importable copy (bench.bare_service), not the __main__ one.
    from bench.bare_service import main as _main

    raise SystemExit(_main())
