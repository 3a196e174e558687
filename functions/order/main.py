"""place-order: sells a unit to a buyer with a valid token, first come first served."""

import flask
import functions_framework
from flask import Request, Response
from werkzeug.wrappers import Request as BareRequest

from shared import validation
from shared.context import context, function_router
from shared.errors import Unauthorized
from shared.http import Ready, json_response, read_json
from shared.tokens import BearerToken

router = function_router("order", key="public_key")  # problem pages, readiness (the database and the key; Redis only reported), metrics


def read_order(request: BareRequest) -> tuple[BearerToken, validation.OrderRequest, str | None]:
    """The order a request asks for, or SoldOut from memory for a buyer who holds none of a sold-out sale.

    Sold out is public (GET /stock says it), so it is answered before the
    signature check, the costliest step (docs/security.md).
    """
    ctx = context()
    token = ctx.verifier.bearer(request.headers.get("Authorization"))
    wanted = validation.order_request(read_json(request, ctx.settings.max_body_bytes))
    key = validation.idempotency_key(request.headers.get("Idempotency-Key"))
    ctx.orders.refuse_from_memory(wanted.sku, token.unverified_subject)
    return token, wanted, key


def order_answer(request: BareRequest) -> Ready:
    """A press of Buy, answered: sold out from memory first, then the signature, then the order desk."""
    ctx = context()
    token, wanted, key = read_order(request)
    try:
        claims = ctx.verifier.verify_token(token)
    except Unauthorized:
        ctx.orders.refuse_unverified(wanted.sku)  # after a sell-out, what anyone who holds none hears
        raise
    placed = ctx.orders.place(claims.subject, wanted.sku, wanted.quantity, key)
    headers = {"Cache-Control": "no-store"}
    if placed.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Ready.of(json_response(placed.order.to_public(), 201, headers))


# Every press, before functions-framework and Flask: in a crowd, thousands press before
# their worker knows the sale is sold out, and the framework's dispatch cost each of them
# about as much again as the order itself (docs/performance.md). final: the check places
# the order, so an unexpected failure is answered 500 here, never run again by the route.
@router.shortcut("POST", "/orders", final=True)
def order_before_the_framework(request: BareRequest) -> Ready:
    return order_answer(request)


@router.route("POST", "/orders")
def place_order(request: Request) -> Response:
    """With tracing on (no shortcuts: the server span is Flask's), and anything the shortcut left unread (a body over the limit)."""
    ready = order_answer(request)
    return Response(ready.body, ready.status, ready.headers)


@router.route("GET", "/orders")
def list_orders(request: Request) -> Response:
    ctx = context()
    claims = ctx.verifier.from_header(request.headers.get("Authorization"))
    orders = [order.to_public() for order in ctx.orders.orders_of(claims.subject)]
    return json_response({"orders": orders}, 200, {"Cache-Control": "no-store"})


router.serve_shortcuts(flask.current_app)


@functions_framework.http
def order(request: Request) -> Response:
    return router.dispatch(request)
