"""Imported by the forkserver of tests/cli_process.py, and only there: importing it imports the
libraries that the `keel` commands forked from that server then share.

The environment `keel` sets before MLflow's import is set first (MLflow configures its logger when
imported), the libraries' import-time warnings are not left in the filters the commands inherit,
and numba's compiler is set up (nothing of Keel's is compiled here).
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

from tests.cli_process import LIBRARIES

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for name in LIBRARIES:
        importlib.import_module(name)
    # numba sets up its compiler target on the first function it compiles or loads from its
    # cache: 0.4 s of every command that loads a model, done once here (no thread is started).
    import numba

    numba.njit(cache=False)(lambda x: x + 1)(1)

# BentoML imports Prometheus' client only when a service is built; were it imported here, the
# client would have read PROMETHEUS_MULTIPROC_DIR (which `keel serve` sets) too early.
if "prometheus_client" in sys.modules:
    raise RuntimeError("a preloaded library imported prometheus_client; take it out of LIBRARIES")
