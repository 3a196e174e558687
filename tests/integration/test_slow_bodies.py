"""Bounded slow clients, on every function as gunicorn serves it: a body that trickles in is cut off at
BODY_TIMEOUT_SECONDS with a 408 problem+json and the connection closed; a body that arrives in time is served."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ops.devstack import Stack, local_stack

pytestmark = pytest.mark.integration

BODY_TIMEOUT = 2.0
# What the bound allows beyond the timeout itself: the deadline thread's wake-up and a busy 2-core machine.
SLACK = 2.0
PATHS = {"auth": "/login", "stock": "/stock/any-sku", "order": "/orders", "events": "/"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"WORKERS": "1", "BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT), "BCRYPT_ROUNDS": "4", "LOG_LEVEL": "WARNING"}
    with local_stack(tmp_path_factory.mktemp("slow-bodies"), functions=tuple(PATHS), extra_env=env) as (stack, _redis):
        yield stack


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed_after: float  # seconds from the end of the headers to the server's end of stream


def head(function: str, stack: Stack, length: int | None, extra: str = "") -> tuple[socket.socket, float]:
    """A connection that has sent a POST's headers (``length`` None: a chunked body follows)."""
    port = stack.ports[function]
    sock = socket.create_connection(("127.0.0.1", port), timeout=BODY_TIMEOUT + SLACK + 5)
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    sock.sendall(
        f"POST {PATHS[function]} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n{framing}\r\n{extra}\r\n".encode()
    )
    return sock, time.monotonic()


def read_answer(sock: socket.socket, since: float) -> Answer:
    """Everything the server sends until it closes (or the socket's timeout says it never did)."""
    raw = b""
    while True:
        data = sock.recv(65536)
        if not data:
            break
        raw += data
    closed_after = time.monotonic() - since
    header_block, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = header_block.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return Answer(int(status_line.split()[1]), headers, body, closed_after)


def trickled(function: str, stack: Stack, length: int) -> Answer:
    """The answer to a body declared ``length`` bytes long and sent a byte a second, for longer than any bound."""
    sock, since = head(function, stack, length)
    stop = threading.Event()

    def trickle() -> None:  # one byte a second, for longer than any bound
        while not stop.wait(1.0):
            try:
                sock.send(b" ")
            except OSError:
                return  # the server hung up

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        return read_answer(sock, since)
    finally:
        stop.set()
        sender.join(5)
        sock.close()


@pytest.mark.parametrize("function", list(PATHS))
def test_a_trickled_body_is_cut_off_with_408_and_the_connection_closed(served: Stack, function: str) -> None:
    answer = trickled(function, served, 16000)
    assert answer.status == 408, answer
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert json.loads(answer.body)["code"] == "request_timeout"
    assert answer.headers.get("connection") == "close"
    assert answer.closed_after <= BODY_TIMEOUT + SLACK, f"closed {answer.closed_after:.1f} s after the headers"


# A gevent worker and a threaded one. Served, each answers as it would a body sent at once: order wants a
# token (401), events a CloudEvent (400 from functions-framework).
@pytest.mark.parametrize(("function", "status"), [("order", 401), ("events", 400)])
def test_a_body_that_arrives_in_time_in_pieces_is_served(served: Stack, function: str, status: int) -> None:
    body = json.dumps({"sku": "any-sku", "padding": "x" * 200}).encode()
    sock, since = head(function, served, len(body), "Connection: close\r\n")
    try:
        sock.sendall(body[:50])
        time.sleep(BODY_TIMEOUT / 4)  # a slow network, well within the bound
        sock.sendall(body[50:])
        answer = read_answer(sock, since)
    finally:
        sock.close()
    assert answer.status == status, answer


def test_a_chunked_body_over_the_limit_is_413(served: Stack) -> None:
    sock, since = head("order", served, None)
    try:
        chunk = b"x" * 4096
        for _ in range(5):  # 20 KiB: over MAX_BODY_BYTES (16 KiB)
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = read_answer(sock, since)
    finally:
        sock.close()
    assert answer.status == 413 and json.loads(answer.body)["code"] == "payload_too_large"


@pytest.mark.parametrize("function", list(PATHS))
@pytest.mark.parametrize("length", [16385, 50_000_000])  # MAX_BODY_BYTES + 1, and far above
def test_a_body_declared_over_the_limit_is_413_before_a_byte_is_read(served: Stack, function: str, length: int) -> None:
    # Bug caught: a declared length over MAX_BODY_BYTES passed to the app unread, and functions-framework then read it
    # with no deadline: a trickle a byte over the limit held the connection open for good (still open after 10 s).
    answer = trickled(function, served, length)
    assert answer.status == 413, answer
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert json.loads(answer.body)["code"] == "payload_too_large"
    assert answer.headers.get("connection") == "close"
