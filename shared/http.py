"""The HTTP edge every function shares: routing, JSON bodies, request ids, the
access log line, and the one place errors become RFC 9457 problem+json."""

from __future__ import annotations

import functools
import io
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask, Request, Response
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.routing import Map, MapAdapter, RequestRedirect, Rule
from werkzeug.wrappers import Request as BareRequest

from shared import logs, strict_json
from shared.errors import (
    FlashsaleError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    UnsupportedMediaType,
)
from shared.settings import Settings, get_settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("flashsale.http")

Handler = Callable[..., Response]
Shortcut = Callable[..., "Ready | None"]  # (request, **route parameters); may raise the FlashsaleError it answers with
S = TypeVar("S", bound=Shortcut)
ReadinessCheck = Callable[[], str | None]  # None: ok; a string: still ready, reported as it is; raising: not ready

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}\Z")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


class ProblemResponse(Response):
    """A problem+json answer that still knows its ``code`` (the access log reports it without parsing the body)."""

    code: str


def problem_response(error: FlashsaleError) -> Response:
    response = ProblemResponse(
        json.dumps(error.to_problem(), separators=(",", ":")), status=error.status, mimetype="application/problem+json"
    )
    response.code = error.code
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def request_id(request: BareRequest) -> str:
    given = request.headers.get("X-Request-Id", "")
    if _REQUEST_ID.match(given):
        return given
    trace = _TRACEPARENT.match(request.headers.get("traceparent", ""))
    if trace:
        return trace.group(1)
    return uuid.uuid4().hex


class ShortcutRequest(BareRequest):
    """The request a shortcut sees: ``body`` holds what the router buffered (at most ``max_body_bytes``)."""

    def __init__(self, environ: WSGIEnvironment, body: bytes) -> None:
        # Not put in environ["werkzeug.request"]: that made a reference cycle (request -> environ ->
        # request) of six objects every press left to the collector; nothing reads it back.
        super().__init__(environ, populate_request=False)
        self.body = body


def read_json(request: BareRequest, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, or a clear 400/413/415."""
    if isinstance(request, ShortcutRequest) and request.content_type == "application/json":
        # A press of Buy as clients send it, before the framework: its body is already in memory,
        # so werkzeug's header parsing and stream wrapper are skipped (about 10 us a press, measured).
        raw = request.body
    else:
        if request.content_length is not None and request.content_length > max_bytes:
            raise PayloadTooLarge(f"the body may be at most {max_bytes} bytes")
        mimetype = (request.mimetype or "").lower()
        if mimetype != "application/json" and not mimetype.endswith("+json"):
            raise UnsupportedMediaType("send the body as application/json")
        raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"the body may be at most {max_bytes} bytes")
    try:
        body = strict_json.DECODER.decode(raw.decode("utf-8"))
    except strict_json.RepeatedKey as exc:
        raise InvalidRequest("the body repeats a key in one object; name each key once") from exc
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidRequest("the body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


def client_address(request: Request, trusted_proxies: int) -> str | None:
    """The caller's address: the ``trusted_proxies``-th entry of X-Forwarded-For from the end; None when there is none.

    Each trusted hop appends its peer, so the client is that many entries from
    the end and anything a client wrote sits in front, never read. A shorter
    chain means a hop did not append (Kourier's default, docs/deploy.md): the
    address is unknown, and falling back to the peer would put every caller
    behind the same proxy at one address. With no trusted hops the peer is the client.
    """
    if trusted_proxies <= 0:
        return request.remote_addr or None
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    return hops[-trusted_proxies] if len(hops) >= trusted_proxies else None


@dataclass(frozen=True)
class Ready:
    """An answer made before the framework: status, headers and body as they go on the wire."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def status_line(self) -> str:
        return f"{self.status} {HTTPStatus(self.status).phrase}"

    @classmethod
    def json(cls, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Ready:
        return cls(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *(headers or {}).items()], body)

    @classmethod
    def of(cls, response: Response) -> Ready:
        return cls(response.status_code, list(response.headers.items()), response.get_data())


@dataclass(frozen=True)
class _Shortcut:
    method: str
    regex: re.Pattern[str]
    pattern: str
    check: Shortcut
    final: bool = False


@dataclass
class AccessSampler:
    """Which answers get an access line, and how many answers each line stands for.

    A flash sale's routine answers come by the thousand a second: refusals
    (every 4xx: sold out, a missing token, an unknown sku, a rate limit, a bad
    body) and reads (200 to GET). Formatting and writing a line costs about as
    much as answering, and a stranger's made-up requests must not write the log
    one line each, so one routine answer in ``every`` is logged, per route,
    status and problem code, with ``sampled`` = how many it stands for (itself
    and the ones skipped since the last line): a line never stands for answers
    of another code. The service's own errors (5xx), 201s and anything slower
    than ``slow_seconds`` are always logged; the metrics count every answer.
    """

    every: int = 1
    slow_seconds: float = 1.0
    _since: dict[tuple[str, int, str | None], int] = field(default_factory=dict)  # routine answers since the last line

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessSampler:
        return cls(every=settings.log_sample_every, slow_seconds=settings.log_slow_ms / 1000)

    def stands_for(self, method: str, route: str, status: int, code: str | None, elapsed: float) -> int:
        """0: no line for this answer; otherwise the number of answers its line stands for."""
        routine = 400 <= status < 500 or (status == 200 and method in {"GET", "HEAD"})
        if not routine or self.every <= 1 or elapsed >= self.slow_seconds:
            return 1
        key = (route, status, code)  # route patterns, statuses and problem codes: a bounded set
        since = self._since.get(key)
        if since is None:  # the first of each kind is logged
            self._since[key] = 0
            return 1
        since += 1
        if since < self.every:
            self._since[key] = since
            return 0
        self._since[key] = 0
        return since


PROBES = ("/healthz", "/readyz")


@dataclass
class Router:
    """Dispatches one function's routes; every function also answers /healthz and /readyz."""

    function: str
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
    observers: list[Callable[[str, str, int, float], None]] = field(default_factory=list)  # (method, route, status, seconds)
    on_error: list[Callable[[Exception], None]] = field(default_factory=list)  # every error that became a problem answer
    sampler: AccessSampler | None = None  # from the process's settings at the first request, unless set
    _shortcuts: list[_Shortcut] = field(default_factory=list)
    _handlers: dict[str, tuple[str, Handler]] = field(default_factory=dict)  # endpoint: (pattern, handler)
    # werkzeug's matching: a GET route answers HEAD too, and a path another method owns is a 405 with Allow.
    # merge_slashes off: "/stock//x" is no route (404), not a redirect to "/stock/x", which is no answer an API gives.
    _map: Map = field(default_factory=lambda: Map([Rule(probe, methods=["GET"], endpoint=probe) for probe in PROBES], merge_slashes=False))

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            endpoint = f"{method} {pattern}"
            self._map.add(Rule(pattern, methods=[method], endpoint=endpoint))
            self._handlers[endpoint] = (pattern, handler)
            return handler

        return register

    def dispatch(self, request: Request) -> Response:
        started = time.perf_counter()
        rid = request_id(request)
        route = "other"
        try:
            # The route is known before the handler runs, so a refusal it raises
            # (409 sold_out) is logged and counted under its route, not "other".
            route, handle = self._match(request)
            response = handle()
        except FlashsaleError as error:
            self._failed(error)
            response = problem_response(error)
        except RequestEntityTooLarge:
            response = problem_response(PayloadTooLarge())
        except HTTPException as exc:
            response = problem_response(_from_http_exception(exc))
        except Exception as exc:
            log.exception("unhandled error", extra={"request_id": rid, "function": self.function})
            self._failed(exc)
            response = problem_response(FlashsaleError("something went wrong on our side"))
        response.headers["X-Request-Id"] = rid
        self._answered(request.method, route, response.status_code, _problem_code(response), time.perf_counter() - started, rid)
        return response

    def _answered(self, method: str, route: str, status: int, code: str | None, elapsed: float, rid: str) -> None:
        """The access line (sampled) and the observers (metrics, tracing) of one answer, however it was made."""
        if self.sampler is None:
            self.sampler = AccessSampler.from_settings(get_settings())
        stands_for = self.sampler.stands_for(method, route, status, code, elapsed)
        if stands_for and log.isEnabledFor(logging.INFO):
            extra: dict[str, Any] = {
                "function": self.function,
                "route": route,
                "method": method,
                "status": status,
                "code": code,
                "latency_ms": round(elapsed * 1000, 3),
                "request_id": rid,
            }
            if stands_for > 1:
                extra["sampled"] = stands_for
            logs.line(log, f"{method} {route} {status}", extra)
        for observe in self.observers:
            observe(method, route, status, elapsed)

    # answers from memory, before the framework -------------------------
    def shortcut(self, method: str, pattern: str, *, final: bool = False) -> Callable[[S], S]:
        """Register a check that may answer ``method pattern`` before functions-framework and Flask see the request.

        The check gets the request (its body buffered) and the pattern's parameters; it answers by returning a
        :class:`Ready` or by raising a FlashsaleError (the route runs the same
        steps, so it is the route's own answer), and returns None to let the
        route decide as if no check had run.

        ``final``: the check does the route's whole work, side effects
        included (an order placed), so an unexpected error in it is answered
        500 there and then, never handed to the route to run the work again.
        """
        regex = _compile(pattern)

        def register(check: S) -> S:
            self._shortcuts.append(_Shortcut(method, regex, pattern, check, final))
            return check

        return register

    def serve_shortcuts(self, app: Flask) -> None:
        """Put the shortcuts in front of ``app``: what they answer never reaches Flask or functions-framework.

        Not with tracing on: the server span is made by the Flask
        instrumentation, so a request answered before Flask would have none.
        """
        if get_settings().otel_traces_exporter == "none":
            app.wsgi_app = self.wsgi(app.wsgi_app)  # type: ignore[method-assign,assignment]

    def wsgi(self, app: WSGIApplication) -> WSGIApplication:
        """``app`` behind this router's shortcuts."""

        def serve(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
            if not path.isascii():  # WSGI's latin-1 path, decoded as werkzeug decodes it
                path = path.encode("latin-1", "replace").decode("utf-8", "replace")
            # A GET shortcut answers HEAD too, without the body: functions-framework's own route
            # (Flask's "path" converter) matches no line break, so what it saw would be a 404, not
            # the route's answer (a sku with a line break is a 400, docs/openapi.yaml).
            wanted = "GET" if method == "HEAD" else method
            for shortcut in self._shortcuts:
                if shortcut.method == wanted and (match := shortcut.regex.match(path)):
                    answer = self._shortcut(shortcut, match.groupdict(), environ, start_response)
                    if answer is not None:
                        return [b""] if method == "HEAD" else answer
                    break
            return app(environ, start_response)

        return serve

    def _shortcut(
        self, shortcut: _Shortcut, params: dict[str, str], environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes] | None:
        started = time.perf_counter()
        body = _buffer_body(environ, get_settings().max_body_bytes)
        if body is None:
            return None
        request = ShortcutRequest(environ, body)
        code: str | None = None
        rid: str | None = None
        try:
            ready = shortcut.check(request, **params)
        except FlashsaleError as error:
            self._failed(error)
            ready, code = _ready_problem(error), error.code
        except Exception as exc:
            if not shortcut.final:
                ready = None  # the route meets it again and answers it, logged, as it answers any failure
            else:
                rid = request_id(request)
                log.exception("unhandled error", extra={"request_id": rid, "function": self.function})
                self._failed(exc)
                unhandled = FlashsaleError("something went wrong on our side")
                ready, code = _ready_problem(unhandled), unhandled.code
        if ready is None:
            environ["wsgi.input"] = io.BytesIO(body)  # the route reads the body afresh
            return None
        rid = rid or request_id(request)
        start_response(ready.status_line, [*ready.headers, ("X-Request-Id", rid)])
        self._answered(request.method, shortcut.pattern, ready.status, code, time.perf_counter() - started, rid)
        return [ready.body]

    def _failed(self, error: Exception) -> None:
        for observe in self.on_error:
            observe(error)

    @functools.cached_property
    def _matcher(self) -> MapAdapter:
        """The map bound once: its match() picks up routes added later, and the method is given per request."""
        return self._map.bind("")

    def _match(self, request: Request) -> tuple[str, Callable[[], Response]]:
        path = request.path.rstrip("/") or "/"
        try:
            endpoint, params = self._matcher.match(path, request.method)
        except WerkzeugMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.valid_methods or ()))
            raise MethodNotAllowed(f"use {allowed}", headers={"Allow": allowed}) from None
        except (WerkzeugNotFound, RequestRedirect):  # a redirect: a path only another spelling of would match
            raise NotFound(f"no route for {request.method} {path}") from None
        if endpoint in PROBES:
            return endpoint, (lambda: json_response({"status": "ok"})) if endpoint == "/healthz" else self._ready
        pattern, handler = self._handlers[endpoint]
        return pattern, functools.partial(handler, request, **params)

    def _ready(self) -> Response:
        checks: dict[str, str] = {}
        ready = True
        for name, check in self.readiness.items():
            try:
                checks[name] = check() or "ok"
            except Exception as exc:
                checks[name] = f"error: {type(exc).__name__}"
                ready = False
        if ready:
            return json_response({"status": "ok" if all(v == "ok" for v in checks.values()) else "degraded", "checks": checks})
        return problem_response(Unavailable("a dependency does not answer", checks=checks))


def _compile(pattern: str) -> re.Pattern[str]:
    """A route pattern (``/stock/<sku>``) as a regular expression with one named group per parameter."""
    return re.compile("^" + re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", pattern) + r"\Z")  # not "$", which also matches before a final line break


def _buffer_body(environ: WSGIEnvironment, max_bytes: int) -> bytes | None:
    """Read a body of known length (at most ``max_bytes``) and put it back for whoever reads next; None: leave it alone."""
    length = environ.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > max_bytes or environ.get("HTTP_TRANSFER_ENCODING"):
        return None
    body: bytes = environ["wsgi.input"].read(int(length)) if int(length) else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def _ready_problem(error: FlashsaleError) -> Ready:
    """What ``problem_response(error)`` would send, as bytes; made once for each plain error class."""
    if error.detail != error.title or error.headers or error.errors or error.extra:
        return Ready.of(problem_response(error))
    ready = _READY.get(type(error))
    if ready is None:
        ready = _READY[type(error)] = Ready.of(problem_response(error))
    return ready


_READY: dict[type[FlashsaleError], Ready] = {}


def install_problem_pages(app: Flask) -> None:
    """Errors raised before a request reaches a function (werkzeug's router, a
    malformed path) are problem+json too, not Flask's HTML pages."""
    app.register_error_handler(HTTPException, lambda exc: problem_response(_from_http_exception(exc)))


def _from_http_exception(exc: HTTPException) -> FlashsaleError:
    status = exc.code or 500
    if status == 404:
        return NotFound()
    if status == 405:
        return MethodNotAllowed()
    if status == 415:
        return UnsupportedMediaType()
    if 400 <= status < 500:
        return InvalidRequest(exc.description or "bad request")
    return FlashsaleError()


def _problem_code(response: Response) -> str | None:
    return response.code if isinstance(response, ProblemResponse) else None
