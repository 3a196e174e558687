"""stock-check: how many units are left, from cache, within one cache lifetime of the truth."""

import flask
import functions_framework
from flask import Request, Response

from shared import metrics, tracing, validation
from shared.context import context
from shared.http import Router, install_problem_pages, json_response

router = Router("stock")
install_problem_pages(flask.current_app)  # functions-framework imports this module inside its app context
router.readiness = {
    "database": lambda: context().store.ping(),
    "redis": lambda: context().redis.ping(),
}
metrics.instrument(router, lambda: context().settings)
router.observers.append(tracing.name_span)


@router.route("GET", "/stock/<sku>")
def stock_level(request: Request, sku: str) -> Response:
    read = context().stock.read(validation.sku(sku))
    # Never let a browser or CDN keep the answer past what the cache has left.
    max_age = max(0, int(read.fresh_for))
    return json_response(read.level.to_public(), 200, {"Cache-Control": f"public, max-age={max_age}"})


@functions_framework.http
def stock(request: Request) -> Response:
    return router.dispatch(request)
