"""What the command line shows while it works: rich status lines on stderr, dependency noise filtered.

Progress goes to stderr so that stdout stays what a script parses (JSON, a report path). On a
terminal rich redraws one live line; in a pipe or a CI log it prints plain lines instead.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.status import Status

__all__ = ["StageLog", "console", "quiet_dependencies", "stage"]

_console: Console | None = None


def console() -> Console:
    """The one stderr console of this process (created on first use, not at import)."""
    global _console
    if _console is None:
        _console = Console(stderr=True, highlight=False, soft_wrap=True)
    return _console


def quiet_dependencies() -> None:
    """Hide warnings from libraries that a Keel user cannot act on (entry points only)."""
    # MLflow's signature inference warns about integer columns and pip/env capture for every
    # models-from-code log; our signature is built from the contract and the env is ours.
    for module in ("mlflow", "bentoml", "pydantic", "evidently", "lightgbm", "shap", "sklearn", "alembic"):
        warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")
    warnings.filterwarnings("ignore", message=r".*type hints to the `predict` method")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("mlflow", "alembic", "bentoml", "evidently", "urllib3", "httpx", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow resets its logger on import


@contextmanager
def stage(title: str) -> Iterator[Status | None]:
    """A spinner with the elapsed time while `title` runs; a plain line where there is no terminal."""
    c = console()
    started = time.monotonic()
    if not c.is_terminal:
        c.print(f"{title} ...")
        yield None
        return
    with c.status(title) as status:
        yield status
    c.print(f"{title} done in {time.monotonic() - started:.0f} s")


class StageLog(logging.Handler):
    """Turns the INFO stage messages of `keel.training` into the live status line of one model."""

    def __init__(self, model: str, status: Status | None) -> None:
        super().__init__(logging.INFO)
        self.model, self.status = model, status
        self.started = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{self.model}: {record.getMessage()} ({time.monotonic() - self.started:.0f} s)"
        if self.status is None:
            console().print(text)
        else:
            self.status.update(text)

    @contextmanager
    def attached(self, logger_name: str = "keel.training") -> Iterator[None]:
        logger = logging.getLogger(logger_name)
        old = logger.level, logger.propagate
        logger.addHandler(self)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # the root handler would print every stage a second time
        try:
            yield
        finally:
            logger.removeHandler(self)
            logger.setLevel(old[0])
            logger.propagate = old[1]
