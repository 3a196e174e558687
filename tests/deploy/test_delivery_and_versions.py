"""Eventing delivery is explicit, and `make deploy` refuses a Knative older than the manifests need."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_manifests import all_objects, fake_command, knative_services, run_script

pytestmark = pytest.mark.deploy

ISO_SECONDS = re.compile(r"^PT(\d+(\.\d+)?)S$")


def eventing(kind: str) -> dict[str, Any]:
    (obj,) = [obj for _, obj in all_objects() if obj["kind"] == kind and obj["apiVersion"].startswith("eventing.knative.dev/")]
    return obj


@pytest.mark.parametrize("kind", ["Broker", "Trigger"])
def test_delivery_is_explicit_with_backoff_and_a_dead_letter_sink(kind: str) -> None:
    # Unset, the cluster's config-br-defaults decide (upstream: 10 retries, no dead-letter sink).
    delivery = eventing(kind)["spec"].get("delivery", {})
    assert isinstance(delivery.get("retry"), int) and delivery["retry"] >= 1
    assert delivery.get("backoffPolicy") in ("exponential", "linear")
    assert ISO_SECONDS.match(delivery.get("backoffDelay", "")), delivery.get("backoffDelay")
    sink = delivery.get("deadLetterSink", {}).get("ref", {})
    assert sink.get("kind") == "Service" and sink.get("apiVersion") == "serving.knative.dev/v1"
    assert sink.get("name") in knative_services(), "the dead-letter sink is one of our Services"


def test_broker_and_trigger_agree_on_delivery() -> None:
    assert eventing("Broker")["spec"]["delivery"] == eventing("Trigger")["spec"]["delivery"]


def test_dead_letters_go_to_a_service_only_the_cluster_reaches() -> None:
    sink = eventing("Trigger")["spec"]["delivery"]["deadLetterSink"]["ref"]["name"]
    labels = knative_services()[sink]["metadata"].get("labels", {})
    assert labels.get("networking.knative.dev/visibility") == "cluster-local"


def retry_span_seconds(delivery: dict[str, Any]) -> float:
    """How long the retries of one event last: eventing's pkg/kncloudevents/retries.go waits delay x 2^i
    (exponential) or delay x i (linear) before retry i, counting from 0 (go-retryablehttp's loop)."""
    match = ISO_SECONDS.match(delivery["backoffDelay"])
    assert match
    delay = float(match.group(1))
    waits = [delay * (2**i if delivery["backoffPolicy"] == "exponential" else i) for i in range(delivery["retry"])]
    return sum(waits)


def test_the_retries_outlast_the_events_consumer_restarting() -> None:
    # A redeploy or crash of flashsale-events must not dead-letter events: its pods are
    # unready for at most the readiness probe's failures, plus a start.
    delivery = eventing("Trigger")["spec"]["delivery"]
    events = knative_services()["flashsale-events"]["spec"]["template"]["spec"]["containers"][0]
    probe = events["readinessProbe"]
    unready = probe["failureThreshold"] * (probe["periodSeconds"] + probe["timeoutSeconds"])
    assert retry_span_seconds(delivery) > unready


# --- make deploy checks the Knative versions -------------------------------------------


def fake_cluster(folder: Path, serving: str, eventing_version: str) -> Path:
    """kubectl and kn that answer version questions and log every other call to folder/calls."""
    log = folder / "calls"
    fake_command(
        folder,
        "kubectl",
        f"""case "$*" in
  "get namespace knative-serving "*) [ -n "{serving}" ] && echo "{serving}" || exit 1 ;;
  "get namespace knative-eventing "*) [ -n "{eventing_version}" ] && echo "{eventing_version}" || exit 1 ;;
  get\\ knative*) exit 1 ;;
  *) echo "kubectl $*" >> {log} ;;
esac
""",
    )
    fake_command(folder, "kn", f'echo "kn $*" >> {log}\n')
    return log


@pytest.mark.parametrize(("serving", "eventing_version"), [("v1.12.3", "v1.16.0"), ("1.16.0", "1.12.0")])
def test_deploy_refuses_a_knative_older_than_needed(tmp_path: Path, serving: str, eventing_version: str) -> None:
    log = fake_cluster(tmp_path, serving, eventing_version)
    result = run_script("deploy.sh", {"DRY_RUN": "0", "REGISTRY": "registry.example.com/shop"}, tmp_path)
    assert result.returncode != 0
    assert "older than 1.13" in result.stderr
    assert not log.exists(), "nothing is applied to a cluster that is too old"


def test_deploy_goes_on_with_a_recent_enough_knative(tmp_path: Path) -> None:
    log = fake_cluster(tmp_path, "v1.13.0", "1.20.1")
    result = run_script("deploy.sh", {"DRY_RUN": "0", "REGISTRY": "registry.example.com/shop"}, tmp_path)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert sum(call.startswith("kn service apply") for call in calls) == len(knative_services())
    assert calls.index("kubectl apply -f knative/eventing.yaml") < min(i for i, c in enumerate(calls) if c.startswith("kn "))


def test_deploy_warns_and_goes_on_when_it_cannot_tell_the_version(tmp_path: Path) -> None:
    log = fake_cluster(tmp_path, "", "")
    result = run_script("deploy.sh", {"DRY_RUN": "0", "REGISTRY": "registry.example.com/shop"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "cannot tell which Knative Serving" in result.stderr
    assert log.read_text().count("kn service apply") == len(knative_services())


def test_the_version_check_can_be_skipped(tmp_path: Path) -> None:
    fake_cluster(tmp_path, "1.10.0", "1.10.0")
    result = run_script("deploy.sh", {"DRY_RUN": "0", "REGISTRY": "r.example.com", "KNATIVE_VERSION_CHECK": "0"}, tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_dry_run_says_what_it_checks() -> None:
    result = run_script("deploy.sh", {"DRY_RUN": "1", "REGISTRY": "registry.example.com/shop"})
    assert result.returncode == 0, result.stderr
    assert "Knative Serving >= 1.13 and Eventing >= 1.13" in result.stdout
