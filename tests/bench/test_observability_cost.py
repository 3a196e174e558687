"""The in-process price of metrics and access lines (bench/observability_cost.py) runs end to end on real services."""

from __future__ import annotations

import pytest

from bench import observability_cost

pytestmark = pytest.mark.integration


def test_every_variant_measures_a_press_on_a_sold_out_sale() -> None:
    # Bug caught: a variant whose child failed (or answered something other than 409) reported as a figure.
    found = observability_cost.measure(rounds=1, presses=200)
    assert set(found) == set(observability_cost.VARIANTS)
    assert all(len(values) == 1 and values[0] > 0 for values in found.values())


def test_served_every_variant_measures_cpu_per_answer_under_gunicorn() -> None:
    # Bug caught: a variant whose server answered nothing (or whose workers' CPU was not read) reported as a figure.
    found = observability_cost.measure_served(rounds=1, seconds=2, vus=20)
    assert set(found) == set(observability_cost.VARIANTS)
    assert all(len(values) == 1 and values[0] > 0 for values in found.values())
