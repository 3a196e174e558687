"""Bounded slow clients: a request's body arrives within BODY_TIMEOUT_SECONDS, or 408 and the connection closes.

gunicorn bounds the wait for a request's headers (the keep-alive timeout), not
for its body: the application reads ``wsgi.input``, and gunicorn's reader
calls ``recv`` until it has every byte ``Content-Length`` promised, as long as
the client keeps sending one now and then. A client that sends complete headers
with ``Content-Length: 16000`` and a byte a second held a greenlet (gevent:
auth, stock, order) or one of the four threads (gthread: events) for hours.

:func:`guard` wraps each function's whole WSGI app (``shared.serving`` puts it
outermost, in every gunicorn worker) and reads the body before anything else
does, under one deadline for the whole body, however it trickles in:

- under gevent, a ``gevent.Timeout`` around the read (the greenlet is woken at
  the deadline wherever it waits);
- with threads, a per-process :class:`Deadlines` thread that shuts the read
  side of an overdue socket, so the blocked ``recv`` returns at once.

The body then waits in memory for the app (at most MAX_BODY_BYTES). An
overdue body is answered ``408 request_timeout`` problem+json, gunicorn is
asked to close the connection after it (``Connection: close``), and the close
lingers a moment reading what the client still sends, so that the answer is
not lost to a TCP reset. A body longer than MAX_BODY_BYTES is ``413`` the same
way: a declared length over the limit before a byte of it is read (handed to
the app, it was read later with no deadline: functions-framework reads every
body after the request), a chunked body once it passes the limit.
"""

from __future__ import annotations

import heapq
import io
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from shared import metrics
from shared.blocking import gevent_active
from shared.errors import FlashsaleError, PayloadTooLarge, RequestTimeout
from shared.http import problem_response
from shared.settings import Settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("flashsale.http")

LINGER_SECONDS = 1.0  # after a 408, how long the close keeps reading what the client still sends
LINGER_BYTES = 64 * 1024


class Overdue(Exception):
    """The body's deadline passed while it was being read."""


def guard(app: WSGIApplication, settings: Settings, function: str) -> WSGIApplication:
    """``app`` behind the body deadline of ``settings`` (BODY_TIMEOUT_SECONDS, MAX_BODY_BYTES)."""
    seconds, max_bytes = settings.body_timeout_seconds, settings.max_body_bytes
    count = metrics.http_observer(function) if settings.metrics else None
    sample = _Sampler()
    under_gevent = gevent_active()  # decided once: the worker patched (or not) before it built its app

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        length = environ.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not chunked and (not length.isdigit() or int(length) == 0):
            return app(environ, start_response)  # no body
        started = time.monotonic()
        sock = environ.get("gunicorn.socket")
        too_large = PayloadTooLarge(f"the body may be at most {max_bytes} bytes")
        error: FlashsaleError
        if not chunked and int(length) > max_bytes:
            error = too_large  # refused before a byte is read: read later, it would have no deadline
        else:
            wanted = max_bytes + 1 if chunked else int(length)
            try:
                body = read_within(environ["wsgi.input"], wanted, started + seconds, sock, under_gevent=under_gevent)
            except Overdue:
                error = RequestTimeout(f"the request body must arrive within {seconds:g} seconds of its headers")
            else:
                if not (chunked and len(body) > max_bytes):
                    environ["wsgi.input"] = io.BytesIO(body)
                    return app(environ, start_response)
                error = too_large
        elapsed = time.monotonic() - started
        if count is not None:
            count(environ.get("REQUEST_METHOD", ""), "other", error.status, elapsed)
        sample(function, environ.get("REQUEST_METHOD", ""), error, elapsed)
        return refuse(error, start_response, sock)

    return guarded


def read_within(stream: Any, wanted: int, deadline: float, sock: socket.socket | None, *, under_gevent: bool) -> bytes:
    """Up to ``wanted`` bytes of ``stream`` (fewer if it ends first); raise Overdue if ``deadline`` passes first."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise Overdue()
    if under_gevent:
        import gevent

        with gevent.Timeout(remaining, Overdue):
            return _read(stream, wanted)
    if sock is None:  # not gunicorn: no socket to bound, so the read is as the server makes it
        return _read(stream, wanted)
    watch = deadlines().watch(sock, deadline)
    try:
        body = _read(stream, wanted)
    finally:
        expired = watch.finish()
    if expired and len(body) < wanted:
        raise Overdue()  # the read side was shut at the deadline: that is why the body is short
    return body


def _read(stream: Any, wanted: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < wanted:
        chunk: bytes = stream.read(wanted - got)
        if not chunk:  # the body (or the connection) ended
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def refuse(error: FlashsaleError, start_response: StartResponse, sock: socket.socket | None) -> Iterable[bytes]:
    """``error`` as problem+json, and the connection closed after it (the rest of the body is never read)."""
    response = problem_response(error)
    # gunicorn hands the app its Response's own start_response: asking that
    # Response to close makes gunicorn send "Connection: close" and hang up
    # after the answer (an app may not send hop-by-hop headers itself).
    force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)
    if callable(force_close):
        force_close()
    start_response(response.status, list(response.headers.items()))
    return _Lingering(response.get_data(), sock)


class _Lingering:
    """The answer's bytes; once they are written, half-close and read what the client still sends, for a moment.

    Closing a socket with unread bytes in it sends a TCP reset, which can make
    the client drop an answer it has not read yet. A FIN after the answer, then
    reading until the client closes (or LINGER_SECONDS), avoids it.
    """

    def __init__(self, body: bytes, sock: socket.socket | None) -> None:
        self.body = body
        self.sock = sock

    def __iter__(self) -> Iterator[bytes]:
        yield self.body

    def close(self) -> None:
        if self.sock is not None:
            linger(self.sock)


def linger(sock: socket.socket, seconds: float = LINGER_SECONDS) -> None:
    prior = sock.gettimeout()
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + seconds
        drained = 0
        while drained < LINGER_BYTES and (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            data = sock.recv(4096)
            if not data:
                break
            drained += len(data)
    except OSError:  # timed out, or the client is gone: either way there is nothing more to wait for
        pass
    finally:
        try:
            sock.settimeout(prior)
        except OSError:
            pass


class Watch:
    """One body read under a deadline (see :class:`Deadlines`)."""

    def __init__(self, sock: socket.socket, lock: threading.Lock) -> None:
        self.sock = sock
        self._lock = lock
        self._done = False
        self.expired = False

    def expire(self) -> None:
        """Called at the deadline (with the lock held): shut the read side unless the read finished."""
        if self._done:
            return
        self.expired = True
        try:
            self.sock.shutdown(socket.SHUT_RD)  # a recv blocked on it returns b"" at once
        except OSError:
            pass

    def finish(self) -> bool:
        """The read is over; whether the deadline cut it."""
        with self._lock:
            self._done = True
            return self.expired


class Deadlines:
    """One thread per process that cuts body reads at their deadline (worker threads block in ``recv``).

    A heap ordered by deadline; finished reads stay in it until their deadline
    (one small tuple each) rather than being searched for.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watch]] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, deadline: float) -> Watch:
        watch = Watch(sock, self._lock)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="flashsale-body-deadlines", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (deadline, next(self._order), watch))
            if self._heap[0][2] is watch:
                self._changed.notify()
        return watch

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    heapq.heappop(self._heap)[2].expire()
                self._changed.wait(self._heap[0][0] - now if self._heap else None)


_deadlines: tuple[int, Deadlines] | None = None
_deadlines_lock = threading.Lock()


def deadlines() -> Deadlines:
    """The process's :class:`Deadlines` (a forked worker makes its own)."""
    global _deadlines
    with _deadlines_lock:
        if _deadlines is None or _deadlines[0] != os.getpid():
            _deadlines = (os.getpid(), Deadlines())
        return _deadlines[1]


class _Sampler:
    """One log line a second at most for refused bodies, carrying how many it stands for: a flood must not flood the log."""

    def __init__(self, every_seconds: float = 1.0) -> None:
        self.every = every_seconds
        self._next = 0.0
        self._since = 0

    def __call__(self, function: str, method: str, error: FlashsaleError, elapsed: float) -> None:
        self._since += 1
        now = time.monotonic()
        if now < self._next:
            return
        extra = {"function": function, "route": "other", "method": method, "status": error.status, "code": error.code}
        extra |= {"latency_ms": round(elapsed * 1000, 3), "sampled": self._since}
        why = "not received in time" if error.status == 408 else "too large"
        log.info("%s other %s: request body %s", method, error.status, why, extra=extra)
        self._next, self._since = now + self.every, 0
