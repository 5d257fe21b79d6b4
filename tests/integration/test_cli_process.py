"""The tests' forked `keel` commands (tests/cli_process.py) answer exactly as new interpreters do."""

from __future__ import annotations

import multiprocessing.forkserver
import os
from pathlib import Path

import pytest

from tests import cli_process
from tests.conftest import run_keel

COMMANDS = (
    ("--version",),
    ("keys", "list"),  # no state yet: refused with the state's path
    ("monitor", "credit"),  # an unknown model: exit 3 (could not run)
    ("train", "no_such_model"),  # argparse: usage on stderr, exit 2
    ("score", "--help"),
)


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
def test_a_forked_command_answers_as_a_new_interpreter_does(args: tuple[str, ...], tmp_path: Path) -> None:
    env = {**os.environ, "KEEL_HOME": str(tmp_path / "home"), "COLUMNS": "100"}
    env.pop("MLFLOW_TRACKING_URI", None)
    forked = run_keel(env, *args, timeout=120)
    fresh = run_keel(env, *args, timeout=120, fresh=True)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert forked.stdout or forked.stderr


def test_the_forkserver_holds_the_libraries(tmp_path: Path) -> None:
    """The libraries are imported in the forkserver, so forked commands share them: its memory
    maps LightGBM's library (loaded by `import lightgbm`)."""
    env = {**os.environ, "KEEL_HOME": str(tmp_path / "home")}
    assert run_keel(env, "--version").returncode == 0
    if os.environ.get(cli_process.FRESH_ENV) == "1":
        pytest.skip(f"{cli_process.FRESH_ENV}=1: every command is a new interpreter")
    pid = multiprocessing.forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    assert pid is not None
    assert "lib_lightgbm.so" in Path(f"/proc/{pid}/maps").read_text()


def test_an_environment_the_forkserver_cannot_stand_in_for_gets_a_new_interpreter(tmp_path: Path) -> None:
    """PYTHONHASHSEED is read when an interpreter starts: a forked child would keep the server's."""
    env = {**os.environ, "KEEL_HOME": str(tmp_path / "home"), "PYTHONHASHSEED": "12345"}
    with (tmp_path / "out").open("wb") as out:
        process = cli_process.start(["--version"], env, out, out)
    assert process.wait(120) == 0
    assert not process.forked
    assert (tmp_path / "out").read_text().startswith("keel ")
