"""Ticket arithmetic both stores share."""

from __future__ import annotations

from collections.abc import Set


def orphaned_tickets(issued: int, held: Set[int], free: Set[int]) -> set[int]:
    """Tickets 1..issued that neither a confirmed order holds nor the free list offers.

    They appear when a process dies between taking a ticket and writing its
    order (possible with MongoDB, where the two are separate atomic steps).
    """
    return set(range(1, issued + 1)) - set(held) - set(free)
