"""place-order: sells a unit to a buyer with a valid token, first come first served."""

import flask
import functions_framework
from flask import Request, Response
from werkzeug.wrappers import Request as BareRequest

from shared import validation
from shared.context import context, function_router
from shared.http import Ready, json_response, read_json
from shared.tokens import BearerToken, parse_bearer

router = function_router("order", key="public_key")  # problem pages, readiness (the database and the key; Redis only reported), metrics


READ_ORDER = "flashsale.order"  # the WSGI environ key the shortcut leaves its reading under, for the route


def read_order(request: BareRequest) -> tuple[BearerToken, validation.OrderRequest, str | None]:
    """The order a request asks for, or SoldOut from memory for a buyer who holds none of a sold-out sale.

    Sold out is public (GET /stock says it), so it is answered before the
    signature check, the costliest step (docs/security.md).
    """
    ctx = context()
    read: tuple[BearerToken, validation.OrderRequest, str | None] | None = request.environ.get(READ_ORDER)
    if read is None:  # not read by the shortcut already
        token = parse_bearer(request.headers.get("Authorization"))
        wanted = validation.order_request(read_json(request, ctx.settings.max_body_bytes))
        read = (token, wanted, validation.idempotency_key(request.headers.get("Idempotency-Key")))
        request.environ[READ_ORDER] = read
    ctx.orders.refuse_from_memory(read[1].sku, read[0].unverified_subject)
    return read


@router.shortcut("POST", "/orders", armed=lambda: context().orders.memos.any())
def refuse_from_memory(request: BareRequest) -> Ready | None:
    """Once a sale is sold out, a loser's answer is ready bytes, before functions-framework and Flask."""
    read_order(request)
    return None  # a holder, or a sale with units: the route decides


@router.route("POST", "/orders")
def place_order(request: Request) -> Response:
    ctx = context()
    token, wanted, key = read_order(request)
    claims = ctx.verifier.verify_token(token)
    placed = ctx.orders.place(claims.subject, wanted.sku, wanted.quantity, key)
    headers = {"Cache-Control": "no-store"}
    if placed.replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(placed.order.to_public(), 201, headers)


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
