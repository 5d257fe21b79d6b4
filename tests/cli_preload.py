"""Imported by the forkserver of tests/cli_process.py, and only there: importing it imports the
libraries that the `keel` commands forked from that server then share.

The environment `keel` sets before MLflow's import is set first (MLflow configures its logger when
imported), and the libraries' import-time warnings are not left in the filters the commands inherit.
"""

from __future__ import annotations

import importlib
import os
import warnings

from tests.cli_process import LIBRARIES

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for name in LIBRARIES:
        importlib.import_module(name)
