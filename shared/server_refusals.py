"""gunicorn's own refusals as problem+json, like every other error of flashsale's.

gunicorn's parser refuses some requests before any app sees them: a request
line or headers over its limits (414, 431), ambiguous framing (two
``Content-Length`` headers, ``Transfer-Encoding`` beside ``Content-Length``),
a method it does not accept (a lowercase one), a transfer coding it does not
implement (501). It answered them with an HTML page of its own, its reason
phrase left at "Bad Request" for the 501. Its worker writes every such answer
through ``gunicorn.util.write_error``; :func:`install` (each worker, at
``post_worker_init``) puts :func:`write_problem` there instead: the status
and gunicorn's message, as RFC 9457 problem details with a ``code``, the
status's own reason phrase, and ``Connection: close`` as before.
"""

from __future__ import annotations

import json
import socket
from http import HTTPStatus

from gunicorn import util

from shared.bodytimeout import linger
from shared.errors import (
    ExpectationFailed,
    FlashsaleError,
    Forbidden,
    HeaderFieldsTooLarge,
    InvalidRequest,
    NotImplementedByServer,
    UriTooLong,
)

# The statuses gunicorn's Worker.handle_error answers with; anything else is its own failure (500).
ERRORS: dict[int, type[FlashsaleError]] = {
    400: InvalidRequest,
    403: Forbidden,
    414: UriTooLong,
    417: ExpectationFailed,
    431: HeaderFieldsTooLarge,
    501: NotImplementedByServer,
}


def answer(status: int, message: str) -> bytes:
    """The whole HTTP answer for gunicorn's refusal ``status``, its ``message`` as the detail (none for a 500)."""
    error = ERRORS.get(status, FlashsaleError)(message or None)
    body = json.dumps(error.to_problem()).encode()
    head = (
        f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/problem+json\r\n"
        "Cache-Control: no-store\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def write_problem(sock: socket.socket, status_int: int, _reason: str, mesg: str) -> None:
    """``gunicorn.util.write_error``'s signature and duty, in problem+json.

    Then the close lingers, as a 408's does (``shared.bodytimeout.linger``):
    gunicorn refused the request before reading all of it (a 9 KB request
    line), and a close with those bytes unread resets the connection, which
    can lose the answer before the client reads it.
    """
    util.write_nonblock(sock, answer(status_int, mesg))
    linger(sock)


def install() -> None:
    util.write_error = write_problem
