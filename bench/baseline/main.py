"""The baseline: an empty functions-framework HTTP function.

It is served exactly as the real function it stands beside (same gunicorn,
worker class and counts; see bench/servers.py), and answers every route the k6
scripts call with a constant, so that what a scenario measures on it is the
server, the client and the machine: everything but flashsale's own work.
"""

import json

import functions_framework
from flask import Request, Response

OK = b'{"status":"ok"}'
SOLD_OUT = b'{"type":"about:blank","title":"Sold out","status":409,"code":"sold_out","detail":"baseline"}'
TOKEN = b'{"access_token":"baseline","token_type":"Bearer","expires_in":900}'
NO_ORDERS = b'{"orders":[]}'


@functions_framework.http
def baseline(request: Request) -> Response:
    path = request.path
    if path.startswith("/stock/"):
        # The k6 checks want the sku they asked for back; nothing else is looked up.
        sku = path.removeprefix("/stock/")
        body = json.dumps({"sku": sku, "total": 1000, "available": 1000, "sold_out": False}, separators=(",", ":"))
        return Response(body, 200, mimetype="application/json")
    if path == "/orders":
        if request.method == "POST":
            return Response(SOLD_OUT, 409, mimetype="application/problem+json")
        return Response(NO_ORDERS, 200, mimetype="application/json")
    if path == "/login":
        return Response(TOKEN, 200, mimetype="application/json")
    return Response(OK, 200, mimetype="application/json")
