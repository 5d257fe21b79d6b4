"""The mistakes a newcomer makes each get one line in their words and a documented exit code.

Most cases run `keel.cli.main` in this process (the same code path, seconds cheaper); one runs the
command line as its own process to show no traceback reaches the terminal.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from keel.cli import build_parser, main
from keel.decision_log.database import Database
from keel.errors import ExitCode, Unauthorized
from keel.feature_defs.contract import MODEL_NAMES
from keel.serving.keys import KeyStore
from keel.training.generators import generate
from tests.conftest import Store, cli_env, run_keel

READING_COMMANDS = [
    ["monitor", "all"],
    ["monitor", "explain", "00000000-0000-0000-0000-000000000000"],
    ["verify-log"],
    ["models"],
    ["status"],
    ["keys", "list"],
    ["promote", "routing", "1"],
    ["consistency", "routing"],
    ["serve", "--port", "1"],
]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.err.strip().splitlines(), out.out


@pytest.fixture()
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory with no Keel state, as outside a checkout; MLflow's process-wide
    tracking URI is put back afterwards, so later tests keep the session's store."""
    import mlflow

    home = tmp_path / "nothing-here" / ".keel"
    tracking = mlflow.get_tracking_uri()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KEEL_HOME", str(home))
    for name in ("MLFLOW_TRACKING_URI", "KEEL_DECISION_LOG_URL", "KEEL_KEY"):
        monkeypatch.delenv(name, raising=False)
    yield home
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)


@pytest.mark.parametrize("command", READING_COMMANDS, ids=" ".join)
def test_reading_commands_without_state_say_so_and_create_nothing(
    command: list[str], elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err, _ = run(capsys, *command)
    assert code == ExitCode.NO_STATE
    assert err == [
        f"keel: no Keel state directory at {elsewhere}; run keel where you ran `keel train`, or set KEEL_HOME"
    ]
    assert not elsewhere.exists() and not (elsewhere.parent / "mlflow.db").exists()


def test_a_missing_decision_log_beside_a_store_is_named(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "none.db"
    monkeypatch.setenv("KEEL_DECISION_LOG_URL", f"sqlite:///{log}")
    code, err, _ = run(capsys, "verify-log")
    assert code == ExitCode.NO_STATE and len(err) == 1
    assert err[0].startswith(f"keel: no decision log at {log};") and not log.exists()


def test_no_traceback_in_a_separate_process(store: Store, tmp_path: Path) -> None:
    env = cli_env(store, KEEL_HOME=str(tmp_path / "absent"))
    done = run_keel(env, "verify-log", timeout=120)
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_train_on_a_missing_file(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, _ = run(capsys, "train", "routing", "--data", "missing.csv")
    assert (code, err) == (ExitCode.USAGE, ["keel: missing.csv: no such file"])
    assert not elsewhere.exists()


def test_one_bad_csv_cell_is_pointed_at_with_a_count_of_the_rest(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = generate("routing", 300, seed=2).astype({"days_open": object})
    frame.loc[16, "days_open"] = "abc"
    path = tmp_path / "cases.csv"
    frame.to_csv(path, index=False)
    code, err, _ = run(capsys, "train", "routing", "--data", str(path))
    assert code == ExitCode.USAGE
    # Row 17 of the data is line 18 of the file (line 1 is the header); nothing else is blamed.
    assert err[-1] == (
        f"keel: {path}: training data breaks the routing contract: "
        "row 17 (line 18), days_open: expected a number, got 'abc'"
    )
    frame.loc[40, "amount_at_stake"] = -5.0
    frame.loc[50, "region"] = "MARS"
    frame.to_csv(path, index=False)
    code, err, _ = run(capsys, "train", "routing", "--data", str(path))
    assert code == ExitCode.USAGE and err[-1].endswith("got 'abc' (and 2 more problems)")
    assert not any(line.startswith("  ") for line in err)


def test_text_cells_in_a_good_csv_still_parse(tmp_path: Path) -> None:
    from keel.feature_defs.contract import load_contract
    from keel.training.data import check_training_frame, read_table

    frame = generate("invoice_classification", 200, seed=3)
    path = tmp_path / "ok.csv"
    frame.to_csv(path, index=False)
    checked = check_training_frame(load_contract("invoice_classification"), read_table(path))
    assert len(checked) == 200 and pd.api.types.is_bool_dtype(read_table(path)["po_present"])


def test_simulate_without_a_key(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, out = run(capsys, "simulate", "--url", "http://127.0.0.1:9")
    assert code == ExitCode.USAGE and out == ""
    assert len(err) == 1 and err[0].startswith("keel: no API key: pass --key or export KEEL_KEY")


def test_unknown_model_is_one_line(elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, _ = run(capsys, "train", "nonsense")
    assert code == ExitCode.USAGE
    assert err == [f"keel: unknown model 'nonsense'; choose from {', '.join(MODEL_NAMES)} or all"]


def test_roles_repeated_or_listed_both_count() -> None:
    parser = build_parser()
    repeated = parser.parse_args(["keys", "add", "a", "--role", "decide", "--role", "read"])
    listed = parser.parse_args(["keys", "add", "a", "--role", "decide", "read"])
    assert repeated.role == listed.role == ["decide", "read"]


def test_key_names_are_reusable_after_revoke_and_rotate_replaces_a_lost_key(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, out = run(capsys, "keys", "add", "ops", "--role", "decide", "--role", "read")
    assert code == 0
    first = out.split("export KEEL_KEY=")[1].strip()
    assert run(capsys, "keys", "revoke", "ops")[0] == 0
    code, _, out = run(capsys, "keys", "add", "ops", "--role", "admin")
    assert code == 0, "a revoked key's name can be used again"
    second = out.split("export KEEL_KEY=")[1].strip()
    code, _, out = run(capsys, "keys", "rotate", "ops")
    assert code == 0
    third = out.split("export KEEL_KEY=")[1].strip()

    store = KeyStore(Database(f"sqlite:///{elsewhere / 'decisions.db'}"), cache_seconds=0)
    assert store.authenticate(f"Bearer {third}").roles == frozenset({"admin"})
    for old in (first, second):
        with pytest.raises(Unauthorized):
            store.authenticate(f"Bearer {old}")
    listed = run(capsys, "keys", "list")[2].splitlines()
    assert sum(line.startswith("ops\t") and line.endswith("active") for line in listed) == 1
    assert sum("revoked" in line for line in listed) == 2
    code, err, _ = run(capsys, "keys", "rotate", "nobody")
    assert code == ExitCode.FAILED and err[-1].startswith("keel: no active key named 'nobody'")


def test_version_and_defaults_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("keel 0.")
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 500)" in text and "(default: http://127.0.0.1:3000)" in text
    assert "(default: None)" not in text


def test_status_names_the_state_models_and_log(store: Store, registered: dict[str, str]) -> None:
    done = run_keel(cli_env(store), "status", timeout=120)
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert f"KEEL_HOME      {store.home}" in out and "mlflow.db" in out
    for name in MODEL_NAMES:
        assert any(line.split()[:1] == [name] and "champion v" in line for line in out.splitlines()), out
