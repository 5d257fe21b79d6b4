"""LightGBM's single-row fast path, for decide requests that carry one case.

`Booster.predict` builds a new predictor on every call: it parses the parameter string into a
fresh Config, asks for the iteration count, sizes the output and, for `pred_contrib`, walks
every tree to recompute its depth. On one row that set-up costs more than the prediction
itself. LightGBM's C API has a fast path for exactly this case:
`LGBM_BoosterPredictForMatSingleRowFastInit` does the set-up once and returns a FastConfig;
`LGBM_BoosterPredictForMatSingleRowFast` then predicts one dense row with it. Both paths run
the same `Predictor` code on the same row (zeros and NaNs are read the same way), so raw scores
and SHAP values are identical to `Booster.predict`'s (tests/unit/test_fast_predict.py).

Thread safety: LightGBM serialises single-row predictions of one booster under the booster's
own mutex, and a FastConfig is only read during a prediction. We still hand each concurrent
caller its own FastConfig from a small pool, so nothing relies on that detail of the C++ side.
"""

from __future__ import annotations

import ctypes
import threading
import weakref

import lightgbm as lgb
import numpy as np
from lightgbm.basic import _LIB, _safe_call  # type: ignore[attr-defined]  # the C handle is not public API

PREDICT_RAW_SCORE = 1
PREDICT_CONTRIB = 3
_DTYPE_FLOAT64 = 1
_PARAMS = b"num_threads=1"

# Our own handle on the already loaded library, so the argtypes set below cannot change how
# lightgbm itself calls any function.
_lib = ctypes.CDLL(_LIB._name)
_init = _lib.LGBM_BoosterPredictForMatSingleRowFastInit
_init.argtypes = [
    ctypes.c_void_p,  # booster handle
    ctypes.c_int,  # predict type
    ctypes.c_int,  # start iteration
    ctypes.c_int,  # number of iterations (-1: all)
    ctypes.c_int,  # data type
    ctypes.c_int32,  # number of columns
    ctypes.c_char_p,  # parameters
    ctypes.POINTER(ctypes.c_void_p),  # out: FastConfig handle
]
_init.restype = ctypes.c_int
_predict = _lib.LGBM_BoosterPredictForMatSingleRowFast
_predict.argtypes = [
    ctypes.c_void_p,  # FastConfig handle
    ctypes.c_void_p,  # row data (ncol float64 values)
    ctypes.POINTER(ctypes.c_int64),  # out: number of values written
    ctypes.c_void_p,  # out: values
]
_predict.restype = ctypes.c_int
_free = _lib.LGBM_FastConfigFree
_free.argtypes = [ctypes.c_void_p]
_free.restype = ctypes.c_int
_num_predict = _lib.LGBM_BoosterCalcNumPredict
_num_predict.argtypes = [
    ctypes.c_void_p,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.POINTER(ctypes.c_int64),
]
_num_predict.restype = ctypes.c_int


def _free_all(handles: list[int], booster: lgb.Booster) -> None:
    """Free FastConfigs while their booster is still alive (`booster` is held here for that)."""
    del booster
    while handles:
        _free(handles.pop())


class SingleRowPredictor:
    """Predicts one float64 row of one booster for one output type through a pooled FastConfig."""

    def __init__(self, booster: lgb.Booster, predict_type: int, ncol: int) -> None:
        self.booster = booster
        self.predict_type = predict_type
        self.ncol = ncol
        n = ctypes.c_int64(0)
        _safe_call(_num_predict(booster._handle, 1, predict_type, 0, -1, ctypes.byref(n)))
        self.n_out = int(n.value)
        self._all: list[int] = []
        self._idle: list[int] = []
        self._lock = threading.Lock()
        self._idle.append(self._new_config())
        weakref.finalize(self, _free_all, self._all, booster)

    def _new_config(self) -> int:
        handle = ctypes.c_void_p()
        _safe_call(
            _init(
                self.booster._handle,
                self.predict_type,
                0,
                -1,
                _DTYPE_FLOAT64,
                self.ncol,
                _PARAMS,
                ctypes.byref(handle),
            )
        )
        value = int(handle.value or 0)
        with self._lock:
            self._all.append(value)
        return value

    def predict(self, row: np.ndarray) -> np.ndarray:
        """Outputs for one row: `row` must be a C-contiguous float64 array of `ncol` values."""
        if row.dtype != np.float64 or row.size != self.ncol or not row.flags.c_contiguous:
            raise ValueError(f"expected {self.ncol} contiguous float64 values, got {row.dtype} {row.shape}")
        out = np.empty(self.n_out, dtype=np.float64)
        written = ctypes.c_int64(0)
        with self._lock:
            config = self._idle.pop() if self._idle else None
        if config is None:
            config = self._new_config()
        try:
            # ctypes drops the GIL for the call, so other requests' Python runs meanwhile.
            _safe_call(_predict(config, row.ctypes.data, ctypes.byref(written), out.ctypes.data))
        finally:
            with self._lock:
                self._idle.append(config)
        if written.value != self.n_out:
            raise ValueError(f"LightGBM wrote {written.value} values, expected {self.n_out}")
        return out
