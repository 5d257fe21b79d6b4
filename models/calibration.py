"""Temperature scaling: one parameter, keeps the arg-max class, fitted on held-out raw scores."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar


def softmax(raw: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    # The ufuncs' own reductions: the same numbers as ndarray.max/.sum, without their Python-level
    # wrappers (which cost more than the arithmetic on the one-row batches of a decide request).
    z = raw / temperature
    z = z - np.maximum.reduce(z, axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / np.add.reduce(e, axis=1, keepdims=True)
    return out


class TemperatureScaler:
    """Calibrates multiclass raw scores as softmax(raw / T), with T chosen to minimise log-loss."""

    def __init__(self, bounds: tuple[float, float] = (0.05, 20.0)) -> None:
        self.bounds = bounds

    def fit(self, raw: np.ndarray, y: np.ndarray) -> TemperatureScaler:
        rows = np.arange(len(y))

        def nll(log_t: float) -> float:
            p = softmax(raw, float(np.exp(log_t)))
            return float(-np.log(np.clip(p[rows, y], 1e-15, None)).mean())

        lo, hi = np.log(self.bounds[0]), np.log(self.bounds[1])
        res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
        self.temperature_ = float(np.exp(res.x))
        return self

    def predict_proba(self, raw: np.ndarray) -> np.ndarray:
        return softmax(raw, self.temperature_)
