"""The one in-process cache: when entries lapse, how far it grows, and what it drops when full.

Each test names the bug it would catch. The clock is injected: no sleeps.
"""

from __future__ import annotations

import time

import pytest

from shared.ttlcache import TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


# --- expiry -----------------------------------------------------------------------------------------------------------


def test_a_value_is_served_until_its_lifetime_ends_and_not_at_that_instant(clock: Clock) -> None:
    """Bug caught: an off-by-one at the boundary (>= for >), or a lifetime never checked, serving a stale stock level."""
    cache: TTLCache[str, str] = TTLCache(10, clock)
    cache.set("phone", "100 left", 2.0)
    assert cache.get("phone") == "100 left"
    clock.now += 1.999
    assert cache.get("phone") == "100 left"
    clock.now = 1002.0
    assert cache.get("phone") is None  # lapsed at exactly set time + lifetime


def test_each_entry_has_its_own_lifetime(clock: Clock) -> None:
    """Bug caught: one lifetime for the whole cache (a Redis copy with 0.2 s left kept for a full TTL)."""
    cache: TTLCache[str, int] = TTLCache(10, clock)
    cache.set("short", 1, 0.2)
    cache.set("long", 2, 5.0)
    clock.now += 1.0
    assert (cache.get("short"), cache.get("long")) == (None, 2)


def test_set_until_keeps_the_deadline_given(clock: Clock) -> None:
    """Bug caught: a token kept past its own exp because the deadline was re-derived from a duration and drifted."""
    cache: TTLCache[str, str] = TTLCache(10, clock)
    cache.set_until("token", "claims", 1005.0)
    clock.now = 1004.9
    assert cache.get("token") == "claims"
    clock.now = 1005.0
    assert cache.entries.get("token") == (1005.0, "claims")
    assert cache.get("token") is None


def test_a_deadline_is_kept_as_a_float(clock: Clock) -> None:
    """Bug caught: a token's int exp stored as is, which makes every hit's comparison with the float clock slower."""
    cache: TTLCache[str, str] = TTLCache(10, clock)
    cache.set_until("token", "claims", 1005)
    entry = cache.entries.get("token")
    assert entry is not None and type(entry[0]) is float


def test_setting_again_renews_the_lifetime_and_the_value(clock: Clock) -> None:
    """Bug caught: a re-set ignored, so a refreshed stock level still lapses (or still reads) as the old one."""
    cache: TTLCache[str, str] = TTLCache(10, clock)
    cache.set("phone", "old", 1.0)
    clock.now += 0.9
    cache.set("phone", "new", 1.0)
    clock.now += 0.9
    assert cache.get("phone") == "new"


def test_a_lapsed_entry_is_still_readable_in_entries(clock: Clock) -> None:
    """Bug caught: lapsed entries deleted when they lapse, so the sale cache cannot answer from a lapsed copy while one
    request re-reads it, and the sold-out memo forgets the holders it had (those owners read ``entries``, never ``get``)."""
    cache: TTLCache[str, str] = TTLCache(10, clock)
    cache.set("phone", "sale", 1.0)
    clock.now += 5
    assert cache.entries.get("phone") == (1001.0, "sale")
    assert cache.entries.get("nothing") is None


def test_get_drops_the_lapsed_entry_it_reads(clock: Clock) -> None:
    """Bug caught: a lapsed entry kept until a write found the cache full, so what a flood of strangers' tokens
    left behind stayed in memory after their lifetime (the parsed-token cache: 4,096 entries for good)."""
    cache: TTLCache[str, str] = TTLCache(10, clock)
    cache.set("token", "parsed", 1.0)
    cache.set("other", "parsed", 10.0)
    clock.now += 5
    assert cache.get("token") is None
    assert "token" not in cache.entries
    assert cache.get("other") == "parsed" and len(cache) == 1  # a live entry is read, and stays


def test_a_cached_none_is_told_apart_from_a_miss_in_entries(clock: Clock) -> None:
    """Bug caught: "this sku has no sale" (None, cached) read as a miss, so every made-up sku goes to the database."""
    cache: TTLCache[str, None] = TTLCache(10, clock)
    cache.set("made-up", None, 1.0)
    assert cache.entries.get("made-up") == (1001.0, None)


def test_discard_and_clear_remove_entries(clock: Clock) -> None:
    """Bug caught: forget() leaving the local copy, so a sale edited by the operator shows its old stock for a TTL."""
    cache: TTLCache[str, int] = TTLCache(10, clock)
    cache.set("a", 1, 5.0)
    cache.set("b", 2, 5.0)
    cache.discard("a")
    cache.discard("never-set")  # no KeyError
    assert (cache.entries.get("a"), cache.get("b")) == (None, 2)
    cache.clear()
    assert len(cache) == 0


def test_the_default_clock_is_time_monotonic_as_it_is_when_the_cache_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug caught: the default bound at import, so a test (or a wall-clock step) patching the clock is not obeyed,
    or a wall clock used by default, so an NTP step backwards keeps every entry alive for as long as the step."""
    assert TTLCache(1).clock is time.monotonic
    fake = Clock()
    monkeypatch.setattr(time, "monotonic", fake)
    assert TTLCache(1).clock is fake


# --- the bound and what it drops -----------------------------------------------------------------------------------------


def test_it_never_holds_more_than_maxsize(clock: Clock) -> None:
    """Bug caught: no bound, or an off-by-one in it: a flood of made-up skus or forged tokens grows memory forever."""
    cache: TTLCache[int, int] = TTLCache(100, clock)
    for key in range(10_000):
        cache.set(key, key, 60.0)
        assert len(cache) <= 100
    assert cache.get(9_999) == 9_999  # the newest is always kept


def test_when_full_lapsed_entries_go_first(clock: Clock) -> None:
    """Bug caught: dropping live entries (the real sales' stock levels) while dead ones take up the room."""
    cache: TTLCache[str, int] = TTLCache(8, clock)
    for n in range(4):
        cache.set(f"live-{n}", n, 60.0)
    for n in range(4):
        cache.set(f"dead-{n}", n, 1.0)
    clock.now += 2
    cache.set("new", 9, 60.0)
    assert [cache.get(f"live-{n}") for n in range(4)] == [0, 1, 2, 3]
    assert all(cache.entries.get(f"dead-{n}") is None for n in range(4))
    assert cache.get("new") == 9 and len(cache) == 5


def test_when_full_of_live_entries_the_first_inserted_quarter_goes(clock: Clock) -> None:
    """Bug caught: clearing everything at once (the old caches), so a flood of made-up skus also throws out every real
    sale's entry at each wrap; or dropping the newest, so the entry just set is gone at once."""
    cache: TTLCache[str, int] = TTLCache(8, clock)
    for n in range(8):
        cache.set(f"k{n}", n, 60.0)
    cache.set("k0", 100, 60.0)  # set again: keeps its place, first in line
    cache.set("new", 8, 60.0)
    assert [cache.entries.get(f"k{n}") is None for n in range(8)] == [True, True, False, False, False, False, False, False]
    assert cache.get("new") == 8 and len(cache) == 7


def test_a_full_cache_makes_room_once_a_quarter_not_on_every_set(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug caught: a sweep of every entry on each set once full: O(maxsize) a set, a CPU sink under a flood of new keys."""
    cache: TTLCache[int, int] = TTLCache(100, clock)
    sweeps = {"n": 0}
    sweep = TTLCache._make_room

    def counting(self: TTLCache[int, int]) -> None:
        sweeps["n"] += 1
        sweep(self)

    monkeypatch.setattr(TTLCache, "_make_room", counting)
    for key in range(1_100):
        cache.set(key, key, 60.0)
    assert sweeps["n"] == 40  # 1,000 sets past the first 100, a sweep every 25


def test_setting_a_key_already_there_never_evicts(clock: Clock) -> None:
    """Bug caught: a refresh of a held entry (the stock level every TTL) dropping a quarter of a full cache each time."""
    cache: TTLCache[int, int] = TTLCache(4, clock)
    for key in range(4):
        cache.set(key, key, 60.0)
    cache.set(2, 20, 60.0)
    cache.set_until(3, 30, 2000.0)
    assert [cache.get(key) for key in range(4)] == [0, 1, 20, 30]


def test_a_cache_of_one_holds_the_latest(clock: Clock) -> None:
    """Bug caught: room made for zero entries (a quarter of 1 rounds to 0), so a one-entry cache grows without bound."""
    cache: TTLCache[str, int] = TTLCache(1, clock)
    cache.set("a", 1, 60.0)
    cache.set("b", 2, 60.0)
    assert (cache.entries.get("a"), cache.get("b"), len(cache)) == (None, 2, 1)
    with pytest.raises(ValueError):
        TTLCache(0)
