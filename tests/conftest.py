"""Shared fixtures: a real MLflow store in a temp folder and tiny real models trained into it."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from keel.feature_defs.contract import MODEL_NAMES
from tests import cli_process
from tests.trained_store import trained_once

COSTLY_FILES = (
    "integration/test_monitor.py",  # 181 s (with training the session models first)
    "integration/test_client.py",  # 74 s
    "integration/test_batch.py",  # 66 s
    "integration/test_mlflow_server.py",  # 62 s
    "integration/test_console_browser.py",  # 52 s
    "unit/test_audit_stats.py",  # 50 s
    "model/test_abstention_guarantee.py",  # 48 s
    "integration/test_events.py",  # 40 s
    "model/test_consistency.py",  # 38 s
    "integration/test_challengers.py",  # 35 s
    "integration/test_train_register.py",  # 26 s
    "integration/test_durability.py",  # 24 s
    "unit/test_drift.py",  # 23 s
    "integration/test_portable_model.py",  # 21 s
    "integration/test_reviewer_consistency.py",  # 20 s
    "integration/test_service.py",  # 18 s
    "integration/test_monitor_state.py",  # 17 s
    "integration/test_promotion.py",  # 17 s
    "integration/test_log_faults.py",  # 16 s
    "integration/test_audits.py",  # 16 s
    "integration/test_retention.py",  # 12 s
    "integration/test_restore_keys.py",  # 12 s
    "integration/test_sealed_versions.py",  # 10 s
    "integration/test_log_store.py",  # 10 s
)
"""The test files that take longest, costliest first: the sums of their tests' times in a
`pytest -n 2 --dist loadfile --durations=0` run on the 2-core machine, with the commands forked
(tests/cli_process.py; 2026-12-08, 1,014 s in all, 523 s of wall time). Under pytest-xdist a
file runs on one worker, so a long file handed out last decides when the run ends while the
other worker idles; handed out first, the many short files fill in around it. A file missing
here only runs later: the order changes the run's length, never its outcome."""


def pytest_configure(config: pytest.Config) -> None:
    """pytest-xdist's loadfile scheduling hands out files by their number of tests, most first,
    unless told otherwise; that put the costliest files (one long test each) at the very end.
    With the sort off it keeps the order `pytest_collection_modifyitems` gives."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist: the costliest files first (COSTLY_FILES), then the rest as collected.
    The first file is one that needs the session models (`registered`), so its worker starts
    training them at once; the second one that never asks for them, so the other worker (given
    the second file) runs it meanwhile instead of waiting for the training. Alone, the order is
    as collected."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    tests = Path(__file__).parent
    rank = {tests / name: i for i, name in enumerate(COSTLY_FILES)}
    files = sorted(dict.fromkeys(item.path for item in items), key=lambda p: rank.get(p, len(rank)))
    needs = {item.path for item in items if "registered" in getattr(item, "fixturenames", ())}
    trains = next((p for p in files if p in needs), None)
    if trains is not None:
        files.remove(trains)
        files.insert(0, trains)
        meanwhile = next((p for p in files if p not in needs), None)
        if meanwhile is not None:
            files.remove(meanwhile)
            files.insert(1, meanwhile)
    position = {p: i for i, p in enumerate(files)}
    items.sort(key=lambda item: position[item.path])


@dataclass(frozen=True)
class Store:
    home: Path
    env: dict[str, str]


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A KEEL_HOME with an embedded MLflow store; the process env points at it for the session."""
    home = tmp_path_factory.mktemp("keel-home")
    env = {"KEEL_HOME": str(home), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    saved = {k: os.environ.get(k) for k in [*env, "MLFLOW_TRACKING_URI"]}
    os.environ.update(env)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from keel.settings import StateSettings, prepare_state

    prepare_state(StateSettings())
    yield Store(home, env)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def registered(store: Store, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Train and register all three models on small generated data; returns name -> version.

    At alpha 0.05: on 8,000 rows (800-row risk-control splits) discount_band certifies nothing at
    the default 0.02 in most draws whatever the search (bench.risk_control, "small": 302/400 with
    the fallback procedure, 290/400 with a single start at the full delta), and an
    abstain-on-everything champion would leave the service, policy and monitoring tests nothing
    to look at. Trained once per run: other pytest-xdist workers get a copy of the store."""
    return trained_once(tmp_path_factory, "registered", store.home, _train_session_models)


def _train_session_models() -> dict[str, str]:
    from keel.settings import StateSettings
    from keel.training.generators import generate
    from keel.training.registration import train_and_register
    from keel.training.settings import TrainingSettings

    settings = TrainingSettings(rows=8000, num_boost_round=120, seed=3, alpha=0.05)
    versions = {}
    for name in MODEL_NAMES:
        frame = generate(name, settings.rows, settings.seed)
        versions[name] = train_and_register(name, frame, StateSettings(), settings).version
        _champion_even_if_uncertified(name, versions[name])
    return versions


def _champion_even_if_uncertified(name: str, version: str) -> None:
    """Should a small session model still certify nothing, registration makes it challenger only;
    the service tests need a champion of every model."""
    from keel.models import registry

    if not registry.has_alias(name, registry.CHAMPION):
        registry.promote(name, version)


def wait_until(condition: Callable[[], bool], timeout: float, failure: Callable[[], str]) -> None:
    """Poll `condition` until it holds; past `timeout` seconds fail with `failure()` (which can
    say what was seen) instead of waiting for ever on a writer that stopped."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{failure()} (waited {timeout:g} s)")
        time.sleep(0.05)


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REQUIRE_POSTGRES = "KEEL_TEST_REQUIRE_POSTGRES"
"""Set to 1 by .ci/run, where the server is part of the job: a PostgreSQL test that cannot reach
it fails there instead of skipping, so a broken CI service cannot pass as a green run."""


def _no_postgres(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_POSTGRES) == "1":
        pytest.fail(f"{reason}; {REQUIRE_POSTGRES}=1 says this run has one", pytrace=False)
    pytest.skip(reason)


@contextmanager
def fresh_postgres_database(prefix: str, admin_url: str = PG_ADMIN) -> Iterator[str]:
    """A new database on the PostgreSQL server of `admin_url`, dropped afterwards. Where there is
    no server it skips with the reason, or fails when REQUIRE_POSTGRES says there must be one."""
    try:
        import psycopg
    except ImportError as exc:
        _no_postgres(f"psycopg is not installed ({exc})")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    server = admin_url.rsplit("/", 1)[0]
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        _no_postgres(f"no PostgreSQL server at {server.split('@')[-1]} ({' '.join(str(exc).split())})")
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{server}/{name}"
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def cli_env(store: Store, **extra: str) -> dict[str, str]:
    """Environment for a `keel` subprocess on the session's store, with small training defaults."""
    env = {**os.environ, **store.env, "KEEL_TRAIN_ROWS": "4000", "KEEL_TRAIN_NUM_BOOST_ROUND": "60", **extra}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run_keel(
    env: Mapping[str, str], *args: str, timeout: float = 240, fresh: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the `keel` command line in its own process: forked from the tests' forkserver, which
    imported its libraries once (tests/cli_process.py), or with `fresh` a new interpreter, as a
    newcomer's shell starts it (for what a new interpreter alone shows: import-time output)."""
    return cli_process.run(args, env, timeout, fresh)
