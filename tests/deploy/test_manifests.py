"""The deployment files agree with each other and with the code they deploy.

No cluster is needed: core objects are checked against the Kubernetes schemas that
kubernetes-validate ships, Knative objects against the rules in
:func:`knative_service_problems`, and the scripts are run with DRY_RUN=1.
"""

from __future__ import annotations

import base64
import copy
import math
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.context import Context
from shared.settings import Settings
from tests.clients import function_client

pytestmark = pytest.mark.deploy

REPO = Path(__file__).resolve().parents[2]
KNATIVE = REPO / "knative"
SCRIPTS = REPO / "scripts"

# Knative Serving and Eventing set these themselves; a manifest never does.
KNATIVE_INJECTED_ENV = frozenset({"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION", "K_SINK", "K_CE_OVERRIDES"})

# Per-revision annotations Knative Serving understands (serving's autoscaling and
# serving annotation keys). A key under a knative.dev domain that is not here is a typo
# Knative would silently ignore, e.g. autoscaling.knative.dev/minscale.
KNATIVE_ANNOTATIONS = frozenset(
    {
        "autoscaling.knative.dev/class",
        "autoscaling.knative.dev/metric",
        "autoscaling.knative.dev/target",
        "autoscaling.knative.dev/target-utilization-percentage",
        "autoscaling.knative.dev/target-burst-capacity",
        "autoscaling.knative.dev/min-scale",
        "autoscaling.knative.dev/max-scale",
        "autoscaling.knative.dev/initial-scale",
        "autoscaling.knative.dev/activation-scale",
        "autoscaling.knative.dev/scale-down-delay",
        "autoscaling.knative.dev/scale-to-zero-pod-retention-period",
        "autoscaling.knative.dev/window",
        "autoscaling.knative.dev/panic-window-percentage",
        "autoscaling.knative.dev/panic-threshold-percentage",
        "serving.knative.dev/rollout-duration",
        "serving.knative.dev/progress-deadline",
    }
)
REQUIRED_ANNOTATIONS = (
    "autoscaling.knative.dev/class",
    "autoscaling.knative.dev/metric",
    "autoscaling.knative.dev/target",
    "autoscaling.knative.dev/target-utilization-percentage",
    "autoscaling.knative.dev/min-scale",
    "autoscaling.knative.dev/initial-scale",
    "autoscaling.knative.dev/max-scale",
    "autoscaling.knative.dev/scale-down-delay",
    "autoscaling.knative.dev/target-burst-capacity",
)
# Objects kubernetes-validate has schemas for; everything else here is a Knative CRD.
CORE_KINDS = frozenset({"ConfigMap", "Secret", "Deployment", "Service", "StatefulSet", "Job", "NetworkPolicy"})

SIGNING_KEY_SECRET = "flashsale-signing-key"
PUBLIC_KEY_CONFIGMAP = "flashsale-public-key"
DATA_SECRET = "flashsale-data"
CONFIGMAP = "flashsale-config"
# A Service that runs another function's image: the dead-letter sink serves the events image's
# POST /dead-letters (functions/events/main.py). Every other Service is named after its function.
RUNS_FUNCTION = {"dead-letters": "events"}
KEBAB_CASE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ms|s|m|h))+$")
PASSWORD_IN_URI = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:([^@\s/]+)@")


# --- loading ---------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in KNATIVE.rglob("*.yaml") if p.name != "kustomization.yaml")


def kustomization_files() -> list[Path]:
    return sorted(KNATIVE.rglob("kustomization.yaml"))


def load_documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def all_objects() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in manifest_files():
        for doc in load_documents(path):
            yield path, doc


def is_knative_service(obj: dict[str, Any]) -> bool:
    return obj.get("kind") == "Service" and obj.get("apiVersion") == "serving.knative.dev/v1"


def knative_services() -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for _, obj in all_objects() if is_knative_service(obj)}


def function_of(service_name: str) -> str:
    """The function whose image and code a Service runs."""
    name = service_name.removeprefix("flashsale-")
    return RUNS_FUNCTION.get(name, name)


def dockerfile_functions() -> set[str]:
    """The FUNCTION values the Dockerfile's build-arg check accepts."""
    text = (REPO / "Dockerfile").read_text()
    match = re.search(r'case "\$FUNCTION" in\s*\\?\s*\n\s*([a-z|]+)\)', text)
    assert match, 'Dockerfile: expected a `case "$FUNCTION" in a|b|c)` check of the build arg'
    return set(match.group(1).split("|"))


def function_folders() -> set[str]:
    functions = REPO / "functions"
    if not functions.is_dir():
        return set()
    return {p.name for p in functions.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}


def env_names() -> frozenset[str]:
    return Settings.env_names() | KNATIVE_INJECTED_ENV


def cpu_cores(quantity: str) -> float:
    quantity = str(quantity)
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


# --- the Knative Service rules -----------------------------------------------


def knative_service_problems(service: dict[str, Any], allowed_env: frozenset[str]) -> list[str]:
    """Everything wrong with one flashsale Knative Service, as readable sentences."""
    problems: list[str] = []
    name = service.get("metadata", {}).get("name", "")
    if not (KEBAB_CASE.match(name) and name.startswith("flashsale-")):
        problems.append(f"name {name!r} must be kebab-case and start with flashsale-")
    function = function_of(name)

    for key in service.get("metadata", {}).get("annotations", {}):
        if key.startswith("autoscaling.knative.dev/"):
            problems.append(f"{key} is on the Service's metadata; Knative reads it from spec.template.metadata")

    labels = service.get("metadata", {}).get("labels", {})
    template = service.get("spec", {}).get("template", {})
    annotations = {k: str(v) for k, v in template.get("metadata", {}).get("annotations", {}).items()}
    for key in annotations:
        domain = key.split("/", 1)[0]
        if domain.endswith("knative.dev") and key not in KNATIVE_ANNOTATIONS:
            problems.append(f"unknown Knative annotation {key}")
    missing = [key for key in REQUIRED_ANNOTATIONS if key not in annotations]
    problems += [f"missing annotation {key}" for key in missing]
    if missing:
        return problems

    def number(key: str, parse: Callable[[str], float]) -> float | None:
        try:
            return parse(annotations[key])
        except ValueError:
            problems.append(f"{key}={annotations[key]!r} is not a number")
            return None

    if annotations["autoscaling.knative.dev/class"] != "kpa.autoscaling.knative.dev":
        problems.append("autoscaling class must be kpa.autoscaling.knative.dev")
    metric = annotations["autoscaling.knative.dev/metric"]
    if metric not in ("concurrency", "rps"):
        # What the KPA scales on (serving's pkg/apis/autoscaling/annotation_validation.go, validateMetric).
        problems.append("autoscaling metric must be concurrency or rps")
    target = number("autoscaling.knative.dev/target", float)
    if target is not None and target <= 0:
        problems.append("target must be > 0")
    utilization = number("autoscaling.knative.dev/target-utilization-percentage", float)
    if utilization is not None and not 1 <= utilization <= 100:
        problems.append("target-utilization-percentage must be within 1-100")
    min_scale = number("autoscaling.knative.dev/min-scale", int)
    initial_scale = number("autoscaling.knative.dev/initial-scale", int)
    max_scale = number("autoscaling.knative.dev/max-scale", int)
    if None not in (min_scale, initial_scale, max_scale):
        assert min_scale is not None and initial_scale is not None and max_scale is not None
        if not 0 <= min_scale <= initial_scale <= max_scale or max_scale < 1:
            problems.append(
                f"scale bounds must satisfy 0 <= min-scale ({min_scale}) <= initial-scale ({initial_scale})"
                f" <= max-scale ({max_scale}), max-scale >= 1"
            )
    burst = number("autoscaling.knative.dev/target-burst-capacity", float)
    if burst is not None and burst < 0 and burst != -1:
        problems.append("target-burst-capacity must be -1 (activator always in the path) or >= 0")
    if labels.get("networking.knative.dev/visibility") != "cluster-local" and function == "events":
        problems.append(
            "flashsale-events must be cluster-local (networking.knative.dev/visibility): anyone could POST a forged order.placed"
        )
    delay = annotations["autoscaling.knative.dev/scale-down-delay"]
    if not GO_DURATION.match(delay):
        problems.append(f"scale-down-delay {delay!r} is not a duration such as 30s or 5m")

    spec = template.get("spec", {})
    concurrency = spec.get("containerConcurrency", 0)
    if not isinstance(concurrency, int) or concurrency < 0:
        problems.append("containerConcurrency must be an integer >= 0")
        concurrency = 0
    if concurrency and metric == "concurrency" and target is not None and target > concurrency:
        problems.append(f"target ({target:g}) is above containerConcurrency ({concurrency}), which caps it")
    if burst == -1 and not concurrency:
        # pkg/activator/net/throttler.go: with containerConcurrency 0 the activator's breaker is
        # unlimited and it forwards each request at once; in the path it buffers nothing.
        problems.append("target-burst-capacity -1 without containerConcurrency: the activator would only add a hop")
    if function == "auth" and not concurrency:
        problems.append("auth needs containerConcurrency: a pod hashes at most one password per CPU")

    containers = spec.get("containers", [])
    if len(containers) != 1:
        problems.append("exactly one container expected")
        return problems
    (container,) = containers
    if container.get("image") != f"flashsale-{function}":
        problems.append(f"image must be flashsale-{function} (kustomization.yaml adds registry and tag)")

    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        actual = container.get(probe, {}).get("httpGet", {}).get("path")
        if actual != path:
            problems.append(f"{probe} must GET {path}, not {actual!r}")
        # Unset, Knative probes readiness every 50 ms giving each try 100 ms (pkg/queue/readiness/probe.go)
        # and the kubelet gives liveness 1 s: a busy worker would fail both.
        for field in ("periodSeconds", "timeoutSeconds", "failureThreshold"):
            value = container.get(probe, {}).get(field)
            if not isinstance(value, int) or value < 1:
                problems.append(f"{probe}.{field} must be set, at least 1 (docs/capacity.md sizes it)")
    if len(container.get("ports", [])) != 1:
        problems.append("exactly one container port: a Knative Service serves one (serving's k8s_validation.go)")

    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(kind, {}):
                problems.append(f"resources.{kind}.{resource} is missing")

    security = container.get("securityContext", {})
    expected_security = {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
    }
    for key, value in expected_security.items():
        if security.get(key) is not value:
            problems.append(f"securityContext.{key} must be {value}")
    if security.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append("securityContext.capabilities.drop must be [ALL]")
    if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("securityContext.seccompProfile.type must be RuntimeDefault")

    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"]: volumes.get(m["name"], {}) for m in container.get("volumeMounts", [])}
    if "emptyDir" not in mounts.get("/tmp", {}):
        problems.append("/tmp must be an emptyDir: the root filesystem is read-only")

    if {"configMapRef": {"name": CONFIGMAP}} not in container.get("envFrom", []):
        problems.append(f"envFrom must include the ConfigMap {CONFIGMAP}")
    env = {e["name"]: e for e in container.get("env", [])}
    for var in env:
        if var not in allowed_env:
            problems.append(f"env {var} is not a setting (Settings.env_names()) nor set by Knative")
        if var in KNATIVE_INJECTED_ENV:
            problems.append(f"env {var} is Knative's to set")
    for var in ("DATABASE_URL", "REDIS_URL"):
        ref = env.get(var, {}).get("valueFrom", {}).get("secretKeyRef", {})
        if ref != {"name": DATA_SECRET, "key": var}:
            problems.append(f"{var} must come from secretKeyRef {DATA_SECRET}/{var}")

    def mount_path_of(kind: str, source: str) -> str | None:
        for path, volume in mounts.items():
            ref = volume.get(kind, {})
            if ref.get("name") == source or ref.get("secretName") == source:
                return str(path)
        return None

    public_key_dir = mount_path_of("configMap", PUBLIC_KEY_CONFIGMAP) or mount_path_of("secret", PUBLIC_KEY_CONFIGMAP)
    if public_key_dir is None:
        problems.append(f"{PUBLIC_KEY_CONFIGMAP} must be mounted")
    signing_key_dir = mount_path_of("secret", SIGNING_KEY_SECRET)
    uses_signing_key = signing_key_dir is not None or "JWT_PRIVATE_KEY_FILE" in env or SIGNING_KEY_SECRET in str(spec)
    if function == "auth":
        private_key = env.get("JWT_PRIVATE_KEY_FILE", {}).get("value", "")
        if signing_key_dir is None or not private_key.startswith(signing_key_dir + "/"):
            problems.append("auth must mount the signing key and point JWT_PRIVATE_KEY_FILE into it")
    elif uses_signing_key:
        problems.append("only auth may reference the signing key")

    # The CPU count Python sees in a container is the node's, so the manifest says it: one
    # gevent worker per CPU of the limit, or for auth one hashing thread per CPU (bcrypt
    # releases the GIL; docs/capacity.md), and a pod never offered more than it serves at once.
    cpu_limit = resources.get("limits", {}).get("cpu")
    workers = env.get("WORKERS", {}).get("value")
    threads = env.get("THREADS", {}).get("value")
    if cpu_limit is not None:
        cpus = max(1, math.floor(cpu_cores(cpu_limit)))
        if function == "auth":
            if workers is None or threads is None or int(workers) * int(threads) != cpus:
                problems.append(f"WORKERS x THREADS must be {cpus}, one hashing thread per CPU of the limit ({cpu_limit})")
        elif workers is None or int(workers) != cpus:
            problems.append(f"WORKERS must be {cpus}, one per CPU of the limit ({cpu_limit})")
    if concurrency and workers is not None and threads is not None and concurrency != int(workers) * int(threads):
        problems.append(f"containerConcurrency ({concurrency}) must equal WORKERS x THREADS ({workers} x {threads})")
    return problems


# --- every file -------------------------------------------------------------


@pytest.mark.parametrize("path", manifest_files() + kustomization_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_parses(path: Path) -> None:
    assert load_documents(path), f"{path} holds no YAML document"


def core_objects() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.relative_to(REPO)}:{obj['kind']}/{obj['metadata']['name']}", obj)
        for path, obj in all_objects()
        if obj.get("kind") in CORE_KINDS and "knative.dev" not in obj.get("apiVersion", "")
    ]


CORE_OBJECTS = core_objects()


def test_core_objects_are_found() -> None:
    kinds = {obj["kind"] for _, obj in CORE_OBJECTS}
    assert kinds >= {"ConfigMap", "Secret", "Deployment", "Service", "StatefulSet", "Job"}


@pytest.mark.parametrize(("where", "obj"), CORE_OBJECTS, ids=[where for where, _ in CORE_OBJECTS])
def test_core_objects_match_the_kubernetes_schema(where: str, obj: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    # strict: an unknown field (a typo) fails too; the schemas ship with the package, no cluster needed.
    kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def test_every_knative_service_follows_the_rules() -> None:
    services = knative_services()
    assert services
    problems = {name: knative_service_problems(service, env_names()) for name, service in services.items()}
    assert problems == {name: [] for name in services}


# --- the checker can fail ---------------------------------------------------


def broken(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    service = copy.deepcopy(knative_services()["flashsale-auth"])
    mutate(service)
    return service


def annotations_of(service: dict[str, Any]) -> dict[str, Any]:
    annotations: dict[str, Any] = service["spec"]["template"]["metadata"]["annotations"]
    return annotations


def container_of(service: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = service["spec"]["template"]["spec"]["containers"][0]
    return container


BREAKAGES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "typo in an annotation key": (
        lambda s: annotations_of(s).update({"autoscaling.knative.dev/minscale": "1"}),
        "unknown Knative annotation autoscaling.knative.dev/minscale",
    ),
    "min-scale above max-scale": (
        lambda s: annotations_of(s).update({"autoscaling.knative.dev/min-scale": "50"}),
        "scale bounds",
    ),
    "utilization over 100": (
        lambda s: annotations_of(s).update({"autoscaling.knative.dev/target-utilization-percentage": "150"}),
        "target-utilization-percentage must be within 1-100",
    ),
    "zero target": (
        lambda s: annotations_of(s).update({"autoscaling.knative.dev/target": "0"}),
        "target must be > 0",
    ),
    "hpa class": (
        lambda s: annotations_of(s).update({"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev"}),
        "autoscaling class must be kpa",
    ),
    "cpu metric under the kpa": (
        lambda s: annotations_of(s).update({"autoscaling.knative.dev/metric": "cpu"}),
        "metric must be concurrency or rps",
    ),
    "activator in the path without a concurrency limit": (
        lambda s: s["spec"]["template"]["spec"].pop("containerConcurrency"),
        "target-burst-capacity -1 without containerConcurrency",
    ),
    "probe left to Knative's defaults": (
        lambda s: container_of(s)["readinessProbe"].pop("periodSeconds"),
        "readinessProbe.periodSeconds must be set",
    ),
    "liveness timing out at the kubelet's 1 s default": (
        lambda s: container_of(s)["livenessProbe"].pop("timeoutSeconds"),
        "livenessProbe.timeoutSeconds must be set",
    ),
    "a second port": (
        lambda s: container_of(s)["ports"].append({"containerPort": 9100}),
        "exactly one container port",
    ),
    "events open to the world": (
        lambda s: s["metadata"].update({"name": "flashsale-events", "labels": {}}),
        "flashsale-events must be cluster-local",
    ),
    "annotation on the wrong metadata": (
        lambda s: s["metadata"].setdefault("annotations", {}).update({"autoscaling.knative.dev/min-scale": "1"}),
        "is on the Service's metadata",
    ),
    "missing annotation": (
        lambda s: annotations_of(s).pop("autoscaling.knative.dev/max-scale"),
        "missing annotation autoscaling.knative.dev/max-scale",
    ),
    "wrong readiness path": (
        lambda s: container_of(s)["readinessProbe"]["httpGet"].update({"path": "/health"}),
        "readinessProbe must GET /readyz",
    ),
    "unknown env var": (
        lambda s: container_of(s)["env"].append({"name": "DATABASE_PASSWORD", "value": "x"}),
        "env DATABASE_PASSWORD is not a setting",
    ),
    "database URL as a literal": (
        lambda s: container_of(s)["env"].__setitem__(
            next(i for i, e in enumerate(container_of(s)["env"]) if e["name"] == "DATABASE_URL"),
            {"name": "DATABASE_URL", "value": "mongodb://db:27017"},
        ),
        "DATABASE_URL must come from secretKeyRef",
    ),
    "writable root filesystem": (
        lambda s: container_of(s)["securityContext"].update({"readOnlyRootFilesystem": False}),
        "readOnlyRootFilesystem must be True",
    ),
    "target above the hard limit": (
        lambda s: annotations_of(s).update({"autoscaling.knative.dev/target": "8"}),
        "above containerConcurrency",
    ),
    "more hashing threads than CPUs": (
        lambda s: next(e for e in container_of(s)["env"] if e["name"] == "WORKERS").update({"value": "8"}),
        "WORKERS x THREADS must be 2",
    ),
    "signing key in another function": (
        lambda s: s["metadata"].update({"name": "flashsale-stock"}),
        "only auth may reference the signing key",
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES, ids=list(BREAKAGES))
def test_checker_reports_a_broken_service(breakage: str) -> None:
    mutate, expected = BREAKAGES[breakage]
    problems = knative_service_problems(broken(mutate), env_names())
    assert any(expected in problem for problem in problems), problems


# --- manifests against the code ---------------------------------------------


def test_every_probe_path_is_answered_by_its_function(ctx: Context) -> None:
    probed = 0
    for name, service in knative_services().items():
        function = function_of(name)
        (container,) = service["spec"]["template"]["spec"]["containers"]
        for probe in ("readinessProbe", "livenessProbe"):
            path = container[probe]["httpGet"]["path"]
            answer = function_client(function).get(path)
            assert answer.status_code == 200 and answer.get_json()["status"] in {"ok", "degraded"}, (name, probe, path, answer.json)
            probed += 1
    assert probed == 2 * len(knative_services())


def test_configmap_keys_are_settings() -> None:
    (config,) = [obj for _, obj in all_objects() if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == CONFIGMAP]
    unknown = set(config["data"]) - Settings.env_names()
    assert not unknown, f"{CONFIGMAP} sets what Settings does not read: {sorted(unknown)}"
    assert not set(config["data"]) & {"DATABASE_URL", "REDIS_URL"}, "connection URLs belong in a Secret"


def test_each_function_folder_has_exactly_one_service() -> None:
    services = [name.removeprefix("flashsale-") for name in knative_services() if name.removeprefix("flashsale-") not in RUNS_FUNCTION]
    assert sorted(services) == sorted(set(services))
    assert set(services) == function_folders(), "functions/ and knative/ must name the same functions"


def test_service_images_are_functions_the_dockerfile_builds() -> None:
    supported = dockerfile_functions()
    for name, service in knative_services().items():
        image = container_of(service)["image"]
        assert image.removeprefix("flashsale-") in supported, f"{name}: Dockerfile cannot build {image}"
    with (KNATIVE / "kustomization.yaml").open() as f:
        images = {entry["name"] for entry in yaml.safe_load(f)["images"]}
    assert images == {f"flashsale-{fn}" for fn in supported}


def test_dockerfile_runs_as_the_manifests_expect() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim@sha256:[0-9a-f]{64}$", text, re.M), "base image pinned by digest"
    assert re.search(r"^USER 10001(:10001)?$", text, re.M), "numeric non-root user, so runAsNonRoot can check it"
    assert 'CMD ["python", "-m", "shared.serving"]' in text
    for setting in ("FUNCTION=${FUNCTION}", "PORT=8080", "HOME=/tmp", "TMPDIR=/tmp", "PYTHONDONTWRITEBYTECODE=1"):
        assert setting in text, f"Dockerfile ENV lacks {setting}"


def test_kustomization_leaves_the_secret_templates_out() -> None:
    for path in kustomization_files():
        with path.open() as f:
            resources = yaml.safe_load(f).get("resources", [])
        assert "secrets.example.yaml" not in resources, f"{path}: Secrets are created by hand"


def test_no_secret_value_in_a_manifest() -> None:
    for path in manifest_files() + kustomization_files():
        text = path.read_text()
        assert "-----BEGIN" not in text, f"{path}: a PEM block"
        for password in PASSWORD_IN_URI.findall(text):
            assert path.name == "secrets.example.yaml" and password == "PASSWORD", f"{path}: a password in a URI"


def test_only_auth_references_the_signing_key() -> None:
    referencing = {name for name, service in knative_services().items() if SIGNING_KEY_SECRET in yaml.safe_dump(service)}
    assert referencing == {"flashsale-auth"}


def test_order_gets_its_sink_from_the_binding() -> None:
    objects = [obj for _, obj in all_objects()]
    (binding,) = [obj for obj in objects if obj["kind"] == "SinkBinding"]
    assert binding["spec"]["subject"]["name"] == "flashsale-order"
    assert binding["spec"]["sink"]["ref"]["kind"] == "Broker"
    (trigger,) = [obj for obj in objects if obj["kind"] == "Trigger"]
    assert trigger["spec"]["filter"]["attributes"] == {"type": "dev.flashsale.order.placed"}
    assert trigger["spec"]["subscriber"]["ref"]["name"] == "flashsale-events"
    assert trigger["spec"]["broker"] == binding["spec"]["sink"]["ref"]["name"]


# --- rendering and scripts --------------------------------------------------

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


def kustomize(folder: Path) -> list[dict[str, Any]]:
    rendered = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=False, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


@needs_kubectl
def test_kustomize_renders_the_functions() -> None:
    kinds = sorted(f"{obj['kind']}/{obj['metadata']['name']}" for obj in kustomize(KNATIVE))
    assert kinds == sorted(
        [f"Service/{name}" for name in knative_services()]
        + ["ConfigMap/flashsale-config", "Broker/default", "SinkBinding/flashsale-order", "Trigger/flashsale-order-placed"]
    )


@needs_kubectl
def test_kustomize_renders_valid_infra() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    objects = kustomize(KNATIVE / "infra")
    for obj in objects:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    (secret,) = [obj for obj in objects if obj["kind"] == "Secret"]
    assert secret["metadata"]["name"] == DATA_SECRET
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert set(data) == {"DATABASE_URL", "REDIS_URL"}
    assert "replicaSet=rs0" in data["DATABASE_URL"]


def run_script(script: str, env: dict[str, str], path_prefix: Path | None = None) -> subprocess.CompletedProcess[str]:
    # PLAN_CHECK=0 unless a test says otherwise: the plan check reads this machine's bench/results/latest.json,
    # so after a local `make bench` it stops every deploy; tests/deploy/test_plan_check.py tests it on a clean copy.
    full_env = {**os.environ, "PYTHON": sys.executable, "PLAN_CHECK": "0", **env}
    if path_prefix is not None:
        full_env["PATH"] = f"{path_prefix}{os.pathsep}{full_env['PATH']}"
    return subprocess.run(["bash", str(SCRIPTS / script)], capture_output=True, text=True, env=full_env, check=False, timeout=120)


# kn flag for each annotation that has one; the rest go through --annotation-revision.
KN_SCALE_FLAGS = {
    "autoscaling.knative.dev/min-scale": "--scale-min",
    "autoscaling.knative.dev/max-scale": "--scale-max",
    "autoscaling.knative.dev/initial-scale": "--scale-init",
    "autoscaling.knative.dev/target": "--scale-target",
    "autoscaling.knative.dev/target-utilization-percentage": "--scale-utilization",
    "autoscaling.knative.dev/activation-scale": "--scale-activation",
    "autoscaling.knative.dev/window": "--scale-window",
}


KN_SWITCHES = frozenset({"--cluster-local"})  # kn flags that take no value


def flag_values(args: list[str]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    rest = list(args)
    while rest:
        flag = rest.pop(0)
        assert flag.startswith("--"), f"expected a flag, got {flag!r} in {args}"
        if flag in KN_SWITCHES:
            values.setdefault(flag, [])
        else:
            values.setdefault(flag, []).append(rest.pop(0))
    return values


def test_deploy_dry_run_matches_the_manifests() -> None:
    result = run_script("deploy.sh", {"DRY_RUN": "1", "REGISTRY": "registry.example.com/shop", "TAG": "t1"})
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines() if line and not line.startswith("#")]
    applies = {cmd[3]: flag_values(cmd[4:]) for cmd in commands if cmd[:3] == ["kn", "service", "apply"]}
    services = knative_services()
    assert sorted(applies) == sorted(services), "one kn service apply per function"
    assert commands[1] == ["kubectl", "apply", "-f", "knative/eventing.yaml"]  # before the Services (test_rollout_order.py)

    for name, flags in applies.items():
        template = services[name]["spec"]["template"]
        annotations = {k: str(v) for k, v in template["metadata"]["annotations"].items()}
        expected_revision_annotations = sorted(f"{k}={v}" for k, v in annotations.items() if k not in KN_SCALE_FLAGS)
        assert sorted(flags.pop("--annotation-revision")) == expected_revision_annotations, name
        for key, flag in KN_SCALE_FLAGS.items():
            assert flags.pop(flag, None) == ([annotations[key]] if key in annotations else None), f"{name} {flag}"
        concurrency = template["spec"].get("containerConcurrency")
        assert flags.pop("--concurrency-limit", None) == ([str(concurrency)] if concurrency else None), name
        assert flags["--image"] == [f"registry.example.com/shop/flashsale-{function_of(name)}:t1"]
        assert flags["--env-from"] == [f"config-map:{CONFIGMAP}"]
        assert sorted(flags["--env-value-from"]) == [
            f"DATABASE_URL=secret:{DATA_SECRET}:DATABASE_URL",
            f"REDIS_URL=secret:{DATA_SECRET}:REDIS_URL",
        ]
        assert flags["--probe-readiness"] == ["http::8080:/readyz"]
        assert flags["--probe-liveness"] == ["http::8080:/healthz"]
        container = template["spec"]["containers"][0]
        for probe, flag in (("readinessProbe", "--probe-readiness-opts"), ("livenessProbe", "--probe-liveness-opts")):
            (options,) = flags[flag]
            timing = {k: int(v) for k, v in (option.split("=") for option in options.split(","))}
            assert timing == {
                "PeriodSeconds": container[probe]["periodSeconds"],
                "TimeoutSeconds": container[probe]["timeoutSeconds"],
                "FailureThreshold": container[probe]["failureThreshold"],
            }, f"{name} {flag}"
        cluster_local = services[name]["metadata"].get("labels", {}).get("networking.knative.dev/visibility") == "cluster-local"
        assert flags.get("--cluster-local") == ([] if cluster_local else None), name
        signing_mounts = [m for m in flags["--mount"] if SIGNING_KEY_SECRET in m]
        assert bool(signing_mounts) == (name == "flashsale-auth"), name
        assert "/tmp=emptyDir:tmp" in flags["--mount"]


def test_deploy_needs_a_registry() -> None:
    result = run_script("deploy.sh", {"DRY_RUN": "0", "REGISTRY": ""})
    assert result.returncode != 0
    assert "set REGISTRY" in result.stderr


def fake_command(folder: Path, name: str, body: str) -> None:
    script = folder / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@needs_kubectl
def test_deploy_kustomize_mode_points_the_images_at_the_registry(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    # Stands in for the cluster: `kubectl apply -k DIR` renders DIR instead; the eventing apply,
    # the wait for its sink and the version checks answer nothing.
    fake_command(tmp_path, "kubectl", f'[ "$1 $2" = "apply -k" ] && exec {kubectl} kustomize "$3"\nexit 0\n')
    result = run_script("deploy.sh", {"MODE": "kustomize", "REGISTRY": "registry.example.com/shop", "TAG": "t1"}, tmp_path)
    assert result.returncode == 0, result.stderr
    images = {
        container["image"]
        for obj in yaml.safe_load_all(result.stdout)
        if obj and is_knative_service(obj)
        for container in obj["spec"]["template"]["spec"]["containers"]
    }
    assert images == {f"registry.example.com/shop/flashsale-{function_of(name)}:t1" for name in knative_services()}


def test_images_dry_run_builds_every_function() -> None:
    result = run_script("images.sh", {"DRY_RUN": "1", "REGISTRY": "registry.example.com/shop", "TAG": "t1"})
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines()]
    built = {cmd[cmd.index("--build-arg") + 1].removeprefix("FUNCTION=") for cmd in commands if cmd[1] == "build"}
    pushed = {cmd[2] for cmd in commands if cmd[1] == "push"}
    assert built == dockerfile_functions()
    assert pushed == {f"registry.example.com/shop/flashsale-{fn}:t1" for fn in built}


def test_images_says_so_when_no_docker_engine_answers(tmp_path: Path) -> None:
    fake_command(tmp_path, "docker", 'echo "Cannot connect to the Docker daemon" >&2\nexit 1\n')
    result = run_script("images.sh", {"DRY_RUN": "0", "REGISTRY": "registry.example.com/shop"}, tmp_path)
    assert result.returncode != 0
    assert "no Docker engine answers" in result.stderr
    assert "DRY_RUN=1" in result.stderr
