"""The autoscaler simulation: whether the pods are there when the crowd comes."""

from __future__ import annotations

import math

import pytest

from ops.autoscale_sim import Autoscaler, Crowd, Pods, render, simulate

# One pod answers 1,000 requests/s, each spending 0.1 s inside when it does not queue, so it
# holds 100 at that rate: target 100 at 70 % utilization means 70 in flight per pod.
POD = Pods(capacity_rps=1000, service_seconds=0.1, start_seconds=(5.0, 15.0))
ONE_SECOND_CROWD = Crowd(rate=10_000, seconds=1)  # 10,000 buyers in the same second: 10 pods keep up


def scaler(min_scale: int, max_scale: int = 40, max_scale_up_rate: float = Autoscaler.max_scale_up_rate) -> Autoscaler:
    return Autoscaler(target=100, utilization=0.7, min_scale=min_scale, max_scale=max_scale, max_scale_up_rate=max_scale_up_rate)


def desired_after(crowd: Crowd, pods: Pods, autoscaler: Autoscaler, seconds: float) -> int:
    return simulate(crowd, pods, autoscaler, seconds=seconds).timeline[-1].desired


def test_too_few_pods_before_the_crowd_is_a_shortfall() -> None:
    result = simulate(ONE_SECOND_CROWD, POD, scaler(min_scale=2), seconds=20)

    # 10 pods needed during second 0, 2 ready: 8 pods short for one second.
    assert result.shortfall_pod_seconds == pytest.approx(8.0)
    assert not result.pods_in_time
    assert result.first_short_second == 0
    # 2 pods answer 2,000/s: the last of the 10,000 waits about 4 s.
    assert result.max_wait_seconds == pytest.approx(4.0, abs=0.1)
    # The pods the autoscaler asks for arrive after the crowd has gone.
    first = result.timeline[0]
    assert (first.ready, first.needed) == (2, 10)
    assert all(row.ready == 2 for row in result.timeline[:5])


def test_enough_pods_before_the_crowd_leave_no_shortfall() -> None:
    result = simulate(ONE_SECOND_CROWD, POD, scaler(min_scale=15), seconds=20)

    assert result.shortfall_pod_seconds == 0
    assert result.pods_in_time
    assert result.max_wait_seconds == 0
    assert result.answered == pytest.approx(10_000)
    assert not result.panicked


def test_a_long_crowd_panics_and_the_pods_catch_up_after_they_start() -> None:
    result = simulate(Crowd(rate=10_000, seconds=60), POD, scaler(min_scale=2), seconds=40)

    assert result.panicked
    assert result.first_short_second == 0
    assert result.caught_up_second is not None
    # No pod can help before the fastest start (5 s) after the first decision that sees the crowd (2 s).
    assert all(row.ready == 2 for row in result.timeline if row.t < 6)
    assert result.caught_up_second > 7
    assert max(row.desired for row in result.timeline) <= 40
    assert result.timeline[-1].ready >= result.timeline[-1].needed


def test_every_request_is_answered_timed_out_or_still_waiting() -> None:
    crowd = Crowd(rate=5_000, seconds=30)
    impatient = Pods(capacity_rps=1000, service_seconds=0.1, timeout_seconds=5)
    result = simulate(crowd, impatient, scaler(min_scale=1, max_scale=3), seconds=40)

    arrived = sum(row.arrivals for row in result.timeline)
    assert arrived == pytest.approx(crowd.rate * crowd.seconds)
    assert result.answered + result.timed_out + result.timeline[-1].waiting == pytest.approx(arrived)
    # 3 pods at most for a crowd needing 5: the queue grows past the 5 s timeout.
    assert result.timed_out > 0


def test_scale_up_is_limited_by_max_scale_up_rate() -> None:
    result = simulate(Crowd(rate=10_000, seconds=30), POD, scaler(min_scale=2, max_scale_up_rate=2.0), seconds=6)

    # At most ceil(2.0 x 2 ready) = 4 pods while only 2 are ready.
    assert max(row.desired for row in result.timeline) == 4


def test_a_load_under_the_panic_threshold_waits_for_the_stable_window() -> None:
    # 10 ready pods (10,000/s), 9,100/s: 910 in flight, 13 pods at 70 each, under 200 % of 10.
    crowd = Crowd(rate=13 * 700, seconds=60)
    result = simulate(crowd, POD, scaler(min_scale=10), seconds=20)

    assert not result.panicked
    # The 60 s average, still mostly the quiet minute before the sale, asks for fewer than min-scale.
    assert {row.desired for row in result.timeline} == {10}
    assert result.pods_in_time


def test_stable_window_average_includes_the_quiet_minute_before_the_sale() -> None:
    crowd = Crowd(rate=7_000, seconds=60)  # exactly 10 pods at target x utilization
    result = simulate(crowd, Pods(capacity_rps=1000, service_seconds=0.1), scaler(min_scale=10), seconds=20)

    # In-flight 700 = 10 pods x 70: neither window asks for more.
    assert {row.desired for row in result.timeline} == {10}
    assert result.pods_in_time


def test_render_draws_ready_and_missing_pods() -> None:
    short = render(simulate(ONE_SECOND_CROWD, POD, scaler(min_scale=2), seconds=3))
    assert "SHORTFALL" in short
    assert "##........" in short
    enough = render(simulate(ONE_SECOND_CROWD, POD, scaler(min_scale=15), seconds=3))
    assert "pods in time" in enough
    assert "." * 3 not in enough.splitlines()[1]


def test_pods_start_spread_over_their_range() -> None:
    result = simulate(Crowd(rate=30_000, seconds=30), POD, scaler(min_scale=1, max_scale=45), seconds=25)

    became_ready = [row.t for prev, row in zip(result.timeline, result.timeline[1:], strict=False) if row.ready > prev.ready]
    # Asked for at the first tick that sees the crowd (2 s); ready from 5 to 15 s later.
    assert min(became_ready) >= 6
    assert max(became_ready) <= math.ceil(2 + 15)
    assert len(set(became_ready)) > 3


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        simulate(ONE_SECOND_CROWD, Pods(capacity_rps=0, service_seconds=0.1), scaler(min_scale=1), seconds=5)


# --- what the autoscaler is shown ---------------------------------------------------------


def test_concurrency_is_the_rate_times_the_time_a_request_really_spends_inside() -> None:
    # 7,000/s on 10 pods that answer 5,000/s each (no queue), target 10 at 70 %: once the
    # stable window is full of the load, Knative's rule wants ceil(7,000/s x service / 7) pods.
    steady = Crowd(rate=7_000, seconds=100)
    fast = Pods(capacity_rps=5_000, service_seconds=0.01)
    slow = Pods(capacity_rps=5_000, service_seconds=0.02)
    autoscaler = Autoscaler(target=10, utilization=0.7, min_scale=10, max_scale=100)
    assert desired_after(steady, fast, autoscaler, seconds=70) == 10  # 70 in flight / 7
    assert desired_after(steady, slow, autoscaler, seconds=70) == 20  # 140 in flight / 7


def test_rps_counts_arrivals_and_not_the_backlog() -> None:
    # 2 pods answering 1,000/s each under 7,000/s: a backlog grows in them. Scaling on rps,
    # the KPA wants what the arrivals need, ceil(7,000 / (1,000 x 0.7)) = 10 pods, however
    # long the queue; scaling on concurrency, the queue counts and it asks for more.
    crowd = Crowd(rate=7_000, seconds=60)
    by_rate = Autoscaler(target=1_000, utilization=0.7, min_scale=2, max_scale=100, metric="rps")
    by_concurrency = Autoscaler(target=100, utilization=0.7, min_scale=2, max_scale=100)
    assert max(row.desired for row in simulate(crowd, POD, by_rate, seconds=8).timeline) == 10
    assert max(row.desired for row in simulate(crowd, POD, by_concurrency, seconds=8).timeline) > 10


def test_an_rps_target_at_min_scale_leaves_the_planned_crowd_alone() -> None:
    # min-scale = ceil(rate / (target x utilization)): the KPA's own rule agrees, nothing panics.
    crowd = Crowd(rate=10_000, seconds=60)
    autoscaler = Autoscaler(target=1_000, utilization=0.7, min_scale=15, max_scale=30, metric="rps")
    result = simulate(crowd, POD, autoscaler, seconds=70)
    assert {row.desired for row in result.timeline} == {15}
    assert not result.panicked
    assert result.pods_in_time


def test_an_unknown_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="metric"):
        Autoscaler(target=1, utilization=0.7, min_scale=1, max_scale=1, metric="cpu")
