"""The monolith: auth, stock and order in one app, for the isolation comparison.

The three functions' own handlers, unchanged, behind one entry point, so that
one process group (served as order is: gevent) does everything; a login storm
then competes with buyers for the same workers. flashsale does not ship this;
it exists to measure what splitting the functions buys.
"""

import functions_framework
from flask import Request
from flask.typing import ResponseReturnValue

from functions.auth import main as auth
from functions.order import main as order
from functions.stock import main as stock

ROUTES = (
    ("/login", auth.auth),
    ("/register", auth.auth),
    ("/.well-known/", auth.auth),
    ("/stock/", stock.stock),
    ("/orders", order.order),
)


@functions_framework.http
def monolith(request: Request) -> ResponseReturnValue:
    for prefix, handle in ROUTES:
        if request.path.startswith(prefix):
            return handle(request)
    return order.order(request)  # /healthz, /readyz, /metrics and anything unknown
