"""The reference frame of a version: its own outputs on its reference sample, sealed at registration.

Versions registered before the outputs were sealed get them computed here, with the policy of
that version's spec (never today's packaged policy).
"""

from __future__ import annotations

import pandas as pd

from keel.models.bundle import REFERENCE, REFERENCE_OUTPUTS
from keel.models.decision_model import DecisionModel
from keel.models.frames import reference_frame

__all__ = ["sealed_reference"]

PROBABILITY_PREFIX = "proba."
"""Columns of the sealed outputs that monitoring's frames do not carry."""


def sealed_reference(model: DecisionModel, version: str, rows: int) -> pd.DataFrame:
    """The first `rows` reference cases with the outputs `version` produced for them."""
    if REFERENCE_OUTPUTS in model.spec.hashes:  # verified with the rest of the bundle at load
        frame = pd.read_parquet(model.bundle.path / REFERENCE_OUTPUTS).iloc[:rows]
        frame = frame.drop(columns=[c for c in frame.columns if c.startswith(PROBABILITY_PREFIX)])
        frame["model_version"] = version
        return frame.reset_index(drop=True)
    reference = pd.read_parquet(model.bundle.path / REFERENCE).iloc[:rows]
    return reference_frame(model, version, reference, model.spec.policy)
