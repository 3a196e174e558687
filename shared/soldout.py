"""What a worker remembers of a sold-out sale, so that a loser hears it from memory.

Once the gate or the database has said "sold out", the worker keeps two facts
for ``seconds``: the sale is sold out, and who may hold some of it (the
*holders*: every buyer the database has an order of, and every buyer the gate
has admitted, whose order may still be on its way to the database). A press by
anyone else is refused with no I/O at all: they hold nothing to give back, so
there is no order to look up, and nothing is left to sell. A holder goes on to
the database, which answers their ``Idempotency-Key`` with their order.

When the memo lapses, the first request to notice re-checks (the gate, then
the holders again); the others keep the lapsed memo meanwhile instead of all
asking at once. Under a crowd the re-check itself queues (for a Redis
connection, for the CPU), so the lapsed memo holds until it is done, or for
RECHECK_SECONDS if the request re-checking it never finishes: a short bound
here once let every buyer through to the gate each second, which slowed the
re-check, which let them all through again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from shared.ttlcache import TTLCache

RECHECK_SECONDS = 10.0
MEMOS_HELD = 10_000  # skus are real sales only, but memory stays bounded regardless


@dataclass(frozen=True)
class SoldOutMemo:
    holders: frozenset[str]
    from_database: bool = False  # the database's buyers are among the holders, not only the gate's

    def refuses(self, user_id: str) -> bool:
        """Whether ``user_id`` can be told "sold out" from memory alone."""
        return user_id not in self.holders


class SoldOutMemos:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        # Lapsed memos stay: last() and the others' answers during a re-check read them.
        self._memos: TTLCache[str, SoldOutMemo] = TTLCache(MEMOS_HELD, clock=time.monotonic)
        self._rechecking: dict[str, float] = {}  # sku -> when the one re-check under way stops counting
        self._loading: set[str] = set()

    def peek(self, sku: str) -> SoldOutMemo | None:
        """The memo if it holds, or if it lapsed while another request re-checks it; never starts a re-check."""
        entry = self._memos.entries.get(sku)
        if entry is None:
            return None
        now = time.monotonic()
        if entry[0] > now or self._rechecking.get(sku, 0.0) > now:
            return entry[1]
        return None

    def get(self, sku: str) -> tuple[SoldOutMemo | None, bool]:
        """Like :meth:`peek`; when the memo lapsed and nobody re-checks it, the caller does: ``(None, True)``.

        The caller ends its re-check with :meth:`remember`, :meth:`forget` or :meth:`end_recheck`.
        """
        memo = self.peek(sku)
        if memo is not None or sku not in self._memos.entries:
            return memo, False
        self._rechecking[sku] = time.monotonic() + max(self.seconds, RECHECK_SECONDS)
        return None, True

    def last(self, sku: str) -> SoldOutMemo | None:
        """The memo last remembered for ``sku``, lapsed or not."""
        entry = self._memos.entries.get(sku)
        return None if entry is None else entry[1]

    def end_recheck(self, sku: str) -> None:
        self._rechecking.pop(sku, None)

    def begin_load(self, sku: str) -> bool:
        """Whether the caller should load the holders: no fresh memo, and no other request loading it."""
        entry = self._memos.entries.get(sku)
        if (entry is not None and entry[0] > time.monotonic() and sku not in self._rechecking) or sku in self._loading:
            return False
        self._loading.add(sku)
        return True

    def remember(self, sku: str, holders: frozenset[str], *, from_database: bool = False) -> None:
        self._memos.set(sku, SoldOutMemo(holders, from_database), self.seconds)
        self._rechecking.pop(sku, None)
        self._loading.discard(sku)

    def end_load(self, sku: str) -> None:
        self._loading.discard(sku)

    def forget(self, sku: str) -> None:
        """Units came back (the gate admitted someone): no memory of a sell-out."""
        self._memos.discard(sku)
        self._rechecking.pop(sku, None)
