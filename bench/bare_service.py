"""The bare baseline for `bench.serving`: one sync BentoML route around the booster's `predict`.

It loads the same registered model Keel serves (registry alias, hash-verified bundle), takes
the same request body as Keel's decide route (`{"cases": [case]}`) and answers with the
booster's class probabilities. Per request it does what any endpoint serving this booster
must do at the least: parse the JSON body, encode the case with the contract
(`contract.validate_records`) and call `booster.predict` on that row (one OpenMP thread,
as Keel does). No explanation, no policy, no log, no auth.

With BENCH_BARE_ENCODE=startup it encodes the contract's example case once at start and
predicts on that matrix for every request (the body is still parsed): an even barer baseline.

It is run like `keel serve` (see serving/server.py): one process, uvicorn over
`BareService.to_asgi(is_main=True)`, threads from KEEL_SERVE_THREADS.

    KEEL_HOME=... python -m bench.bare_service --port 3001 [--model invoice_classification]
"""

from __future__ import annotations

import os
import tempfile

# BentoML's Prometheus client insists on a multiprocess directory before it is imported.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-bare-prom-"))
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

import argparse
import hashlib
from typing import Any

import bentoml
import bentoml.exceptions
import numpy as np
from keel.serving.settings import ServingSettings
from pydantic import BaseModel

MODEL_ENV = "BENCH_BARE_MODEL"
ENCODE_ENV = "BENCH_BARE_ENCODE"


class BareRequest(BaseModel):
    cases: list[dict[str, Any]]


def _load(model: str) -> Any:
    from keel.models.registry import load, resolve

    from keel.settings import StateSettings, prepare_state

    state = prepare_state(StateSettings())
    # Own cache folder: `registry.download` replaces cache/<name>/<version>, which Keel uses.
    return load(resolve(model, ServingSettings().alias), state.home_dir / "bench-bare-cache")


def _train_rows(run_id: str | None) -> int | None:
    """Rows the registered version was trained on (its MLflow run's `rows` param), if recorded."""
    import mlflow

    try:
        return int(mlflow.get_run(run_id).data.params["rows"]) if run_id else None
    except Exception:  # informational only
        return None


@bentoml.service(
    name="bare",
    workers=1,
    threads=ServingSettings().threads,
    metrics={"enabled": False},  # as Keel: its own /metrics replaces BentoML's middleware
    traffic={"timeout": 60},
)
class BareService:
    def __init__(self) -> None:
        name = os.environ.get(MODEL_ENV, "invoice_classification")
        loaded = _load(name)
        self.model_version = loaded.ref.version
        self.contract = loaded.model.contract
        self.booster = loaded.model.tree.booster
        self.classes = list(self.contract.classes)
        self.booster_sha256 = hashlib.sha256(self.booster.model_to_string().encode()).hexdigest()
        self.encode = os.environ.get(ENCODE_ENV, "per_request")
        if self.encode not in ("per_request", "startup"):
            raise ValueError(f"{ENCODE_ENV} must be per_request or startup, not {self.encode!r}")
        self.fixed = self.contract.validate_records([self.contract.example_case]).matrix
        self.train_rows = _train_rows(loaded.ref.run_id)

    @bentoml.api(route="/v1/predict")
    def predict(self, req: BareRequest, /) -> dict[str, Any]:
        if self.encode == "startup":
            matrix = self.fixed
        else:
            checked = self.contract.validate_records(req.cases)
            if checked.matrix is None:
                raise bentoml.exceptions.InvalidArgument(f"{len(checked.errors)} field error(s)")
            matrix = checked.matrix
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
            "train_rows": self.train_rows,
            "encode": self.encode,
            "threads": ServingSettings().threads,
            "pid": os.getpid(),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bare BentoML predict endpoint (bench baseline)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    parser.add_argument("--model", default=None, help="registered model (default invoice_classification)")
    args = parser.parse_args(argv)
    if args.model:
        os.environ[MODEL_ENV] = args.model
    from keel.serving.server import run_service

    run_service(BareService, args.host, args.port)
    return 0


if __name__ == "__main__":
    # Serve the module's importable copy (bench.bare_service), not the __main__ one.
    from bench.bare_service import main as _main

    raise SystemExit(_main())
