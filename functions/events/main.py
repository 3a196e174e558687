"""events: consumes order.placed CloudEvents from the Knative Broker (a Trigger filters on the type)."""

import logging

import flask
import functions_framework
from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_http

from shared.context import context, function_router
from shared.events import ORDER_PLACED, event_data

log = logging.getLogger("flashsale.events")

# A CloudEvent function only answers POST; Knative's probes need GET /healthz and
# /readyz, and Prometheus GET /metrics. functions-framework loads this module inside
# its app context, so the routes go on its app beside the event endpoint.
health = function_router("events")  # problem pages, readiness (the database; Redis only reported), metrics
for path in ("/healthz", "/readyz", "/metrics"):
    flask.current_app.add_url_rule(path, path, lambda: health.dispatch(flask.request), methods=["GET"])

# What the broker adds to an event it gave up on (knative/eventing pkg/kncloudevents/attributes/knative_error.go).
DEAD_LETTER_ATTRIBUTES = ("knativeerrorcode", "knativeerrordest", "knativeerrordata")


def dead_letter() -> tuple[str, int]:
    """An event the broker gave up on after its retries: logged with why, for an operator; nothing is applied.

    Served by flashsale-dead-letters, a Service of its own (knative/dead-letters.yaml), so that
    the sink is up when the consumer is not.
    """
    try:
        attributes = from_http(dict(flask.request.headers), flask.request.get_data()).get_attributes()
    except GenericException:
        attributes = {}
    log.error(
        "dead letter",
        extra={"event_id": attributes.get("id"), "type": attributes.get("type")}
        | {name: attributes.get(name) for name in DEAD_LETTER_ATTRIBUTES},
    )
    return "", 200


# An explicit path, so functions-framework's catch-all (every other POST is an event to apply) does not take it.
flask.current_app.add_url_rule("/dead-letters", "dead-letters", dead_letter, methods=["POST"])


@functions_framework.cloud_event
def order_placed(event: CloudEvent) -> None:
    if event["type"] != ORDER_PLACED:
        log.info("ignored event", extra={"type": event["type"], "event_id": event["id"]})
        return
    try:
        result = context().sales_feed.order_placed(event["id"], event_data(event))
    except ValueError as exc:
        # A malformed event will not get better on redelivery: log it and acknowledge.
        log.warning("malformed order.placed: %s", exc, extra={"event_id": event["id"]})
        return
    log.info(
        "order.placed",
        extra={"event_id": event["id"], "sku": result.sku, "applied": result.applied, "available": result.available},
    )
