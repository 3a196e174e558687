"""Operators editing one sale at once from several OS processes: optimistic locking lets exactly one edit through."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from shared.store.sqlite import SqliteStore
from tests.concurrency.racers import edit_sale

pytestmark = pytest.mark.concurrency
EDITORS = 4


def race_edits(path: Path, locking: bool) -> dict[int, str]:
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 1.5  # every process has read the sale by then
    with ctx.Pool(EDITORS) as pool:
        results = pool.starmap(edit_sale, [(str(path), "phone", 100 + editor, start_at, locking) for editor in range(EDITORS)])
    return dict(results)


def test_of_editors_who_read_the_same_version_exactly_one_writes(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    store = SqliteStore(str(path))
    read = store.create_sale("phone", 10, 1, None)
    outcomes = race_edits(path, locking=True)
    written = [total for total, outcome in outcomes.items() if outcome == "written"]
    assert len(written) == 1, outcomes
    assert sorted(outcomes.values()).count("sale_changed") == EDITORS - 1
    after = store.get_sale("phone")
    assert after is not None and (after.total, after.version) == (written[0], read.version + 1)


def test_without_the_version_every_edit_lands_and_all_but_one_are_lost(tmp_path: Path) -> None:
    """The race without optimistic locking: each editor overwrites the last unseen, which is what the test above rules out."""
    path = tmp_path / "race.db"
    store = SqliteStore(str(path))
    read = store.create_sale("phone", 10, 1, None)
    outcomes = race_edits(path, locking=False)
    assert list(outcomes.values()) == ["written"] * EDITORS
    after = store.get_sale("phone")
    assert after is not None and after.version == read.version + EDITORS
