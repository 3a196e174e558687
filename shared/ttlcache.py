"""A bounded map whose entries lapse: the one in-process cache of ``shared/``.

Each entry carries the moment it lapses, on the clock its owner names when
making the cache: ``time.monotonic`` for lifetimes counted in seconds,
``time.time`` for the token cache, because a token's ``exp`` is stated on the
wall clock.

A lapsed entry is not removed when it lapses, only when ``get`` reads it
(then it is dropped, and ``get`` returns None) or a full cache makes room.
Until then ``entries`` keeps it, with its lapse time: the sale and sold-out
caches answer from a lapsed entry while one request refreshes it, and the
stock cache tells clients how long its answer stays fresh. Those owners read
``entries.get(key)``, never ``get``, and compare the lapse time with their own
call of the same clock: one dict lookup and one float comparison, as in the
caches this replaced (a bound method stored on the cache, or a call of
``cache.clock``, cost more per hit, measured). The token caches read through
``get``: what a stranger's header left behind goes the first time it is read
after its lifetime, not at the next sweep.

Bounded, because keys come from clients (a made-up sku is cached as "no such
sale", a forged token costs a verification): a ``set`` that finds the cache
full drops every lapsed entry, then, if that freed less than a quarter of the
room, the entries inserted first (dict order; setting a key again keeps its
place) until a quarter is free. A quarter, not one entry: the sweep reads every
entry, so it runs at most once every ``maxsize // 4`` sets, and a flood of new
keys costs O(1) a set, amortised. A quarter, not all (what each cache did
before): the entries of real sales outlive a flood of made-up ones, bar the
oldest quarter.

No lock. Under threads a sweep works on a copy of the entries and removes with
``pop(key, None)``, so it never fails; two sets racing past a full check may
leave one entry more than ``maxsize`` until the next sweep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    __slots__ = ("maxsize", "clock", "entries")

    def __init__(self, maxsize: int, clock: Callable[[], float] | None = None) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        # Looked up now, not when this module is imported: a test that patches time.monotonic first is obeyed.
        self.clock: Callable[[], float] = clock or time.monotonic
        # key -> (lapses_at, value), lapsed or not. Read it freely; write it
        # only through set, set_until, discard and clear, which keep the bound.
        self.entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        """The value, if set and not lapsed; a lapsed entry is dropped. A value that may be None is read from ``entries``."""
        entries = self.entries
        entry = entries.get(key)
        if entry is None:
            return None
        if entry[0] > self.clock():
            return entry[1]
        if entries.get(key) is entry:  # not one another thread set meanwhile
            entries.pop(key, None)
        return None

    def set(self, key: K, value: V, seconds: float) -> None:
        """Keep ``value`` for ``seconds`` from now."""
        entries = self.entries
        if len(entries) >= self.maxsize and key not in entries:
            self._make_room()
        entries[key] = (self.clock() + seconds, value)

    def set_until(self, key: K, value: V, lapses_at: float) -> None:
        """Keep ``value`` until ``lapses_at`` on this cache's clock: a deadline kept as given, never re-derived."""
        entries = self.entries
        if len(entries) >= self.maxsize and key not in entries:
            self._make_room()
        # float: an int deadline (a token's exp) against the clock's float costs ~40 ns more on every hit (measured).
        entries[key] = (float(lapses_at), value)

    def discard(self, key: K) -> None:
        self.entries.pop(key, None)

    def clear(self) -> None:
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)

    def _make_room(self) -> None:
        """Drop the lapsed entries, then the first inserted, until a quarter of the room (at least one place) is free."""
        now = self.clock()
        entries = self.entries
        keep = self.maxsize - max(1, self.maxsize // 4)
        live: list[K] = []
        for key, (lapses_at, _) in list(entries.items()):  # a copy: other threads may set meanwhile
            if lapses_at > now:
                live.append(key)
            else:
                entries.pop(key, None)
        for key in live[: max(0, len(live) - keep)]:  # a negative stop would keep only the last few
            entries.pop(key, None)
