"""Was a crowd sold fairly? One set of checks for the demo, `make loadtest` and `make bench`.

Judged from the database, beside what the crowd was told: the database is the
truth, so a count that only the load tool saw proves nothing.
"""

from __future__ import annotations

from shared.models import SaleStats


def crowd_checks(stats: SaleStats, *, buyers: int, confirmed: int, other_answers: int) -> dict[str, bool]:
    """Each check's name and whether it held.

    ``buyers`` pressed Buy once each (one unit apiece); ``confirmed`` of them
    were told 201, and ``other_answers`` got something other than 201 or 409.
    """
    expected = min(stats.total, buyers)
    return {
        f"sold exactly {expected:,} (database)": stats.sold == expected,
        f"tickets 1..{expected:,}, each once": stats.sold == expected and not (stats.duplicate_tickets or stats.tickets_out_of_range),
        "201s match the database": confirmed == stats.sold,
        "no buyer over the limit": stats.max_units_per_buyer <= stats.per_user_limit,
        "every answer was 201 or 409": other_answers == 0,
        "database invariants hold": stats.invariants_hold,
    }
