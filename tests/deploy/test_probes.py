"""Probes a crowd cannot turn into restarts, and a termination grace that outlasts queue-proxy's drain.

The rule, on every Knative Service in knative/:

- each probe times out only after twice the slowest answer the benchmark measured for its
  function (events, not measured, takes order's): /healthz and /readyz are answered by the
  same worker as the crowd, behind the requests it holds;
- no probe waits longer than a request may take (spec.timeoutSeconds): a pod whose answers
  time out must not pass its probes;
- spec.timeoutSeconds, which Knative also makes the pod's terminationGracePeriodSeconds
  (serving ``pkg/reconciler/revision/resources/deploy.go``, ``BuildPodSpec``), is at least
  queue-proxy's 30 s drain (``pkg/queue/sharedmain/main.go``, ``drainSleepDuration``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ops.plan import PROBE_MARGIN, QUEUE_PROXY_DRAIN_SECONDS, REFERENCE_FIGURES
from tests.deploy.test_manifests import knative_services

pytestmark = pytest.mark.deploy

MEASURED_AS = {"auth": "auth", "stock": "stock", "order": "order", "events": "order", "dead-letters": "order"}


def slowest_answer_seconds(function: str) -> float:
    figures = json.loads(REFERENCE_FIGURES.read_text())
    return float(figures[MEASURED_AS[function]]["max_ms"]) / 1000


def services() -> dict[str, dict[str, Any]]:
    return {name.removeprefix("flashsale-"): service for name, service in knative_services().items()}


def probe_problems(function: str, spec: dict[str, Any], slowest: float) -> list[str]:
    problems = []
    (container,) = spec["containers"]
    timeout = spec["timeoutSeconds"]
    for probe in ("readinessProbe", "livenessProbe"):
        waits = container[probe]["timeoutSeconds"]
        if waits < PROBE_MARGIN * slowest:
            problems.append(f"{function} {probe} times out after {waits} s, under {PROBE_MARGIN} x the slowest answer ({slowest:.2f} s)")
        if waits > timeout:
            problems.append(f"{function} {probe} waits {waits} s, longer than a request may take ({timeout} s)")
    if timeout < QUEUE_PROXY_DRAIN_SECONDS:
        problems.append(f"{function} timeoutSeconds {timeout} (the pod's termination grace) is under queue-proxy's drain")
    if "terminationGracePeriodSeconds" in spec:
        problems.append(f"{function}: Knative refuses terminationGracePeriodSeconds in a Service (pkg/apis/serving/fieldmask.go)")
    return problems


def test_probes_and_grace_follow_the_rule() -> None:
    found = {
        function: probe_problems(function, service["spec"]["template"]["spec"], slowest_answer_seconds(function))
        for function, service in services().items()
    }
    assert found == {function: [] for function in found}


def test_the_rule_catches_what_it_names() -> None:
    spec = {
        "timeoutSeconds": 10,
        "containers": [{"readinessProbe": {"timeoutSeconds": 11}, "livenessProbe": {"timeoutSeconds": 20}}],
    }
    problems = "\n".join(probe_problems("stock", spec, 10.8))
    assert "readinessProbe times out after 11 s" in problems
    assert "livenessProbe waits 20 s, longer than a request may take (10 s)" in problems
    assert "termination grace" in problems
