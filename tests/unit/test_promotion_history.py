"""The alias history's hash chain and lineage, the from-log split, and the class-count guard."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from keel.decision_log.alias_history import legacy_alias_hash
from keel.decision_log.database import Database
from keel.decision_log.log_key import create_key_file, load_keys
from keel.decision_log.migrations import upgrade
from keel.decision_log.verify import verify
from keel.errors import InvalidInput, RegistryError
from keel.feature_defs.contract import load_contract
from keel.models.aliases import APPROVE, PROMOTE, REQUEST, ROLLBACK, pending_request, previous_champion
from keel.models.history import History, HistoryEntry, history_json
from keel.training.from_log import REVIEW_HANDLING_TAG, mixed_training_frame
from keel.training.generators import generate
from keel.training.pipeline import check_class_counts, time_splits


def move(action: str, frm: str | None, to: str, actor: str = "ann", **kw: object) -> HistoryEntry:
    return HistoryEntry("routing", "champion", action, frm, to, actor, **kw)  # type: ignore[arg-type]


def test_history_chains_rows_and_names_the_first_tampered_one(tmp_path: Path) -> None:
    history = History(f"sqlite:///{tmp_path / 'log.db'}")
    gates = ({"criterion": "certifies coverage", "passed": False, "detail": "threshold 2.0"},)
    first = history.append(move(PROMOTE, "1", "2", reason="better", gates=gates, forced=True))
    second = history.append(move(ROLLBACK, "2", "1", actor="bob", reason="overrides up"))
    assert (first.seq, second.seq) == (1, 2) and history.verify().ok
    body = history_json(history, "routing")
    assert body["chain_intact"] and [m["action"] for m in body["moves"]] == [PROMOTE, ROLLBACK]
    assert body["moves"][0]["forced"] and body["moves"][0]["gates"][0]["passed"] is False
    assert history_json(history, "discount_band")["moves"] == []

    with history.engine.begin() as conn:  # someone edits the reason of the first move
        conn.execute(sa.text("UPDATE alias_history SET reason = 'routine' WHERE seq = 1"))
    check = history.verify()
    assert not check.ok and check.bad_seq == 1 and "hash" in check.problem
    whole = verify(history.db)  # the history is one of the decision log's chains
    assert not whole.ok and (whole.table, whole.bad_seq) == ("alias_history", 1)


def _legacy_history(url: str) -> None:
    """A log at revision 0003 with an alias_history table as keel.models.history made it before
    the history joined the log's chains: plain sha256 over each row's sorted JSON content."""
    db = Database(url)
    upgrade(db.engine, db.is_postgres, to="0003")
    prev = "0" * 64
    with db.engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE alias_history (seq INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, "
            "alias TEXT NOT NULL, action TEXT NOT NULL, from_version TEXT, to_version TEXT, actor TEXT "
            "NOT NULL, reason TEXT NOT NULL, forced BOOLEAN NOT NULL, gates TEXT NOT NULL, created_at "
            "TEXT NOT NULL, prev_hash TEXT NOT NULL UNIQUE, row_hash TEXT NOT NULL)"
        ))  # fmt: skip
        for i, (frm, to) in enumerate([(None, "1"), ("1", "2")]):
            content = {"model": "routing", "alias": "champion", "action": "register" if i == 0 else "promote",
                       "from_version": frm, "to_version": to, "actor": "ann", "reason": "", "forced": i == 1,
                       "gates": [{"criterion": "c", "passed": True, "detail": "d"}] * i,
                       "created_at": f"2026-01-0{i + 1}T00:00:00+00:00"}  # fmt: skip
            body = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
            row_hash = hashlib.sha256(f"{prev}\n{body}".encode()).hexdigest()
            conn.execute(
                sa.text(
                    "INSERT INTO alias_history (model, alias, action, from_version, to_version, actor, "
                    "reason, forced, gates, created_at, prev_hash, row_hash) VALUES (:model, :alias, "
                    ":action, :from_version, :to_version, :actor, :reason, :forced, :gates, :created_at, "
                    ":prev, :hash)"
                ),
                {**content, "gates": json.dumps(content["gates"]), "prev": prev, "hash": row_hash},
            )
            prev = row_hash
    db.dispose()


def test_history_rows_from_before_the_log_chain_migrate_and_still_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    _legacy_history(url)
    keyfile = tmp_path / "chain.key"
    key_id = create_key_file(keyfile)  # made after the old rows: they stay unkeyed, in the old format
    monkeypatch.setenv("KEEL_LOG_KEY_FILE", str(keyfile))
    history = History(url)
    assert history.verify().ok and [e.action for e in history.entries()] == ["register", "promote"]
    history.append(move(ROLLBACK, "2", "1", reason="overrides up"))
    result = verify(history.db, load_keys(keyfile))
    assert result.ok and result.heads["alias_history"][0] == 3 and result.key_ids == [key_id], result
    assert history.entries()[1].forced and history.entries()[1].gates[0]["criterion"] == "c"
    with history.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alias_history SET actor = 'mallory' WHERE seq = 1"))
    broken = verify(history.db, load_keys(keyfile))
    assert not broken.ok and (broken.table, broken.bad_seq) == ("alias_history", 1)


def test_only_migrated_rows_may_use_the_old_hash_format(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    history = History(url)
    history.append(move(PROMOTE, "1", "2"))
    # Someone without the chain key appends a row hashed the old way after the migration.
    values = ("routing", "champion", "promote", "2", "9", "mallory", "", 0, "[]", "2026-02-01T00:00:00+00:00")
    (prev,) = history.engine.connect().execute(sa.text("SELECT row_hash FROM alias_history")).one()
    forged = legacy_alias_hash(prev, values)
    with history.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO alias_history (model, alias, action, from_version, to_version, actor, reason, "
                "forced, gates, created_at, prev_hash, row_hash) VALUES (:v0, :v1, :v2, :v3, :v4, :v5, :v6, "
                ":v7, :v8, :v9, :prev, :hash)"
            ),
            {**{f"v{i}": v for i, v in enumerate(values)}, "prev": prev, "hash": forged},
        )
        conn.execute(
            sa.text("UPDATE chain_heads SET seq = 2, row_hash = :h WHERE name = 'alias_history'"),
            {"h": forged},
        )
    check = history.verify()
    assert not check.ok and check.bad_seq == 2


def test_rollback_target_follows_promotions_and_rollbacks() -> None:
    rows = [move(PROMOTE, "1", "2"), move(PROMOTE, "2", "3"), move(ROLLBACK, "3", "2")]
    assert previous_champion(rows[:2], "3") == "2"
    assert previous_champion(rows, "2") == "1"
    with pytest.raises(RegistryError, match="no previous champion"):
        previous_champion([*rows, move(ROLLBACK, "2", "1")], "1")
    with pytest.raises(RegistryError):  # the registry moved outside the history
        previous_champion(rows[:2], "7")


def test_a_request_is_pending_until_a_champion_move() -> None:
    request = move(REQUEST, "1", "2", actor="ann")
    assert pending_request([request], "2") == request
    assert pending_request([request], "3") is None
    assert pending_request([request, move(APPROVE, "1", "2", actor="bob")], "2") is None


def test_reviewed_cases_only_ever_fit_the_booster() -> None:
    contract = load_contract("routing")
    original = generate("routing", 1000, seed=1)
    logged = generate("routing", 300, seed=2).assign(event_time=lambda f: f["event_time"].astype(str))
    logged["case_id"] = [f"LOG-{i}" for i in range(len(logged))]
    mixed = mixed_training_frame(original, logged, contract, seed=0)
    frame = mixed.frame
    assert mixed.reviewed_used == 300 and mixed.reviewed_dropped == 0 and len(frame) == 1300
    assert mixed.tags[REVIEW_HANDLING_TAG].startswith("reviewed cases fit the booster only")
    # Reviewed rows are identified by content: the log rows' feature values.
    key = contract.field_names
    reviewed = frame[key].merge(logged[key].drop_duplicates(), how="left", indicator=True)["_merge"] == "both"
    sp = time_splits(len(frame))
    certifying = np.concatenate([sp.calib_fit, sp.risk, sp.test])
    assert reviewed.iloc[certifying].sum() == 0
    assert reviewed.iloc[np.concatenate([sp.train, sp.valid])].sum() == 300

    many = mixed_training_frame(original.iloc[:100], logged, contract, seed=0)
    assert many.reviewed_used + many.reviewed_dropped == 300 and many.reviewed_dropped > 0
    sp = time_splits(len(many.frame))
    assert many.reviewed_used <= len(sp.train) + len(sp.valid)


def test_training_refuses_a_class_with_too_few_rows() -> None:
    contract = load_contract("discount_band")
    frame = generate("discount_band", 20, seed=1)
    with pytest.raises(InvalidInput, match=r"too few training rows per class \(.*\); need at least 50 each"):
        check_class_counts(contract, frame, 50)
    check_class_counts(contract, pd.concat([generate("discount_band", 4000, seed=1)]), 50)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_writers_never_fork_the_chain(backend: str, tmp_path: Path) -> None:
    from tests.conftest import fresh_postgres_database

    def run(url: str) -> None:
        history = History(url)

        def writer(who: str) -> None:
            for i in range(4):
                history.append(move(PROMOTE, str(i), str(i + 1), actor=who))

        threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        check = history.verify()
        assert check.ok and check.rows_checked == 12, check

    if backend == "sqlite":
        run(f"sqlite:///{tmp_path / 'log.db'}")
    else:
        with fresh_postgres_database("keel_history") as url:
            run(url)
