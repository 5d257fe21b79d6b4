"""Log a training run to MLflow and register its bundle as a new model version."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import mlflow
import pandas as pd
from keel.feature_defs.contract import Contract, load_contract
from keel.models.registry import CHALLENGER, CHAMPION, HASH_TAG
from keel.training.evaluation import flatten_metrics
from keel.training.pipeline import TrainResult, train
from keel.training.settings import TrainingSettings
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ColSpec, Schema

import keel
from keel.settings import StateSettings

PYFUNC_CODE = "pyfunc_model.py"
BATCH_PARAMS = {"keel_versions": ""}
"""Inference params of the pyfunc (read by models/pyfunc_model.py): with `keel_versions` set, predict
also returns each case's full decision record, as `keel score --engine spark` asks for."""


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    aliases: tuple[str, ...]
    run_id: str
    result: TrainResult


def code_version() -> str:
    """The git commit of the checkout when there is one, else the package version."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{keel.__version__}+g{sha}"
    except (OSError, subprocess.SubprocessError):
        return keel.__version__


def ensure_experiment(state: StateSettings) -> str:
    exp = mlflow.get_experiment_by_name(state.experiment)
    if exp is not None:
        return str(exp.experiment_id)
    return str(mlflow.create_experiment(state.experiment, artifact_location=state.artifact_location))


def _signature(contract: Contract) -> object:
    example = pd.DataFrame([{k: v for k, v in contract.example_case.items() if k != "case_id"}])
    out = pd.DataFrame(
        {
            "outcome": ["x"],
            "most_likely": ["x"],
            "abstained": [False],
            "confidence": [0.5],
            **{f"p_{c}": [0.1] for c in contract.classes},
        }
    )
    signature = infer_signature(example, out, params=BATCH_PARAMS)
    # case_id is optional input (MLflow drops undeclared columns, and a decision record names its case).
    signature.inputs = Schema([*signature.inputs.inputs, ColSpec("string", "case_id", required=False)])
    return signature


def train_and_register(
    name: str,
    frame: pd.DataFrame,
    state: StateSettings,
    settings: TrainingSettings,
    source: str = "generator",
) -> Registered:
    """Train on `frame`, log the run, register a version; first version becomes champion."""
    contract = load_contract(name)
    experiment_id = ensure_experiment(state)
    with tempfile.TemporaryDirectory(prefix=f"keel-{name}-") as tmp:
        result = train(contract, frame, Path(tmp) / "bundle", settings)
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{name}") as run:
            mlflow.set_tags(
                {"keel.model": name, "keel.data_source": source, "keel.code_version": code_version()}
            )
            mlflow.log_params({k: v for k, v in result.params.items()})
            mlflow.log_metrics({f"test.{k}": v for k, v in result.metrics.items()})
            mlflow.log_metrics(flatten_metrics("segment", result.segments))
            mlflow.log_metrics(
                {
                    "risk.threshold": result.risk.threshold,
                    "risk.coverage": result.risk.coverage,
                    "risk.upper_bound": result.risk.upper_bound,
                    "best_iteration": float(result.best_iteration),
                }
            )
            for artefact in ("evaluation.json", "shap_importance.png", "abstention.json"):
                mlflow.log_artifact((result.bundle_dir / artefact).as_posix(), artifact_path="report")
            code = resources.files("keel.models").joinpath(PYFUNC_CODE)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(code),
                artifacts={"bundle": result.bundle_dir.as_posix()},
                signature=_signature(contract),
                pip_requirements=[f"keel=={keel.__version__}"],
                registered_model_name=name,
            )
    version = str(info.registered_model_version)
    client = MlflowClient()
    tags = {
        "keel.contract_version": contract.version,
        "keel.data_fingerprint": result.data_fingerprint,
        "keel.data_source": source,
        "keel.code_version": code_version(),
        "keel.alpha": str(result.risk.alpha),
        "keel.delta": str(result.risk.delta),
        "keel.threshold": str(result.risk.threshold),
        "keel.coverage": f"{result.risk.coverage:.4f}",
        "keel.test_accuracy": f"{result.metrics['accuracy']:.4f}",
        **{f"{HASH_TAG}{file}": digest for file, digest in result.hashes.items()},
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    aliases: tuple[str, ...]
    if _is_first_version(client, name):
        client.set_registered_model_alias(name, CHAMPION, version)
        aliases = (CHAMPION,)
    else:
        client.set_registered_model_alias(name, CHALLENGER, version)
        aliases = (CHALLENGER,)
    return Registered(name, version, aliases, run.info.run_id, result)


def _is_first_version(client: MlflowClient, name: str) -> bool:
    try:
        client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return True
    return False
