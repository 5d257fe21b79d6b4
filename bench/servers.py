"""Server subprocesses for the benchmarks: start on a free 127.0.0.1 port, wait ready, measure CPU, stop."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

__all__ = [
    "Server",
    "base_env",
    "free_port",
    "keel_cli",
    "measure_cpu",
    "proc_cpu_seconds",
    "use_state",
    "wait_ready",
]

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A server subprocess on 127.0.0.1; always stopped with terminate, then kill after a timeout."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path, port: int) -> None:
        self.name, self.argv, self.env, self.log_path, self.port = name, argv, env, log_path, port
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> Server:
        self.started = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def is_ready(self) -> bool:
        """True once /readyz answers 200; raises if the process has exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/readyz")
                return conn.getresponse().status == 200
            finally:
                conn.close()
        return False

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=STOP_TIMEOUT_S)
        return p.returncode


def wait_ready(servers: list[Server], timeout: float = READY_TIMEOUT_S) -> dict[str, float]:
    """Poll every server until all are ready; seconds from each one's start to its first 200."""
    ready: dict[str, float] = {}
    deadline = time.perf_counter() + timeout
    while len(ready) < len(servers):
        for s in servers:
            if s.name not in ready and s.is_ready():
                ready[s.name] = round(time.perf_counter() - s.started, 2)
        if time.perf_counter() > deadline:
            late = [s for s in servers if s.name not in ready]
            raise RuntimeError(f"{late[0].name} not ready after {timeout:.0f} s:\n{late[0].log_tail()}")
        time.sleep(0.1)
    return ready


def use_state(env: MutableMapping[str, str], home: Path) -> None:
    """Point `env` (a copy, or this process's os.environ) at the self-contained state in `home`:
    the MLflow store and the decision log inside KEEL_HOME (SQLite)."""
    for var in ("MLFLOW_TRACKING_URI", "KEEL_DECISION_LOG_URL"):
        env.pop(var, None)
    env["KEEL_HOME"] = str(home)


def base_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    use_state(env, home)
    env["BENTOML_DO_NOT_TRACK"] = "True"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def keel_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "keel.cli", *args]


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, all threads (Linux /proc); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def measure_cpu(pid: int, phase: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a phase and add the server's CPU time per answered request (and CPUs kept busy)."""
    c0, t0 = proc_cpu_seconds(pid), time.perf_counter()
    res = phase()
    c1, wall = proc_cpu_seconds(pid), time.perf_counter() - t0
    if c0 is not None and c1 is not None and res["ok_total"]:
        res["server_cpu_ms_per_request"] = round((c1 - c0) / res["ok_total"] * 1000, 3)
        res["server_cpus_busy"] = round((c1 - c0) / wall, 2)
    return res
