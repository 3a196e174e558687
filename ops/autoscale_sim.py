"""A discrete-event simulation of Knative's autoscaler (the KPA) under a flash-sale crowd.

It answers one question: when the crowd arrives, are the pods there? Events are
the autoscaler's decisions (every ``tick`` seconds), pods becoming ready (some
seconds after the autoscaler asks for them) and one-second metric samples; between
events the traffic is a fluid in ``step``-second slices: requests arrive at the
crowd's rate, ready pods answer them at their measured capacity, first come first
served, and a request that has waited ``timeout_seconds`` is dropped (queue-proxy's
timeout).

What the autoscaler is shown follows what Knative measures. ``rps``: the requests
that *arrived* in each second (knative.dev/networking's ``RequestStats``: "the
number of requests that arrived in the current reporting period"), so a backlog
does not show. ``concurrency``: the requests in flight, by Little's law the rate
answered x the time one spends inside a pod that keeps up (``service_seconds``, the
measured latency, not a goal), plus every request still waiting; a waiting request
is counted wherever it waits (in a pod's gevent worker, or in the activator when it
is in the path), as queue-proxy and the activator both report what they hold.

The decider follows Knative Serving's ``pkg/autoscaler/scaling/autoscaler.go``:
the metric averaged over the stable window (60 s) and the panic window (10 % of
it, 6 s); desired pods = ceil(average / (target x utilization)), kept within
[ready / max-scale-down-rate, ready x max-scale-up-rate]; panic starts when the
panic-window pods reach ``panic_threshold`` x ready pods, only scales up while it
lasts, and ends a stable window after the last reading over the threshold;
scale-down waits ``scale_down_delay``; min-scale and max-scale bound the result.

What it leaves out: the pods' own latency curve (a pod answers ``capacity_rps``
whatever it holds), processor sharing inside a gevent worker (FIFO here, which
flatters the tail), image pulls beyond ``start_seconds`` and node autoscaling.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

GOLDEN = 0.6180339887498949  # spreads pod start times over their range without randomness
METRICS = ("concurrency", "rps")


@dataclass(frozen=True)
class Crowd:
    """``rate`` requests per second for ``seconds``, from ``start`` (the sale opens at 0)."""

    rate: float
    seconds: float
    start: float = 0.0

    def rate_at(self, t: float) -> float:
        return self.rate if self.start <= t < self.start + self.seconds else 0.0


@dataclass(frozen=True)
class Autoscaler:
    """The revision's KPA settings (annotations and Knative's config-autoscaler defaults)."""

    target: float  # in-flight requests per pod (concurrency) or requests per second per pod (rps)
    utilization: float  # 0-1, target-utilization-percentage / 100
    min_scale: int
    max_scale: int
    metric: str = "concurrency"  # autoscaling.knative.dev/metric: concurrency or rps
    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold: float = 2.0  # panic-threshold-percentage 200
    tick: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_down_delay: float = 300.0

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")

    @property
    def panic_window(self) -> float:
        return self.stable_window * self.panic_window_percentage / 100

    @property
    def target_per_pod(self) -> float:
        return self.target * self.utilization


@dataclass(frozen=True)
class Pods:
    """What one pod does: answers ``capacity_rps``; a request spends ``service_seconds`` in it when it keeps up.

    ``service_seconds`` is a measured latency (the time a request that does not
    queue spends inside), never a latency goal: the autoscaler sees what is.
    """

    capacity_rps: float
    service_seconds: float
    start_seconds: tuple[float, float] = (5.0, 15.0)  # asked for -> ready (schedule, pull, start, /readyz)
    ready_at_start: int | None = None  # None: min-scale, what a revision idles at before the sale
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class Second:
    """Second ``t`` of the sale (from t to t+1), as it stood at its end."""

    t: int
    arrivals: float  # requests that arrived during this second
    needed: int  # fewest ready pods that answer this second's arrivals as they come
    ready: int
    starting: int
    desired: int  # the autoscaler's last decision
    waiting: float  # requests not yet answered
    wait_seconds: float  # longest wait among requests answered this second
    timed_out: float  # dropped so far
    panic: bool


@dataclass(frozen=True)
class SimResult:
    timeline: tuple[Second, ...]
    shortfall_pod_seconds: float  # sum over time of (needed - ready) where positive
    max_wait_seconds: float
    answered: float
    timed_out: float
    panicked: bool
    first_short_second: int | None
    caught_up_second: int | None  # first second, after a shortfall, with enough ready pods and nobody waiting

    @property
    def pods_in_time(self) -> bool:
        return self.shortfall_pod_seconds == 0 and self.timed_out == 0


@dataclass
class _State:
    ready: int
    starting: list[float] = field(default_factory=list)  # ready-at times of pods being started
    started_total: int = 0
    queue: deque[list[float]] = field(default_factory=deque)  # [arrived_at, count], oldest first
    samples: deque[tuple[float, float]] = field(default_factory=deque)  # (second, what the metric read that second)
    concurrency_area: float = 0.0  # integral of concurrency over the current second
    panic_since: float | None = None
    max_panic_pods: int = 0
    decisions: deque[tuple[float, int]] = field(default_factory=deque)  # for the scale-down delay
    desired: int = 0
    answered: float = 0.0
    timed_out: float = 0.0
    shortfall: float = 0.0
    max_wait: float = 0.0
    second_arrivals: float = 0.0
    second_wait: float = 0.0
    second_needed: int = 0

    @property
    def waiting(self) -> float:
        return sum(count for _, count in self.queue)


# Event kinds, in the order they run when they fall on the same instant: a pod ready at
# t serves from t; the sample closing second s-1 is taken before the tick at s reads it.
_READY, _SAMPLE, _TICK, _STEP = range(4)


def simulate(crowd: Crowd, pods: Pods, scaler: Autoscaler, *, seconds: float, step: float = 0.05) -> SimResult:
    """Run the sale from t=0 for ``seconds`` and return what happened each second."""
    if pods.capacity_rps <= 0 or pods.service_seconds < 0 or scaler.target_per_pod <= 0 or step <= 0:
        raise ValueError("capacity, target x utilization and step must be positive, service time not negative")
    initial = pods.ready_at_start if pods.ready_at_start is not None else scaler.min_scale
    state = _State(ready=initial, desired=initial)
    # The minute before the sale: pods idle, so the stable window starts full of zeros.
    for s in range(-int(scaler.stable_window) + 1, 1):
        state.samples.append((float(s), 0.0))

    events: list[tuple[float, int, int]] = []
    steps = round(seconds / step)
    for i in range(steps):
        heapq.heappush(events, (round(i * step, 9), _STEP, 0))
    for s in range(1, math.ceil(seconds) + 1):
        heapq.heappush(events, (float(s), _SAMPLE, s))
    ticks = math.floor(seconds / scaler.tick)
    for k in range(ticks + 1):
        heapq.heappush(events, (k * scaler.tick, _TICK, 0))

    timeline: list[Second] = []
    first_short: int | None = None
    caught_up: int | None = None
    panicked = False
    while events:
        t, kind, payload = heapq.heappop(events)
        if t > seconds:
            break
        if kind == _READY:
            if state.starting and state.starting[0] <= t:
                state.starting.pop(0)
                state.ready += 1
        elif kind == _STEP:
            _flow(state, crowd, pods, t, step)
        elif kind == _SAMPLE:
            second = payload
            reading = state.second_arrivals if scaler.metric == "rps" else state.concurrency_area
            state.samples.append((float(second), reading))
            state.concurrency_area = 0.0
            while state.samples and state.samples[0][0] <= second - scaler.stable_window:
                state.samples.popleft()
            row = Second(
                t=second - 1,
                arrivals=state.second_arrivals,
                needed=state.second_needed,
                ready=state.ready,
                starting=len(state.starting),
                desired=state.desired,
                waiting=state.waiting,
                wait_seconds=state.second_wait,
                timed_out=state.timed_out,
                panic=state.panic_since is not None,
            )
            timeline.append(row)
            if row.needed > row.ready and first_short is None:
                first_short = row.t
            if first_short is not None and caught_up is None and row.ready >= row.needed and row.waiting < 1:
                caught_up = row.t
            state.second_arrivals = state.second_wait = 0.0
            state.second_needed = 0
        else:
            for ready_at in _decide(state, scaler, pods, t):
                heapq.heappush(events, (ready_at, _READY, 0))
            panicked = panicked or state.panic_since is not None

    return SimResult(
        timeline=tuple(timeline),
        shortfall_pod_seconds=round(state.shortfall, 6),
        max_wait_seconds=state.max_wait,
        answered=state.answered,
        timed_out=state.timed_out,
        panicked=panicked,
        first_short_second=first_short,
        caught_up_second=caught_up,
    )


def _flow(state: _State, crowd: Crowd, pods: Pods, t: float, step: float) -> None:
    """One slice of traffic: arrivals join the queue, ready pods answer the oldest first."""
    rate = crowd.rate_at(t)
    arrivals = rate * step
    if arrivals > 0:
        state.queue.append([t, arrivals])
    state.second_arrivals += arrivals
    needed = math.ceil(rate / pods.capacity_rps - 1e-9) if rate > 0 else 0
    state.second_needed = max(state.second_needed, needed)
    state.shortfall += max(0, needed - state.ready) * step

    while state.queue and state.queue[0][0] < t - pods.timeout_seconds:
        state.timed_out += state.queue.popleft()[1]

    capacity = state.ready * pods.capacity_rps * step
    served = 0.0
    while state.queue and capacity > 1e-12:
        arrived_at, count = state.queue[0]
        take = min(count, capacity)
        capacity -= take
        served += take
        wait = max(0.0, t - arrived_at)
        state.max_wait = max(state.max_wait, wait)
        state.second_wait = max(state.second_wait, wait)
        if take >= count - 1e-12:
            state.queue.popleft()
        else:
            state.queue[0][1] = count - take
    state.answered += served
    # Little's law inside the pods at the latency they really have, plus everyone still waiting.
    concurrency = served / step * pods.service_seconds + state.waiting
    state.concurrency_area += concurrency * step


def _decide(state: _State, scaler: Autoscaler, pods: Pods, now: float) -> list[float]:
    """One autoscaler tick; returns the ready-at times of the pods it starts."""
    stable = [value for second, value in state.samples if second > now - scaler.stable_window]
    panic = [value for second, value in state.samples if second > now - scaler.panic_window]
    if not stable or not panic:
        return []
    observed_stable = sum(stable) / len(stable)
    observed_panic = sum(panic) / len(panic)
    ready = max(1.0, float(state.ready))
    max_up = math.ceil(scaler.max_scale_up_rate * ready)
    max_down = math.floor(ready / scaler.max_scale_down_rate)
    stable_pods = math.ceil(observed_stable / scaler.target_per_pod - 1e-9)
    panic_pods = math.ceil(observed_panic / scaler.target_per_pod - 1e-9)
    desired_stable = min(max(stable_pods, max_down), max_up)
    desired_panic = min(max(panic_pods, max_down), max_up)

    over_threshold = panic_pods / ready >= scaler.panic_threshold
    if over_threshold:
        state.panic_since = now
    elif state.panic_since is not None and state.panic_since + scaler.stable_window < now:
        state.panic_since = None
        state.max_panic_pods = 0

    desired = desired_stable
    if state.panic_since is not None:
        state.max_panic_pods = max(state.max_panic_pods, desired, desired_panic)
        desired = state.max_panic_pods

    state.decisions.append((now, desired))
    while state.decisions and state.decisions[0][0] <= now - scaler.scale_down_delay:
        state.decisions.popleft()
    desired = max(d for _, d in state.decisions)
    desired = min(max(desired, scaler.min_scale), scaler.max_scale)
    state.desired = desired

    current = state.ready + len(state.starting)
    started: list[float] = []
    if desired > current:
        low, high = pods.start_seconds
        for _ in range(desired - current):
            spread = (state.started_total * GOLDEN) % 1.0
            state.started_total += 1
            started.append(now + low + (high - low) * spread)
        state.starting = sorted(state.starting + started)
    elif desired < current:
        surplus = current - desired
        cancelled = min(surplus, len(state.starting))
        if cancelled:
            state.starting = state.starting[: len(state.starting) - cancelled]
        state.ready -= surplus - cancelled
    return started


def render(result: SimResult, *, width: int = 40) -> str:
    """The timeline as an ASCII table: '#' a ready pod, '.' a pod the crowd needed that was not ready."""
    peak = max([1] + [max(row.needed, row.ready) for row in result.timeline])
    scale = min(1.0, width / peak)
    lines = [
        "   t  arrivals/s  needed  ready  starting  desired  waiting  wait s  timed out  mode    ready vs needed",
    ]
    for row in result.timeline:
        ready_bar = round(min(row.ready, max(row.needed, row.ready)) * scale)
        short_bar = round(max(0, row.needed - row.ready) * scale)
        bar = "#" * ready_bar + "." * short_bar
        lines.append(
            f"{row.t:4d}  {row.arrivals:10,.0f}  {row.needed:6d}  {row.ready:5d}  {row.starting:8d}  {row.desired:7d}"
            f"  {row.waiting:7,.0f}  {row.wait_seconds:6.1f}  {row.timed_out:9,.0f}  {'panic' if row.panic else 'stable':6s}  {bar}"
        )
    verdict = "pods in time" if result.pods_in_time else "SHORTFALL"
    lines.append(
        f"{verdict}: shortfall {result.shortfall_pod_seconds:,.1f} pod-seconds, longest wait {result.max_wait_seconds:.1f} s, "
        f"answered {result.answered:,.0f}, timed out {result.timed_out:,.0f}"
        + (f", short from second {result.first_short_second}" if result.first_short_second is not None else "")
        + (f", caught up at second {result.caught_up_second}" if result.caught_up_second is not None else "")
    )
    return "\n".join(lines)
