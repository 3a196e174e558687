"""auth: registers buyers and signs their access tokens. The only holder of the signing key."""

import flask
import functions_framework
from flask import Request, Response

from shared import metrics, tracing, validation
from shared.context import Context, context
from shared.http import Router, client_address, install_problem_pages, json_response, read_json

router = Router("auth")
install_problem_pages(flask.current_app)  # functions-framework imports this module inside its app context
router.readiness = Context.ready_checks(key="signing_key")  # the database and the key; Redis only reported
metrics.instrument(router, lambda: context().settings)
router.observers.append(tracing.name_span)
NO_STORE = {"Cache-Control": "no-store"}


@router.route("POST", "/register")
def register(request: Request) -> Response:
    ctx = context()
    body = read_json(request, ctx.settings.max_body_bytes)
    credentials = validation.credentials(body, checking_strength=True)
    user = ctx.accounts.register(credentials, client_address(request, ctx.settings.trusted_proxies))
    return json_response(user, 201, NO_STORE)


@router.route("POST", "/login")
def login(request: Request) -> Response:
    ctx = context()
    body = read_json(request, ctx.settings.max_body_bytes)
    credentials = validation.credentials(body, checking_strength=False)
    session = ctx.accounts.login(credentials, client_address(request, ctx.settings.trusted_proxies))
    return json_response(session.to_public(), 200, NO_STORE)


@router.route("GET", "/.well-known/jwks.json")
def jwks(request: Request) -> Response:
    return json_response(context().signer.jwks(), 200, {"Cache-Control": "public, max-age=300"})


@functions_framework.http
def auth(request: Request) -> Response:
    response = router.dispatch(request)
    response.headers.setdefault("Cache-Control", "no-store")
    return response
