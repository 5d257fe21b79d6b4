"""The alias history's hash chain and lineage, the from-log split, and the class-count guard."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from keel.feature_defs.contract import load_contract
from keel.models.aliases import APPROVE, PROMOTE, REQUEST, ROLLBACK, pending_request, previous_champion
from keel.models.history import History, HistoryEntry, history_json
from keel.training.from_log import REVIEW_HANDLING_TAG, mixed_training_frame
from keel.training.generators import generate
from keel.training.pipeline import check_class_counts, time_splits

from keel.errors import InvalidInput, RegistryError


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
