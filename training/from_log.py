"""Retraining from the decision log: reviewed cases (overrides and labelled abstentions) as labels.

The newest share of logged labelled cases is held out; the challenger trains on the original
data plus the older logged cases, mixed in random order so every split of the pipeline sees the
new labels, and both champion and challenger are scored on the same held-out cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from keel.feature_defs.contract import Contract
from keel.models.decision_model import DecisionModel
from sklearn.metrics import f1_score

from keel.decision_log import reads
from keel.decision_log.database import Database
from keel.errors import InvalidInput


def labelled_from_log(db: Database, contract: Contract, chunk: int = 5000) -> pd.DataFrame:
    """Every logged case of the model with a human final outcome (its latest word), oldest first."""
    rows = [
        {
            **{f: record["inputs"].get(f) for f in contract.field_names},
            contract.target: final,
            "event_time": created,
        }
        for record, final, created in reads.labelled_rows(db, contract.name, chunk)
    ]
    return pd.DataFrame(rows, columns=[*contract.field_names, contract.target, "event_time"])


@dataclass(frozen=True)
class LogSplit:
    train: pd.DataFrame
    holdout: pd.DataFrame


def split_log(labelled: pd.DataFrame, holdout_share: float = 0.3, min_rows: int = 50) -> LogSplit:
    if len(labelled) < min_rows:
        raise InvalidInput(
            f"only {len(labelled)} reviewed cases in the decision log; need at least {min_rows}"
        )
    cut = int(len(labelled) * (1 - holdout_share))
    return LogSplit(labelled.iloc[:cut].reset_index(drop=True), labelled.iloc[cut:].reset_index(drop=True))


def mixed_training_frame(
    original: pd.DataFrame, logged: pd.DataFrame, contract: Contract, seed: int
) -> pd.DataFrame:
    columns = [*contract.field_names, contract.target]
    combined = pd.concat([original[columns], logged[columns]], ignore_index=True)
    combined = combined.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    combined["event_time"] = pd.date_range("2026-01-01", periods=len(combined), freq="min", tz="UTC")
    return combined


def score(model: DecisionModel, holdout: pd.DataFrame) -> dict[str, float]:
    contract = model.contract
    batch = model.predict_frame(holdout[contract.field_names], explain=False)
    y, _ = contract.encode_target(list(holdout[contract.target]))
    decided = ~batch.abstained
    wrong = batch.predicted != y
    return {
        "n": float(len(y)),
        "accuracy": float((~wrong).mean()),
        "macro_f1": float(
            f1_score(
                y,
                batch.predicted,
                average="macro",
                labels=list(range(len(contract.classes))),
                zero_division=0,
            )
        ),
        "coverage": float(decided.mean()),
        "selective_error": float(wrong[decided].mean()) if decided.any() else 0.0,
    }


def comparison_table(champion: dict[str, float], challenger: dict[str, float]) -> str:
    lines = [f"{'metric':<16}{'champion':>10}{'challenger':>12}{'change':>10}"]
    for key in ("accuracy", "macro_f1", "coverage", "selective_error"):
        a, b = champion[key], challenger[key]
        lines.append(f"{key:<16}{a:>10.4f}{b:>12.4f}{b - a:>+10.4f}")
    lines.append(f"held-out reviewed cases: {int(champion['n'])}")
    return "\n".join(lines)
