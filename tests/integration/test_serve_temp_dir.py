"""`keel serve` leaves nothing behind when it stops: no Prometheus folder in the temp directory,
no helper process."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import Store
from tests.integration.conftest import make_keys, start_server


def test_keel_serve_removes_its_prometheus_folder_and_helpers_when_it_stops(
    store: Store, registered: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # the server makes its own
    log_url = f"sqlite:///{tmp_path / 'decisions.db'}"
    make_keys(log_url, "tmp")
    srv = start_server(store, tmp_path, log_url, extra_env={"TMPDIR": str(temp)})
    try:
        running = sorted(p.name for p in temp.glob("keel-prom-*"))
        assert len(running) == 1, running  # the server did use this temp directory
        deadline = time.monotonic() + 30
        helpers = psutil.Process(srv.process.pid).children(recursive=True)
        while not helpers and time.monotonic() < deadline:  # the body checker starts in the background
            time.sleep(0.2)
            helpers = psutil.Process(srv.process.pid).children(recursive=True)
        assert helpers, "keel serve started no helper process (the body checker)"
    finally:
        srv.stop()
    log = srv.log_path.read_text()[-3000:] if srv.log_path else ""
    # Stopped by SIGTERM (Server.stop): a clean exit, or death by the signal once cleanup is done.
    assert srv.process.returncode in (0, -signal.SIGTERM), log
    assert not list(temp.glob("keel-prom-*")), log
    _, alive = psutil.wait_procs(helpers, timeout=10)
    try:
        assert not alive, [p.cmdline() for p in alive]
    finally:
        for p in alive:  # a failed run leaves no orphan behind either
            p.kill()
