"""The rehearsal's short form (`python -m rehearsal.run --quick`): every scenario through the real proxies.

Each scenario fails on a press without an answer, an answer out of its classes
(a pod's dropped press shows as its queue-proxy's 502), or a broken invariant in
the database. No timing is asserted: the machine is shared.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rehearsal.scenarios import QUICK, SCENARIOS, Context
from rehearsal.topology import raise_fd_limit

pytestmark = [pytest.mark.integration, pytest.mark.rehearsal]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_holds_every_invariant(name: str, tmp_path: Path) -> None:
    raise_fd_limit()
    lines: list[str] = []
    outcome = SCENARIOS[name](Context(QUICK, tmp_path, lines.append))
    failed = [check for check, ok in outcome.checks.items() if not ok]
    assert outcome.checks, "the scenario judged nothing"
    assert not failed, "\n".join([*failed, *outcome.notes, *lines])
