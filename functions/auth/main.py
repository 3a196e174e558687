"""auth: registers buyers and signs their access tokens. The only holder of the signing key."""

import functions_framework
from flask import Request, Response

from shared import validation
from shared.context import context, function_router
from shared.http import client_address, json_response, read_json

router = function_router("auth", key="signing_key")  # problem pages, readiness (the database and the key; Redis only reported), metrics
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
