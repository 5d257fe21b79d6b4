"""Each monitor run as an MLflow run, one experiment per model (`keel-monitor/<model>`).

Data scientists see the checks' trends in the MLflow UI beside the training runs: every check's
value and verdict (0 ok, 1 warn, 2 alert; no verdict without data) as metrics, the window and
versions as params and tags, the report folder as artifacts. MLflow is used as the entry point
configured it (keel.settings.prepare_state); nothing here points it anywhere else.
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from keel.monitoring.verdict import VerdictDict

__all__ = ["EXPERIMENT_PREFIX", "VERDICT_VALUE", "experiment_name", "log_run"]

EXPERIMENT_PREFIX = "keel-monitor/"
VERDICT_VALUE = {"ok": 0, "warn": 1, "alert": 2}


def experiment_name(model: str) -> str:
    return f"{EXPERIMENT_PREFIX}{model}"


def _experiment_id(client: MlflowClient, model: str, artifact_location: str | None) -> str:
    name = experiment_name(model)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location))
    except MlflowException:  # another monitor created it in between
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def log_run(
    run_id: str,
    model: str,
    generated_at: str,
    window: dict[str, Any],
    versions: dict[str, Any],
    status: str,
    recommendation: str,
    verdicts: list[VerdictDict],
    report_dir: Path | None,
    host: str,
    artifact_location: str | None,
) -> str:
    """Record one monitor run; returns the MLflow run id. `artifact_location`: where a new
    experiment keeps its artifacts (None: the tracking server decides)."""
    client = MlflowClient()
    experiment = _experiment_id(client, model, artifact_location)
    stamp = int(datetime.fromisoformat(generated_at).timestamp() * 1000)
    tags = {
        "keel.model": model,
        "keel.monitor_run_id": run_id,
        "keel.status": status,
        "keel.recommendation": recommendation[:5000],
        "keel.host": host,
        "keel.versions": json.dumps(versions, sort_keys=True, default=str)[:5000],
    }
    run = client.create_run(experiment, start_time=stamp, tags=tags, run_name=generated_at)
    mlflow_id = str(run.info.run_id)
    try:
        params = {
            "window_start": window.get("start"),
            "window_end": window.get("end"),
            "reference_version": versions.get("reference_version"),
        }
        metrics = []
        for v in verdicts:
            if v["value"] is not None:
                metrics.append(Metric(f"{v['check']}.value", float(v["value"]), stamp, 0))
            if v["status"] in VERDICT_VALUE:
                metrics.append(Metric(f"{v['check']}.verdict", VERDICT_VALUE[v["status"]], stamp, 0))
        client.log_batch(
            mlflow_id,
            metrics=metrics,
            params=[Param(k, str(p)) for k, p in params.items() if p is not None],
        )
        if report_dir is not None and report_dir.is_dir():
            client.log_artifacts(mlflow_id, str(report_dir), artifact_path="report")
        client.set_terminated(mlflow_id, "FINISHED")
    except BaseException:
        with contextlib.suppress(Exception):  # the first error is the one to report
            client.set_terminated(mlflow_id, "FAILED")
        raise
    return mlflow_id
