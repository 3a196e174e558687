"""The autoscaler under the crowd: the simulated KPA running one function with a plan's annotations."""

from __future__ import annotations

from ops.autoscale_sim import Autoscaler, Crowd, Pods, SimResult, simulate
from ops.plan.model import Plan


def simulate_function(
    plan: Plan,
    function: str,
    *,
    min_scale: int | None = None,
    start_seconds: tuple[float, float] = (5.0, 15.0),
    seconds: float | None = None,
    crowd_factor: float = 1.0,
) -> SimResult:
    """The KPA under this plan's crowd (times ``crowd_factor``) for one function, with the plan's annotations.

    The simulated autoscaler reads the metric the plan chose, and the pods hold a
    request for the time one really spends inside (``seconds_inside``), so the
    concurrency it sees is the one Knative would measure.
    """
    fn = plan.functions[function]
    notes = fn.annotations
    low = notes.min_scale if min_scale is None else min_scale
    window = plan.scenario.login_window_seconds if function == "auth" else plan.scenario.window_seconds
    if function == "stock":
        window = max(window, 60.0)  # refreshers keep coming for the minutes around the opening
    scaler = Autoscaler(
        target=notes.target,
        utilization=notes.target_utilization_percentage / 100,
        min_scale=low,
        max_scale=max(low, notes.max_scale),
        metric=notes.metric,
        panic_threshold=(notes.panic_threshold_percentage or 200) / 100,
    )
    pods = Pods(
        capacity_rps=fn.per_pod_per_s,
        service_seconds=fn.seconds_inside,
        start_seconds=start_seconds,
        timeout_seconds=fn.timeout_seconds,
    )
    duration = seconds if seconds is not None else min(window, 60.0) + 20.0
    return simulate(Crowd(rate=fn.demand_per_s * crowd_factor, seconds=window), pods, scaler, seconds=duration)
