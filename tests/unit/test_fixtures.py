"""The shared fixtures keep their word: PostgreSQL tests skip where there is no server and fail
where the run says there is one (`.ci/run` sets KEEL_TEST_REQUIRE_POSTGRES=1), shown on a port
where nothing listens; a wait for the log's writer ends at its deadline with what it saw."""

from __future__ import annotations

import socket
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_POSTGRES, fresh_postgres_database, wait_until
from tests.trained_store import trained_once


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"  # bound, then released: nothing listens


def test_no_server_skips_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_POSTGRES, raising=False)
    url = _closed_port_url()
    with pytest.raises(pytest.skip.Exception) as skipped, fresh_postgres_database("keel_none", url):
        pytest.fail("entered a database on a port where nothing listens")
    assert f"no PostgreSQL server at {url.split('@')[1].split('/')[0]}" in str(skipped.value)


def test_no_server_fails_where_the_run_requires_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_POSTGRES, "1")
    with (
        pytest.raises(pytest.fail.Exception) as failed,
        fresh_postgres_database("keel_none", _closed_port_url()),
    ):
        pytest.skip("must not be reached")
    assert "no PostgreSQL server" in str(failed.value) and f"{REQUIRE_POSTGRES}=1" in str(failed.value)


@pytest.mark.postgres
def test_the_required_server_gives_a_fresh_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the server there, the requirement changes nothing: a new database, dropped after."""
    monkeypatch.setenv(REQUIRE_POSTGRES, "1")
    psycopg = pytest.importorskip("psycopg")
    with fresh_postgres_database("keel_req") as url:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(url, connect_timeout=3) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=3) as admin:
        assert admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None


def test_a_wait_that_never_comes_true_fails_at_its_deadline_saying_what_it_saw() -> None:
    seen = [0]
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"only 0 decisions appended \(waited 0.3 s\)"):
        wait_until(lambda: seen[0] >= 1, 0.3, lambda: f"only {seen[0]} decisions appended")
    assert 0.3 <= time.monotonic() - started < 5
    wait_until(lambda: True, 0.3, lambda: "never said")  # a condition already true returns at once


def test_the_session_store_is_trained_once_and_copied_into_another_home(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """What another pytest-xdist worker gets instead of training: the same store in its own home,
    every recorded location under the first home moved to its own, the artefacts beside it."""
    first, second = tmp_path / "first", tmp_path / "second"
    trained: list[Path] = []

    def train(home: Path) -> dict[str, str]:
        trained.append(home)
        (home / "mlartifacts" / "1").mkdir(parents=True)
        (home / "mlartifacts" / "1" / "booster.txt").write_text("tree")
        with sqlite3.connect(home / "mlflow.db") as conn:
            conn.execute("CREATE TABLE runs (id INTEGER, artifact_uri TEXT, note TEXT)")
            conn.execute("INSERT INTO runs VALUES (1, ?, ?)", (f"file://{home}/mlartifacts/1", str(home)))
        conn.close()
        return {"routing": "1"}

    key = f"unit-{uuid.uuid4().hex[:8]}"
    assert trained_once(tmp_path_factory, key, first, lambda: train(first)) == {"routing": "1"}
    assert trained_once(tmp_path_factory, key, second, lambda: train(second)) == {"routing": "1"}
    assert trained == [first]
    assert (second / "mlartifacts" / "1" / "booster.txt").read_text() == "tree"
    with sqlite3.connect(second / "mlflow.db") as conn:
        row = conn.execute("SELECT artifact_uri, note FROM runs").fetchone()
    conn.close()
    # Only locations under the home move (with its trailing slash); other text stays as it was.
    assert row == (f"file://{second}/mlartifacts/1", str(first))
