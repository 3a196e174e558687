"""The sold-out memo: who it refuses, and that one request re-checks it when it lapses."""

from __future__ import annotations

import time

import pytest

from shared import soldout
from shared.soldout import SoldOutMemos


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)  # the module shared.soldout reads its clock from
    return clock


def test_refuses_everyone_but_the_holders(clock: Clock) -> None:
    memos = SoldOutMemos(1.0)
    memos.remember("s", frozenset({"winner"}))
    memo = memos.peek("s")
    assert memo is not None and memo.refuses("loser") and not memo.refuses("winner")
    assert memos.peek("other-sku") is None


def test_one_request_re_checks_a_lapsed_memo_while_the_others_keep_it(clock: Clock) -> None:
    memos = SoldOutMemos(1.0)
    memos.remember("s", frozenset())
    clock.now += 1.5
    assert memos.peek("s") is None  # lapsed, nobody re-checking: peeking never starts a re-check
    assert memos.get("s") == (None, True)  # this caller re-checks
    kept, rechecking = memos.get("s")
    assert kept is not None and not rechecking  # the others are answered from the lapsed memo meanwhile
    memos.remember("s", frozenset({"late-winner"}))
    memo = memos.peek("s")
    assert memo is not None and not memo.refuses("late-winner")


def test_a_slow_re_check_keeps_the_memo_and_one_that_never_ends_stops_counting(clock: Clock) -> None:
    memos = SoldOutMemos(1.0)
    memos.remember("s", frozenset())
    clock.now += 1.5
    assert memos.get("s") == (None, True)
    clock.now += 5  # the re-check queues behind a crowd: the others keep the lapsed memo meanwhile
    assert memos.get("s")[0] is not None
    clock.now += soldout.RECHECK_SECONDS  # the re-checking request died without a word
    assert memos.get("s") == (None, True)


def test_forget_ends_the_memo_and_begin_load_lets_one_loader_in(clock: Clock) -> None:
    memos = SoldOutMemos(1.0)
    assert memos.begin_load("s") and not memos.begin_load("s")
    memos.remember("s", frozenset())
    assert not memos.begin_load("s")  # a fresh memo needs no load
    memos.forget("s")
    assert memos.peek("s") is None and memos.begin_load("s")
