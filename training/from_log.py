"""Retraining from the decision log: reviewed cases (overrides and labelled abstentions) as labels.

The newest share of logged labelled cases is held out; the challenger fits on the original
data plus the older logged cases, and both champion and challenger are scored on the same
held-out cases.

Reviewed cases are a selection-biased sample (every abstention plus a sample of decided cases),
so they only ever fit the booster: they are placed in the pipeline's fitting share and never in
the calibration, risk-control or test splits, which hold original data only, so the certified
alpha refers to the same population as a training without the log. The registration records it
(`REVIEW_HANDLING_TAG`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from keel.decision_log import reads
from keel.decision_log.database import Database
from keel.errors import InvalidInput
from keel.feature_defs.contract import Contract
from keel.models.decision_model import DecisionModel
from keel.training.pipeline import FIT_SHARE


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


LOG_CUTOFF_TAG = "keel.log_trained_until"
"""Newest decision-log time among the reviewed cases a version trained on; later ones are unseen."""
REVIEW_HANDLING_TAG = "keel.review_handling"
REVIEW_HANDLING = "reviewed cases fit the booster only; calibration, risk control and test hold original data"


@dataclass(frozen=True)
class MixedFrame:
    frame: pd.DataFrame
    reviewed_used: int
    reviewed_dropped: int
    trained_until: str

    @property
    def tags(self) -> dict[str, str]:
        return {
            REVIEW_HANDLING_TAG: REVIEW_HANDLING,
            LOG_CUTOFF_TAG: self.trained_until,
            "keel.reviewed_cases_used": str(self.reviewed_used),
            "keel.reviewed_cases_dropped": str(self.reviewed_dropped),
        }


def mixed_training_frame(
    original: pd.DataFrame, logged: pd.DataFrame, contract: Contract, seed: int
) -> MixedFrame:
    """Original rows in random order with the reviewed rows mixed into the fitting share only.

    The pipeline splits by `event_time`; every reviewed row gets a time inside the first
    FIT_SHARE of the frame. If there are more reviewed rows than fit there, the newest are kept.
    """
    columns = [*contract.field_names, contract.target]
    rng = np.random.default_rng(seed)
    base = original[columns].sample(frac=1.0, random_state=seed).reset_index(drop=True)
    # Largest k with k <= FIT_SHARE * (len(base) + k) - 1, one row of margin for rounding.
    room = max(0, int((FIT_SHARE * len(base) - 2) / (1 - FIT_SHARE)))
    keep = logged[columns].iloc[max(0, len(logged) - room) :]
    fit_len = int(FIT_SHARE * (len(base) + len(keep))) - 1
    n_orig_fit = max(0, fit_len - len(keep))
    head = pd.concat([base.iloc[:n_orig_fit], keep], ignore_index=True)
    head = head.iloc[rng.permutation(len(head))]
    combined = pd.concat([head, base.iloc[n_orig_fit:]], ignore_index=True)
    combined["event_time"] = pd.date_range("2026-01-01", periods=len(combined), freq="min", tz="UTC")
    until = str(logged["event_time"].astype(str).max()) if "event_time" in logged and len(logged) else ""
    return MixedFrame(combined, len(keep), len(logged) - len(keep), until)


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
