"""events is sized for the order.placed burst, and its dead letters go to a Service that is not the subscriber."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import yaml
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from ops.plan import QUEUE_PROXY_QUEUE_PER_SLOT, REFERENCE_FIGURES, Scenario, load_figures, make_plan
from shared.context import Context
from shared.events import ORDER_PLACED
from tests.clients import function_client
from tests.deploy.test_manifests import KNATIVE, all_objects, knative_services

pytestmark = pytest.mark.deploy

SKU = "dead-letter-sku"


def eventing(kind: str) -> dict[str, Any]:
    (obj,) = [obj for _, obj in all_objects() if obj["kind"] == kind and obj["apiVersion"].startswith("eventing.knative.dev/")]
    return obj


@pytest.mark.parametrize("kind", ["Broker", "Trigger"])
def test_the_dead_letter_sink_is_not_the_subscriber(kind: str) -> None:
    subscriber = eventing("Trigger")["spec"]["subscriber"]["ref"]["name"]
    sink = eventing(kind)["spec"]["delivery"]["deadLetterSink"]
    assert sink["ref"]["name"] != subscriber, "when the consumer is down, its dead letters would be lost with it"
    service = knative_services()[sink["ref"]["name"]]
    assert service["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    assert sink["uri"] == "/dead-letters"


def test_the_events_pods_hold_the_planned_burst() -> None:
    # queue-proxy holds containerConcurrency in flight and 10 x that queued, then answers 503
    # (serving pkg/queue/sharedmain/main.go, buildBreaker): the busiest second's events must fit.
    plan = make_plan(Scenario(buyers=10_000, stock=1000), load_figures(REFERENCE_FIGURES, {}))
    template = knative_services()["flashsale-events"]["spec"]["template"]
    concurrency = template["spec"]["containerConcurrency"]
    min_scale = int(template["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"])
    assert plan.events.burst == 1000
    assert min_scale * concurrency * (1 + QUEUE_PROXY_QUEUE_PER_SLOT) >= plan.events.burst


def test_the_kustomization_deploys_the_sink() -> None:
    resources = yaml.safe_load((KNATIVE / "kustomization.yaml").read_text())["resources"]
    assert "dead-letters.yaml" in resources


def test_a_dead_letter_is_logged_with_the_brokers_error_and_not_applied(ctx: Context, caplog: pytest.LogCaptureFixture) -> None:
    ctx.store.create_sale(SKU, 5, 2, None)
    event = CloudEvent(
        {
            "type": ORDER_PLACED,
            "source": "/flashsale/order",
            "id": "evt-dead",
            "subject": SKU,
            # What the broker adds (knative/eventing pkg/kncloudevents/attributes/knative_error.go).
            "knativeerrorcode": "503",
            "knativeerrordest": "http://flashsale-events.flashsale.svc.cluster.local",
            "knativeerrordata": "no healthy upstream",
        },
        {"order_id": "o-1", "sku": SKU, "quantity": 1, "ticket": 1, "tickets": [1], "total": 5},
    )
    headers, body = to_binary(event)
    with caplog.at_level(logging.INFO, logger="flashsale.events"):
        answer = function_client("events").post("/dead-letters", headers=dict(headers), data=body)
    assert answer.status_code == 200
    (record,) = [r for r in caplog.records if r.getMessage() == "dead letter"]
    assert record.levelno == logging.ERROR
    assert (record.event_id, record.knativeerrorcode, record.knativeerrordest, record.knativeerrordata) == (  # type: ignore[attr-defined]
        "evt-dead",
        "503",
        "http://flashsale-events.flashsale.svc.cluster.local",
        "no healthy upstream",
    )
    assert ctx.sales_feed.counts(SKU) == {}, "a dead letter is logged, not applied"
