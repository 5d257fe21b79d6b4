"""The `keel` command line in a process of its own, forked from a server that imported its libraries once.

Every `keel` command and `keel serve` a test runs is a process of its own, as a newcomer's is.
Most of such a process's CPU used to be importing its libraries: MLflow's tracking store, SciPy,
scikit-learn (through LightGBM), pandas, numba, FastAPI, BentoML and, for `keel monitor`,
Evidently (7 s together, on the 2-core machine), paid again by each of the suite's 200 or so
commands and 50 server starts. Here the process is forked instead from the standard library's
multiprocessing forkserver, which imported those libraries once per pytest worker (`LIBRARIES`):
it forks a child per request, hands it the file descriptors it is given and reports its exit
code. Nothing of Keel's is imported before the fork.

The child is then what a new `python -m keel.cli ARGS` would be to Keel: its own pid and, for a
server, its own session (process group), the environment and working directory given, `sys.argv`,
stdin/stdout/stderr on the descriptors given, Keel's modules imported afresh, its exit handlers
run and its exit code that of the command. Where a forked child could still differ from a new
interpreter, the command runs as a new interpreter instead: an environment whose interpreter or
native-library settings (`PYTHON*`, `OMP_*`, `NUMBA_*`, ...) differ from the forkserver's, or the
whole run with KEEL_TEST_FRESH_PROCESSES=1. A test of what only a new interpreter shows (what
importing prints) asks for one: `run_keel(..., fresh=True)`.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from multiprocessing import reduction
from typing import IO, Any

__all__ = ["FRESH_ENV", "LIBRARIES", "KeelProcess", "run", "start"]

FRESH_ENV = "KEEL_TEST_FRESH_PROCESSES"
"""Set to 1 to run every command as a new interpreter (`subprocess`), as before this module."""

LIBRARIES = (
    "numpy",
    "pandas",
    "scipy.stats",
    "sklearn",
    "lightgbm",
    "numba",
    "sqlalchemy.orm",
    "pydantic_settings",
    "fastapi",
    "uvicorn",
    "httpx",
    "pyarrow.parquet",
    "jinja2",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.pyfunc",
    "evidently",
    "psycopg",
    "bentoml",
    "_bentoml_sdk",  # what `bentoml.service` and `bentoml.asgi_app` load on first use
)
"""Imported once by the forkserver (tests/cli_preload.py); nothing of Keel's. BentoML's own
modules but not Prometheus' client, which reads the multiprocess folder that `keel serve` sets
when it is imported (tests/cli_preload.py refuses to preload it)."""

_STARTUP_PREFIXES = ("PYTHON", "OMP_", "KMP_", "GOMP_", "NUMBA_", "OPENBLAS_", "MKL_", "LD_", "MALLOC")
"""Settings read when the interpreter or a preloaded native library starts, not when Keel runs."""

_lock = threading.Lock()
_context: Any = None
_forkserver_env: dict[str, str] = {}
_started: list[KeelProcess] = []


def _startup_settings(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_STARTUP_PREFIXES)}


def _forkserver(env: Mapping[str, str], fresh: bool) -> Any:
    """The forkserver context, started on first use; None where a new interpreter must run `env`."""
    global _context
    if fresh or os.environ.get(FRESH_ENV) == "1":
        return None
    with _lock:
        if _context is None:
            _forkserver_env.update(_startup_settings(os.environ))
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["tests.cli_preload"])
            _context = ctx
            atexit.register(_stop_leftovers)
    if _startup_settings(env) != _forkserver_env:
        return None
    return _context


class _Fd:
    """A file descriptor that travels to the forked child (duplicated there by the forkserver)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        # Only valid while multiprocessing pickles the process for launch: DupFd asks the
        # launching Popen to send this descriptor with the request.
        return (_detach, (reduction.DupFd(self.fd),))


def _detach(dup: Any) -> int:
    return int(dup.detach())


def _command(args: list[str], env: dict[str, str], cwd: str, streams: list[int], new_session: bool) -> None:
    """The forked child: become `python -m keel.cli ARGS` and run it (multiprocessing exits with its code)."""
    import atexit as child_atexit
    import runpy

    if new_session:
        os.setsid()
    for target, fd in enumerate(streams):
        if fd != target:
            os.dup2(fd, target)
            os.close(fd)
    # multiprocessing points the child's stdin at /dev/null; a command reads the one it was given.
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - lives as long as the process
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["keel", *args]
    sys.path[0] = cwd  # as `python -m` puts the working directory first
    try:
        runpy.run_module("keel.cli", run_name="__main__", alter_sys=True)
    finally:
        # A new interpreter waits for its non-daemon threads, then runs its exit handlers
        # (temporary folders, logging); multiprocessing's child leaves with os._exit after its
        # own handlers, so do both here (the calls the interpreter makes; a second is a no-op).
        threading._shutdown()  # type: ignore[attr-defined]
        child_atexit._run_exitfuncs()


class KeelProcess:
    """A running `keel` command: the parts of `subprocess.Popen` the tests use."""

    forked = True
    """Forked from the forkserver (False: a new interpreter)."""

    def __init__(self, process: Any) -> None:
        self._process = process
        self.pid: int = process.pid

    @property
    def returncode(self) -> int | None:
        code = self._process.exitcode
        return None if code is None else int(code)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(["keel"], timeout or 0.0)
        return int(self._process.exitcode)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Popen(KeelProcess):
    """A new interpreter, for environments the forkserver cannot stand in for."""

    forked = False

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self._popen.wait(timeout)


def _stop_leftovers() -> None:
    """At exit, kill forked commands a failed test left running: multiprocessing would wait for them."""
    for process in _started:
        if process.returncode is None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)


def start(
    args: Sequence[str],
    env: Mapping[str, str],
    stdout: IO[Any] | int,
    stderr: IO[Any] | int,
    new_session: bool = False,
    stdin: IO[Any] | int = subprocess.DEVNULL,
    fresh: bool = False,
) -> KeelProcess:
    """Start `python -m keel.cli ARGS` with `env`, its streams on the given files or descriptors;
    `fresh`: in a new interpreter whatever the environment."""
    ctx = _forkserver(env, fresh)
    if ctx is None:
        return _Popen(
            subprocess.Popen(
                [sys.executable, "-m", "keel.cli", *args],
                env=dict(env),
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                start_new_session=new_session,
            )
        )
    with contextlib.ExitStack() as opened:
        fds = []
        for stream in (stdin, stdout, stderr):
            if stream == subprocess.DEVNULL:
                stream = opened.enter_context(open(os.devnull, "r+b"))
            fds.append(_Fd(stream if isinstance(stream, int) else stream.fileno()))
        process = ctx.Process(
            target=_command,
            args=(list(args), dict(env), os.getcwd(), fds, new_session),
            name=f"keel {' '.join(args)[:60]}",
        )
        process.start()  # the descriptors are sent now; ours are closed by the ExitStack
    started = KeelProcess(process)
    _started.append(started)
    return started


def run(
    args: Sequence[str], env: Mapping[str, str], timeout: float, fresh: bool = False
) -> subprocess.CompletedProcess[str]:
    """`subprocess.run([python, -m, keel.cli, *args], capture_output=True, text=True)`, forked
    from the forkserver unless `fresh` or the environment asks for a new interpreter."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        process = start(args, env, out_w, err_w, fresh=fresh)
    finally:
        os.close(out_w)
        os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}

    def drain(fd: int) -> None:
        with open(fd, "rb", closefd=True) as pipe:
            while block := pipe.read1(65536):
                chunks[fd].append(block)

    readers = [threading.Thread(target=drain, args=(fd,), daemon=True) for fd in (out_r, err_r)]
    for reader in readers:
        reader.start()
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)
        raise subprocess.TimeoutExpired(["keel", *args], timeout) from None
    for reader in readers:
        # EOF comes when the command and any children it left running close the pipes.
        reader.join(timeout)
    # Decoded as subprocess.run(text=True) decodes: the locale's encoding, universal newlines.
    out, err = (io.TextIOWrapper(io.BytesIO(b"".join(chunks[fd]))).read() for fd in (out_r, err_r))
    return subprocess.CompletedProcess(["keel", *args], code, out, err)
