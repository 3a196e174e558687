"""Every fault scenario, short: small crowds on their own local stack each (``-m faults``).

``python -m tests.faults`` runs the same scenarios at full size and prints the table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import slow_auth
from tests.faults.__main__ import render
from tests.faults.scenarios import SCENARIOS, SHORT, Scenario, run_scenario

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_nothing_lost_nothing_oversold_nothing_left_unsold(scenario: Scenario, tmp_path: Path) -> None:
    report = run_scenario(scenario, SHORT, tmp_path)
    assert report.ok, render([report])
    verdict = report.verdict
    assert verdict.sold == verdict.total == SHORT.stock
    assert verdict.acknowledged == verdict.found == SHORT.stock
    if scenario.inject is not None:
        assert report.notes, f"{scenario.name}: the fault never struck, so the sale proves nothing"
    if scenario.name == "db-writes-fail":
        # the failing writes met admitted buyers: they were told 503, and retried
        assert verdict.other_answers["503 unavailable"] > 0, render([report])


def test_slow_clients_do_not_hold_up_logins(tmp_path: Path) -> None:
    # 16 slow connections: every worker surely gets one, so the outcome does not hang on how accepts fall
    report = slow_auth.measure(tmp_path, logins=3, slow_clients=16)
    assert report.ok, report
