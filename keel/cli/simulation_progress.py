"""The live line of `keel simulate`: cases sent, decided, feedback, errors and the request rate."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from keel.terminal import console

__all__ = ["simulation_progress"]


@contextmanager
def simulation_progress(cfg: Any) -> Iterator[Callable[[Any], None]]:
    """A callback for `run_simulation` that draws a progress bar (or, off a terminal, a line
    every 10% of the cases)."""
    total = cfg.cases * len(cfg.models)
    columns = (
        TextColumn("simulate"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} cases"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    c = console()
    with Progress(*columns, console=c, transient=False, disable=not c.is_terminal) as bar:
        task = bar.add_task("simulate", total=total, detail="")
        step = max(total // 10, 1)
        next_line = [step]

        def update(report: Any) -> None:
            errors = sum(report.errors.values())
            rate = report.sent / report.seconds if report.seconds else 0.0
            detail = (
                f"decided {report.decided}, abstained {report.abstained}, feedback {report.feedback}, "
                f"errors {errors}, {rate:.0f} cases/s"
            )
            bar.update(task, completed=report.sent, detail=detail)
            if not c.is_terminal and report.sent >= next_line[0]:
                c.print(f"simulate: {report.sent}/{total} cases; {detail}")
                next_line[0] = (report.sent // step + 1) * step

        yield update
