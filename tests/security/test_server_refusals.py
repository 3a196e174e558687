"""gunicorn's own refusals of malformed requests are problem+json, as every other error is.

gunicorn's parser refuses some requests before any app sees them (a request
line or headers over its limits, ambiguous framing, a method it does not
accept) and answered them with an HTML page of its own, one of them titled
"501 Bad Request". A client reading `code` from every error got HTML.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from http import HTTPStatus

import pytest

from ops.devstack import Stack, local_stack

pytestmark = pytest.mark.integration

REFUSALS = {
    # name: (raw request, status, code)
    "a URL over the request line limit": (b"GET /stock/" + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    "a header over the field limit": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n",
        431,
        "header_fields_too_large",
    ),
    "two Content-Length headers": (
        b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        400,
        "invalid_request",
    ),
    "Transfer-Encoding with Content-Length": (
        b"POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n0\r\n\r\n",
        400,
        "invalid_request",
    ),
    "a lowercase method": (b"get /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_request"),
    "a transfer coding it does not implement": (
        b"POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: br, chunked\r\n\r\n0\r\n\r\n",
        501,
        "not_implemented",
    ),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"WORKERS": "1", "LOG_LEVEL": "WARNING"}
    with local_stack(tmp_path_factory.mktemp("refusals"), functions=("order", "events"), extra_env=env) as (stack, _redis):
        yield stack


def exchange(port: int, raw: bytes) -> tuple[int, str, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), status_line, headers, body


@pytest.mark.parametrize("function", ["order", "events"])  # a gevent worker and a threaded one
@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_request_gunicorn_refuses_is_answered_with_problem_json(served: Stack, function: str, case: str) -> None:
    raw, status, code = REFUSALS[case]
    got, status_line, headers, body = exchange(served.ports[function], raw)
    assert got == status, status_line
    assert headers["content-type"] == "application/problem+json", headers
    problem = json.loads(body)
    assert (problem["status"], problem["code"]) == (status, code), problem
    assert status_line.split(" ", 2)[2] == HTTPStatus(status).phrase  # the status's own reason phrase, never "501 Bad Request"
    assert headers.get("connection") == "close"
