"""order's first revision has K_SINK: the SinkBinding exists, its sink resolved, before flashsale-order is created.

eventing's webhook injects K_SINK into a subject when it is admitted, resolving the
binding's sink then (knative/eventing ``pkg/apis/sources/v1/sinkbinding_lifecycle.go``,
``SinkBinding.Do``). A binding applied after the Service can only patch it: a second
revision, which Knative serves only once min-scale pods of it are ready.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_manifests import KNATIVE, fake_command, kustomize, needs_kubectl, run_script

pytestmark = pytest.mark.deploy

SINK_WAIT = ["kubectl", "wait", "--for=condition=SinkProvided", "sinkbinding/flashsale-order"]


def dry_run(mode: str) -> list[list[str]]:
    result = run_script("deploy.sh", {"DRY_RUN": "1", "MODE": mode, "REGISTRY": "registry.example.com/shop", "TAG": "t1"})
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines() if line and not line.startswith("#")]


def index_of(commands: list[list[str]], prefix: list[str]) -> int:
    hits = [i for i, command in enumerate(commands) if command[: len(prefix)] == prefix]
    assert len(hits) == 1, f"expected one {' '.join(prefix)!r} in {commands}"
    return hits[0]


def test_kn_mode_resolves_the_sink_before_it_creates_order() -> None:
    commands = dry_run("kn")
    eventing = index_of(commands, ["kubectl", "apply", "-f", "knative/eventing.yaml"])
    wait = index_of(commands, SINK_WAIT)
    order = index_of(commands, ["kn", "service", "apply", "flashsale-order"])
    assert eventing < wait < order


def test_kustomize_mode_resolves_the_sink_before_it_applies_the_services() -> None:
    commands = dry_run("kustomize")
    eventing = index_of(commands, ["kubectl", "apply", "-f", "knative/eventing.yaml"])
    wait = index_of(commands, SINK_WAIT)
    services = index_of(commands, ["kubectl", "apply", "-k"])
    assert eventing < wait < services


def kinds_in_order(objects: list[dict[str, Any]]) -> list[str]:
    return [f"{obj['kind']}/{obj['metadata']['name']}" for obj in objects]


@needs_kubectl
def test_the_rendered_manifests_put_the_binding_before_order() -> None:
    # `kubectl apply -k knative/` without the script: kustomize's default order puts Service
    # (any group) before kinds it does not know, such as SinkBinding.
    order = kinds_in_order(kustomize(KNATIVE))
    assert order.index("SinkBinding/flashsale-order") < order.index("Service/flashsale-order")
    assert order.index("Broker/default") < order.index("SinkBinding/flashsale-order")


@needs_kubectl
def test_the_deploy_overlay_keeps_that_order(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    # `kubectl apply -k DIR` renders DIR instead; every other kubectl call succeeds.
    fake_command(tmp_path, "kubectl", f'[ "$1 $2" = "apply -k" ] && exec {kubectl} kustomize "$3"\nexit 0\n')
    result = run_script(
        "deploy.sh",
        {"MODE": "kustomize", "REGISTRY": "registry.example.com/shop", "KNATIVE_VERSION_CHECK": "0", "KOURIER_CHECK": "0"},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    order = kinds_in_order([obj for obj in yaml.safe_load_all(result.stdout) if obj])
    assert order.index("SinkBinding/flashsale-order") < order.index("Service/flashsale-order")


def test_a_sink_that_never_resolves_stops_the_deploy_before_any_service(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    fake_command(tmp_path, "kubectl", f'echo "kubectl $*" >> {log}\n[ "$1" = wait ] && exit 1\nexit 0\n')
    fake_command(tmp_path, "kn", f'echo "kn $*" >> {log}\n')
    result = run_script(
        "deploy.sh",
        {"DRY_RUN": "0", "REGISTRY": "registry.example.com/shop", "KNATIVE_VERSION_CHECK": "0", "KOURIER_CHECK": "0"},
        tmp_path,
    )
    assert result.returncode != 0
    assert "flashsale-order has no sink" in result.stderr
    assert "kn service apply" not in log.read_text()
