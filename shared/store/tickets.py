"""Ticket arithmetic both stores share."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Set


def orphaned_tickets(issued: int, held: Set[int], free: Set[int]) -> set[int]:
    """Tickets 1..issued that neither a confirmed order holds nor the free list offers.

    They appear when a process dies between taking a ticket and writing its
    order (possible with MongoDB, where the two are separate atomic steps).
    """
    return set(range(1, issued + 1)) - set(held) - set(free)


Leaks = tuple[set[int], dict[str, int]]  # orphaned tickets, units counted per buyer beyond their confirmed orders


def excess_units(counted: Mapping[str, int], confirmed: Mapping[str, int]) -> dict[str, int]:
    """Units a buyer's count holds that no confirmed order backs (a claim whose order never landed)."""
    return {user: n - confirmed.get(user, 0) for user, n in counted.items() if n > confirmed.get(user, 0)}


def lasting_leaks(find: Callable[[], Leaks], grace_seconds: float) -> Leaks:
    """What ``find`` reports leaked both now and after ``grace_seconds``: an order still in flight is spared."""
    orphans, excess = find()
    if grace_seconds > 0 and (orphans or excess):
        time.sleep(grace_seconds)
        later_orphans, later_excess = find()
        orphans &= later_orphans
        excess = {user: min(n, later_excess[user]) for user, n in excess.items() if user in later_excess}
    return orphans, excess
