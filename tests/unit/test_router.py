"""The Router's matching (werkzeug's Map): one status for each kind of miss, HEAD for every GET, the parameters decoded."""

from __future__ import annotations

import gc
import io

import flask
from flask import Request, Response

from shared.errors import SoldOut
from shared.http import Ready, Router, ShortcutRequest, json_response


def router() -> Router:
    router = Router("test")

    @router.route("GET", "/stock/<sku>")
    def stock(request: Request, sku: str) -> Response:
        return json_response({"sku": sku})

    @router.route("POST", "/orders")
    def place(request: Request) -> Response:
        return json_response({"placed": True}, 201)

    @router.route("GET", "/orders")
    def listed(request: Request) -> Response:
        return json_response({"orders": []})

    return router


def answer(method: str, path: str) -> Response:
    app = flask.Flask(__name__)
    with app.test_request_context(path, method=method):
        return router().dispatch(flask.request)


def test_a_route_gets_its_parameters_decoded() -> None:
    response = answer("GET", "/stock/ipho%6Ee-15")
    assert response.status_code == 200 and response.get_json() == {"sku": "iphone-15"}


def test_head_is_answered_by_the_get_route() -> None:
    """A load balancer's HEAD must not be a 405 where GET works."""
    assert answer("HEAD", "/stock/x").status_code == 200
    assert answer("HEAD", "/orders").status_code == 200


def test_the_method_decides_between_routes_on_one_path() -> None:
    assert answer("POST", "/orders").status_code == 201
    assert answer("GET", "/orders").get_json() == {"orders": []}


def test_another_method_on_a_known_path_is_405_with_every_allowed_method() -> None:
    response = answer("DELETE", "/orders")
    assert response.status_code == 405 and response.get_json()["code"] == "method_not_allowed"
    assert response.headers["Allow"] == "GET, HEAD, POST"
    assert answer("POST", "/stock/x").headers["Allow"] == "GET, HEAD"


def test_an_unknown_path_is_404_not_405() -> None:
    response = answer("GET", "/nothing")
    assert response.status_code == 404 and response.get_json()["code"] == "not_found"
    assert answer("GET", "/stock/a/b").status_code == 404  # a parameter never spans a slash


def test_doubled_slashes_are_no_route_not_a_redirect() -> None:
    """werkzeug merges slashes by redirecting (308), which became a 500: "/stock//x" is a 404."""
    for path in ("/stock//x", "/stock//x/y"):
        response = answer("GET", path)
        assert response.status_code == 404 and response.get_json()["code"] == "not_found", (path, response.status_code)


def test_a_trailing_slash_is_the_same_route() -> None:
    assert answer("GET", "/stock/x/").get_json() == {"sku": "x"}


def test_every_router_answers_the_probes_and_only_with_get_or_head() -> None:
    assert answer("GET", "/healthz").get_json() == {"status": "ok"}
    assert answer("HEAD", "/readyz").status_code == 200
    probe = answer("POST", "/healthz")
    assert probe.status_code == 405 and probe.headers["Allow"] == "GET, HEAD"


def test_every_answer_carries_a_request_id() -> None:
    assert answer("GET", "/nothing").headers["X-Request-Id"]


def test_a_press_answered_before_the_framework_leaves_nothing_for_the_collector() -> None:
    # Bug caught: the shortcut's request put itself in its environ ("werkzeug.request"), a reference
    # cycle of six objects per press that only the cyclic collector freed (about 6 us a press).
    shortcuts = Router("order")

    @shortcuts.shortcut("POST", "/orders", final=True)
    def refuse(request: ShortcutRequest) -> Ready:
        raise SoldOut()

    app = shortcuts.wsgi(lambda environ, start_response: [])
    body = b'{"sku": "x", "quantity": 1}'

    def press() -> list[str]:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/orders",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8080",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
        }
        status: list[str] = []
        b"".join(app(environ, lambda line, headers, exc_info=None: status.append(line)))  # type: ignore[arg-type]
        return status

    assert press() == ["409 Conflict"]  # answered by the shortcut, before the framework
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            press()
        assert gc.collect() == 0
    finally:
        gc.enable()
