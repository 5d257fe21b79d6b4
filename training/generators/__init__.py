"""Seeded synthetic data for Keel's three decision models.

``generate(model_name, n, seed, scenario)`` returns a contract-shaped frame
(``case_id``, ``event_time``, every field of ``feature_defs/<model>.yaml`` in
contract order, and the target column); ``true_outcome`` recomputes the noisy
true label of an existing frame under a scenario's rule (what a careful human
reviewer would decide).  The generative stories, label rules, noise model and
scenarios are documented in each domain module and in ``docs/data.md``.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from . import discount, invoice, routing
from .common import SCENARIOS, Domain

DOMAINS: dict[str, Domain] = {d.name: d for d in (invoice.DOMAIN, discount.DOMAIN, routing.DOMAIN)}
MODELS: tuple[str, ...] = tuple(DOMAINS)

__all__ = ["DOMAINS", "MODELS", "SCENARIOS", "domain", "generate", "true_outcome"]


def domain(model_name: str) -> Domain:
    """The generator for ``model_name``; ValueError for an unknown model."""
    try:
        return DOMAINS[model_name]
    except KeyError:
        raise ValueError(f"unknown model {model_name!r}; expected one of {MODELS}") from None


def generate(
    model_name: str, n: int, seed: int, scenario: str = "none", start: datetime | None = None
) -> pd.DataFrame:
    """``n`` synthetic cases with their (noisy) true label; deterministic in all arguments."""
    return domain(model_name).generate(n, seed, scenario, start)


def true_outcome(model_name: str, frame: pd.DataFrame, seed: int, scenario: str = "none") -> np.ndarray:
    """Noisy true labels (object array of class names) for ``frame`` under ``scenario``.

    Noise is drawn row by row from ``seed``: for a frame returned by
    ``generate(model_name, n, seed, scenario)`` this reproduces its target column.
    """
    return domain(model_name).true_outcome(frame, seed, scenario)
