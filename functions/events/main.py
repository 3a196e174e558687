"""events: consumes order.placed CloudEvents from the Knative Broker (a Trigger filters on the type)."""

import logging

import flask
import functions_framework
from cloudevents.http import CloudEvent

from shared.context import context, function_router
from shared.events import ORDER_PLACED, event_data

log = logging.getLogger("flashsale.events")

# A CloudEvent function only answers POST; Knative's probes need GET /healthz and
# /readyz, and Prometheus GET /metrics. functions-framework loads this module inside
# its app context, so the routes go on its app beside the event endpoint.
health = function_router("events")  # problem pages, readiness (the database; Redis only reported), metrics
for path in ("/healthz", "/readyz", "/metrics"):
    flask.current_app.add_url_rule(path, path, lambda: health.dispatch(flask.request), methods=["GET"])


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
