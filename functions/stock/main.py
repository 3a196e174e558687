"""stock-check: how many units are left, from cache, within one cache lifetime of the truth."""

import flask
import functions_framework
from flask import Request, Response
from werkzeug.wrappers import Request as BareRequest

from shared import validation
from shared.context import context, function_router
from shared.http import Ready

router = function_router("stock")  # problem pages, readiness (the database; Redis only reported), metrics


def stock_answer(sku: str) -> Ready:
    read = context().stock.read(validation.sku(sku))
    # Never let a browser or CDN keep the answer past what the cache has left.
    return Ready.json(read.body, 200, {"Cache-Control": f"public, max-age={max(0, int(read.fresh_for))}"})


@router.shortcut("GET", "/stock/<sku>")
def stock_before_the_framework(request: BareRequest, sku: str) -> Ready:
    """Every read: the cached level as ready bytes, before functions-framework and Flask."""
    return stock_answer(sku)


@router.route("GET", "/stock/<sku>")
def stock_level(request: Request, sku: str) -> Response:
    """HEAD, and anything the shortcut left (it leaves nothing it can read)."""
    ready = stock_answer(sku)
    return Response(ready.body, ready.status, ready.headers)


router.serve_shortcuts(flask.current_app)


@functions_framework.http
def stock(request: Request) -> Response:
    return router.dispatch(request)
