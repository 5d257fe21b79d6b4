"""Shared building blocks for the synthetic decision-data generators.

Everything that more than one domain needs lives here: the legal-entity table
(region, local currency), case ids and event timestamps, conditional category
sampling, the label-noise model and the frame assembly that turns a domain's
input sampler plus its label rule into a contract-shaped DataFrame.

Reproducibility rules used by every domain:

* input sampling uses only ``np.random.default_rng(seed)`` and only the
  primitives ``random``, ``standard_normal`` and ``standard_exponential`` with
  a fixed number of draws per call (always ``n``); scenario parameters are
  applied *after* drawing.  The random stream therefore never depends on the
  scenario, so e.g. ``region_process_change`` leaves non-EMEA rows bit-identical
  to ``none``;
* label noise comes from a separate generator seeded with ``(NOISE_STREAM,
  seed)`` and is drawn for every row whatever the rule, so
  :func:`true_outcome` on the same frame and seed reproduces the generated
  labels and differs between scenarios only where the rule differs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

SCENARIOS: tuple[str, ...] = (
    "none",
    "covariate_shift",
    "concept_shift",
    "segment_overrides",
    "region_process_change",
)
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
SPAN_DAYS = 90.0
UNIFORM_FLIP_RATE = 0.005
NOISE_STREAM = 0x6B65656C  # "keel": separates the label-noise stream from inputs
N_JITTERS = 6  # independent boundary-jitter arrays available to a label rule
CHANGED_REGION = "EMEA"  # the region whose process moves under region_process_change

# legal entity: (region, share of the region's volume, local currency)
ENTITIES: dict[str, tuple[str, float, str]] = {
    "US01": ("NA", 0.8, "USD"),
    "CA01": ("NA", 0.2, "CAD"),
    "DE01": ("EMEA", 0.4, "EUR"),
    "GB01": ("EMEA", 0.35, "GBP"),
    "FR01": ("EMEA", 0.25, "EUR"),
    "SG01": ("APAC", 0.35, "SGD"),
    "JP01": ("APAC", 0.35, "JPY"),
    "AU01": ("APAC", 0.3, "AUD"),
    "BR01": ("LATAM", 0.6, "BRL"),
    "MX01": ("LATAM", 0.4, "MXN"),
}
REGION_ENTITIES: dict[str, dict[str, float]] = {
    region: {e: share for e, (r, share, _) in ENTITIES.items() if r == region}
    for region in dict.fromkeys(r for r, _, _ in ENTITIES.values())
}
ENTITY_CURRENCY: dict[str, str] = {e: currency for e, (_, _, currency) in ENTITIES.items()}

Inputs = dict[str, np.ndarray]


def effective_scenario(scenario: str) -> str:
    """Validate ``scenario``; ``segment_overrides`` generates exactly like ``none``."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {SCENARIOS}")
    return "none" if scenario == "segment_overrides" else scenario


def process_changed(scenario: str, rows: pd.DataFrame | np.ndarray) -> np.ndarray:
    """Rows that run the changed process: CHANGED_REGION under ``region_process_change``.

    ``rows`` is a frame (its ``region`` column is read only in that scenario) or a region array.
    """
    if scenario != "region_process_change":
        return np.zeros(len(rows), dtype=bool)
    region = rows["region"] if isinstance(rows, pd.DataFrame) else rows
    return np.asarray(np.asarray(region, dtype=object) == CHANGED_REGION)


def conditional_choice(
    rng: np.random.Generator, keys: np.ndarray, table: Mapping[str, Mapping[str, float]]
) -> np.ndarray:
    """Draw one category per row from ``table[key]`` (weights need not sum to 1).

    Uses exactly one uniform per row, so the stream does not depend on the table.
    """
    cats = list(dict.fromkeys(c for dist in table.values() for c in dist))
    weights = np.array([[dist.get(c, 0.0) for c in cats] for dist in table.values()])
    cum = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    rows = pd.Index(list(table)).get_indexer(np.asarray(keys, dtype=object))
    if (rows < 0).any():
        raise KeyError(f"keys without a distribution: {set(np.asarray(keys)[rows < 0])}")
    u = rng.random(len(rows))
    pick = np.minimum((u[:, None] >= cum[rows]).sum(axis=1), len(cats) - 1)
    return np.asarray(np.asarray(cats, dtype=object)[pick])


def choice(rng: np.random.Generator, n: int, dist: Mapping[str, float]) -> np.ndarray:
    """Draw ``n`` categories from one weighted distribution (object dtype)."""
    return conditional_choice(rng, np.full(n, "all", dtype=object), {"all": dist})


def lognormal(
    rng: np.random.Generator, median: np.ndarray | float, sigma: np.ndarray | float, n: int
) -> np.ndarray:
    """Log-normal draws with per-row median and log-sd (one normal per row)."""
    return np.asarray(median, dtype=float) * np.exp(np.asarray(sigma) * rng.standard_normal(n))


def bernoulli(rng: np.random.Generator, p: np.ndarray | float, n: int) -> np.ndarray:
    """Per-row Bernoulli draws as numpy bool (one uniform per row)."""
    return rng.random(n) < np.asarray(p, dtype=float)


def lookup(keys: np.ndarray, table: Mapping[str, float], default: float | None = None) -> np.ndarray:
    """Map category values to floats through ``table`` (vectorised)."""
    values = pd.Series(np.asarray(keys, dtype=object)).map(table)
    if default is not None:
        values = values.fillna(default)
    if values.isna().any():
        raise KeyError("category without a table entry")
    return np.asarray(values.to_numpy(dtype=float))


def column(table: Mapping[str, Sequence[float]], index: int) -> dict[str, float]:
    """One column of a profile table ``{key: (value0, value1, ...)}``."""
    return {key: float(row[index]) for key, row in table.items()}


def sample_region_entity(
    rng: np.random.Generator, n: int, region_weights: Mapping[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Regions from ``region_weights``; entities within a region from REGION_ENTITIES."""
    region = choice(rng, n, region_weights)
    return region, conditional_choice(rng, region, REGION_ENTITIES)


def event_times(rng: np.random.Generator, n: int, start: datetime | None) -> pd.DatetimeIndex:
    """Strictly increasing UTC timestamps spread over ~SPAN_DAYS from ``start``."""
    origin = pd.Timestamp(start if start is not None else DEFAULT_START)
    origin = origin.tz_localize("UTC") if origin.tzinfo is None else origin.tz_convert("UTC")
    gaps = rng.standard_exponential(n) + 1e-3  # Poisson arrivals, never two at once
    offsets = np.cumsum(gaps) / (gaps.sum() + 1.0) * SPAN_DAYS * 86_400e9
    return origin + pd.to_timedelta(offsets.astype(np.int64), unit="ns")


def case_ids(prefix: str, seed: int, n: int) -> np.ndarray:
    """Unique, readable case ids ``PREFIX-<seed>-<i>``."""
    return np.array([f"{prefix}-{seed}-{i:07d}" for i in range(n)], dtype=object)


@dataclass(frozen=True)
class LabelNoise:
    """Pre-drawn label noise for ``n`` rows.

    ``jitter[k]`` is a standard-normal perturbation a rule adds to the k-th
    margin (a margin is the signed distance to a decision boundary in units of
    the boundary's noise scale), so disagreement concentrates where a case is
    close to a boundary.  ``flip_u``/``flip_v`` implement the small uniform
    flip to a random other class.
    """

    jitter: np.ndarray
    flip_u: np.ndarray
    flip_v: np.ndarray
    flip_rate: float = UNIFORM_FLIP_RATE

    @classmethod
    def draw(cls, seed: int, n: int) -> LabelNoise:
        rng = np.random.default_rng([NOISE_STREAM, seed])
        return cls(rng.standard_normal((N_JITTERS, n)), rng.random(n), rng.random(n))

    @classmethod
    def zero(cls, n: int) -> LabelNoise:
        """No noise at all: the rule's deterministic ("textbook") outcome."""
        return cls(np.zeros((N_JITTERS, n)), np.ones(n), np.zeros(n), 0.0)

    def exceeds(self, margin: np.ndarray, k: int) -> np.ndarray:
        """Whether ``margin`` (in noise units) is positive after adding jitter ``k``."""
        return np.asarray(np.nan_to_num(margin, nan=-np.inf) + self.jitter[k] > 0)

    def flip(self, codes: np.ndarray, n_classes: int) -> np.ndarray:
        offset = 1 + np.minimum((self.flip_v * (n_classes - 1)).astype(int), n_classes - 2)
        flipped = self.flip_u < self.flip_rate
        return np.where(flipped, (codes + offset) % n_classes, codes)


def first_firing(rules: Sequence[tuple[int, np.ndarray]], default: int, noise: LabelNoise) -> np.ndarray:
    """Precedence chain: the first rule whose jittered margin is positive wins.

    ``rules`` is a list of ``(class_code, margin)``; rule ``k`` uses jitter ``k``.
    NaN margins never fire; ``+inf``/``-inf`` are certain outcomes.
    """
    codes = np.full(noise.jitter.shape[1], default)
    for k, (code, margin) in reversed(list(enumerate(rules))):
        codes = np.where(noise.exceeds(margin, k), code, codes)
    return codes


def num(frame: pd.DataFrame, col: str) -> np.ndarray:
    """A numeric column as float (None/NaN -> NaN)."""
    return np.asarray(pd.to_numeric(frame[col], errors="coerce"), dtype=float)


def flag(frame: pd.DataFrame, col: str) -> np.ndarray:
    """A boolean column as numpy bool."""
    return np.asarray(frame[col].to_numpy().astype(bool))


def cat(frame: pd.DataFrame, col: str) -> np.ndarray:
    """A category column as an object array of str."""
    return np.asarray(frame[col].astype(str).to_numpy(dtype=object))


@dataclass(frozen=True)
class Domain:
    """One decision model's generator: contract shape, input sampler and label rule."""

    name: str
    target: str
    classes: tuple[str, ...]
    prefix: str
    inputs: Callable[[np.random.Generator, int, str], Inputs]  # every contract field, in contract order
    rule: Callable[[pd.DataFrame, str, LabelNoise], np.ndarray]  # -> class codes

    def true_outcome(
        self, frame: pd.DataFrame, seed: int, scenario: str = "none", noisy: bool = True
    ) -> np.ndarray:
        """Noisy true labels (object array of class names) under ``scenario``'s rule."""
        scenario = effective_scenario(scenario)
        n = len(frame)
        noise = LabelNoise.draw(seed, n) if noisy else LabelNoise.zero(n)
        codes = noise.flip(self.rule(frame, scenario, noise), len(self.classes))
        return np.asarray(np.asarray(self.classes, dtype=object)[codes])

    def generate(
        self, n: int, seed: int, scenario: str = "none", start: datetime | None = None
    ) -> pd.DataFrame:
        """Contract-shaped frame with case_id, event_time, all fields and the target."""
        scenario = effective_scenario(scenario)
        if n < 0:
            raise ValueError("n must be non-negative")
        rng = np.random.default_rng(seed)
        times = event_times(rng, n, start)
        values = self.inputs(rng, n, scenario)
        frame = pd.DataFrame({"case_id": case_ids(self.prefix, seed, n), "event_time": times, **values})
        frame[self.target] = self.true_outcome(frame, seed, scenario)
        return frame
