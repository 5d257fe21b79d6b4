"""Log a training run to MLflow and register its bundle as a new model version."""

from __future__ import annotations

import logging
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ColSpec, Schema
from mlflow.utils import logging_utils
from mlflow.utils.logging_utils import MlflowLoggingStream

import keel
from keel.errors import InvalidInput
from keel.feature_defs.contract import Contract, load_contract, without_features
from keel.feature_defs.policy import Policy, packaged_policy_text
from keel.models.aliases import REGISTER, move_alias, os_user
from keel.models.bundle import POLICY, REFERENCE, REFERENCE_OUTPUTS, SPEC, reseal_bundle, write_json
from keel.models.decision_model import DecisionModel
from keel.models.frames import reference_frame
from keel.models.history import History
from keel.models.model_code import keel_code_tree, public_requirements
from keel.models.registry import (
    CHAMPION,
    HASH_TAG,
    MODEL_TAG,
    PYFUNC_HASHES,
    PYFUNC_MODEL,
    PYFUNC_RUN,
)
from keel.models.spec import seal_policy
from keel.settings import StateSettings
from keel.training.certification import first_alias, risk_metrics, risk_tags
from keel.training.evaluation import flatten_metrics
from keel.training.pipeline import TrainResult, train
from keel.training.settings import TrainingSettings

_log = logging.getLogger(__name__)

PYFUNC_CODE = "pyfunc_model.py"
BATCH_PARAMS = {"keel_versions": ""}
"""Inference params of the pyfunc (read by serving/pyfunc_model.py): with `keel_versions` set, predict
also returns each case's full decision record, as `keel score --engine spark` asks for."""


class _LogLines(MlflowLoggingStream):
    """MLflow's print stream, handing each complete line to a logger at DEBUG instead of stderr."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # MLflow leaves it unannotated
        self._logger, self._pending = logger, ""

    def write(self, text: str) -> None:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            if line.strip():
                self._logger.debug("mlflow: %s", line.strip())

    def flush(self) -> None:
        pass


@contextmanager
def _registration_notices_to_log() -> Iterator[None]:
    """MLflow prints "Successfully registered model ..." and "Created version ..." straight to
    stderr (its `eprint`, which writes to a module-level stream), outside its loggers; while a
    version registers, those lines go to this module's log at DEBUG, below what `keel train`
    shows. MLflow's own logger keeps its handler (it holds the stream object itself)."""
    stream = logging_utils.MLFLOW_LOGGING_STREAM
    logging_utils.MLFLOW_LOGGING_STREAM = _LogLines(_log)
    try:
        yield
    finally:
        logging_utils.MLFLOW_LOGGING_STREAM = stream


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


def default_policy_text(name: str) -> str:
    """The packaged policy of a shipped model; a model defined only by its contract starts with none."""
    return packaged_policy_text(name) or f"model: {name}\nrules: []\n"


def seal_spec(bundle_dir: Path, policy: Policy) -> dict[str, str]:
    """Add the policy, the spec summary and the reference sample's model outputs to a trained
    bundle, then seal it again; returns every file's hash.

    The outputs (probabilities, exact SHAP, policy routes) are computed here once, with the
    version's own policy, so monitoring compares each window with what this version did."""
    (bundle_dir / POLICY).write_text(policy.source)
    reseal_bundle(bundle_dir)
    model = DecisionModel.load(bundle_dir)
    write_json(bundle_dir / SPEC, model.spec.public())
    reference = pd.read_parquet(bundle_dir / REFERENCE)
    outputs = reference_frame(model, "", reference, model.spec.policy)
    batch = model.predict_frame(reference[model.contract.field_names], explain=False)
    for j, cls in enumerate(model.classes):
        outputs[f"proba.{cls}"] = batch.probabilities[:, j]
    outputs.to_parquet(bundle_dir / REFERENCE_OUTPUTS, index=False)
    return reseal_bundle(bundle_dir)


def train_and_register(
    name: str,
    frame: pd.DataFrame,
    state: StateSettings,
    settings: TrainingSettings,
    source: str = "generator",
    contract: Contract | None = None,
    policy_text: str | None = None,
    extra_tags: dict[str, str] | None = None,
    actor: str | None = None,
) -> Registered:
    """Train on `frame`, log the run, register a version; first version becomes champion.

    The alias it gets is an alias move like any other, in the history under `actor` (default:
    the operating-system user).

    `contract` and `policy_text` default to the packaged ones of a shipped model; both are sealed
    in the version. A policy that does not fit the contract is refused before training."""
    contract = contract or load_contract(name)
    if contract.name != name:
        raise InvalidInput(f"the contract file defines model {contract.name!r}, not {name!r}")
    left_out = [f for f in contract.invariant_fields if contract.spec(f).feature]
    if settings.drop_invariant_features and left_out:
        _log.info("leaving %s (declared invariant) out of the features", ", ".join(left_out))
        contract = without_features(contract, left_out)
    policy = seal_policy(default_policy_text(name) if policy_text is None else policy_text, contract)
    experiment_id = ensure_experiment(state)
    with tempfile.TemporaryDirectory(prefix=f"keel-{name}-") as tmp:
        result = train(contract, frame, Path(tmp) / "bundle", settings)
        if settings.drop_invariant_features and left_out:
            result.extra["invariant_left_out"] = left_out
        result.hashes = seal_spec(result.bundle_dir, policy)
        code_tree = keel_code_tree(Path(tmp) / "code")
        _log.info("logging the run and registering the version in MLflow")
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{name}") as run:
            mlflow.set_tags(
                {"keel.model": name, "keel.data_source": source, "keel.code_version": code_version()}
            )
            mlflow.log_params({k: v for k, v in result.params.items()})
            mlflow.log_metrics({f"test.{k}": v for k, v in result.metrics.items()})
            mlflow.log_metrics(flatten_metrics("segment", result.segments))
            mlflow.log_metrics(
                {
                    **risk_metrics(result.risk, result.segment_control),
                    "best_iteration": float(result.best_iteration),
                }
            )
            for artefact in ("evaluation.json", "shap_importance.png", "abstention.json"):
                mlflow.log_artifact((result.bundle_dir / artefact).as_posix(), artifact_path="report")
            code = resources.files("keel.serving").joinpath(PYFUNC_CODE)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(code),
                artifacts={"bundle": result.bundle_dir.as_posix()},
                signature=_signature(contract),
                code_paths=[code_tree.as_posix()],
                pip_requirements=public_requirements(),
                model_config={PYFUNC_MODEL: name, PYFUNC_RUN: run.info.run_id, PYFUNC_HASHES: result.hashes},
            )
    tags = {
        "keel.contract_version": contract.version,
        "keel.policy_version": policy.version,
        "keel.data_fingerprint": result.data_fingerprint,
        "keel.data_source": source,
        "keel.code_version": code_version(),
        "keel.alpha": str(result.risk.alpha),
        "keel.delta": str(result.risk.delta),
        "keel.threshold": str(result.risk.threshold),
        "keel.coverage": f"{result.risk.coverage:.4f}",
        "keel.test_accuracy": f"{result.metrics['accuracy']:.4f}",
        **{f"{HASH_TAG}{file}": digest for file, digest in result.hashes.items()},
        **risk_tags(result.risk, result.segment_control),
        **(extra_tags or {}),
    }
    client = MlflowClient()
    # Tags go on with the version itself, so no reader ever sees it without its recorded hashes.
    with _registration_notices_to_log():
        mv = mlflow.register_model(info.model_uri, name, tags=tags)
    version = str(mv.version)
    client.set_registered_model_tag(name, MODEL_TAG, code_version())
    # A version that certifies nothing never becomes champion by itself (training/certification.py).
    alias = first_alias(result.risk.certified, not _is_first_version(client, name))
    move_alias(
        History(state.log_url, client),
        name,
        alias,
        version,
        action=REGISTER,
        actor=actor or os_user(),
        reason=f"trained on {source} ({len(frame)} rows); "
        + ("certified" if result.risk.certified else "certifies nothing"),
    )
    aliases: tuple[str, ...] = (alias,)
    return Registered(name, version, aliases, run.info.run_id, result)


def _is_first_version(client: MlflowClient, name: str) -> bool:
    try:
        client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return True
    return False
