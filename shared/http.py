"""The HTTP edge every function shares: routing, JSON bodies, request ids, the
access log line, and the one place errors become RFC 9457 problem+json."""

from __future__ import annotations

import functools
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Request, Response
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared.errors import (
    FlashsaleError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    UnsupportedMediaType,
)

log = logging.getLogger("flashsale.http")

Handler = Callable[..., Response]
ReadinessCheck = Callable[[], None]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


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


def request_id(request: Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    if _REQUEST_ID.match(given):
        return given
    trace = _TRACEPARENT.match(request.headers.get("traceparent", ""))
    if trace:
        return trace.group(1)
    return uuid.uuid4().hex


def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, or a clear 400/413/415."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"the body may be at most {max_bytes} bytes")
    mimetype = (request.mimetype or "").lower()
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType("send the body as application/json")
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"the body may be at most {max_bytes} bytes")
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidRequest("the body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def client_address(request: Request, trusted_proxies: int) -> str:
    """The caller's address; ``trusted_proxies`` hops of X-Forwarded-For are believed."""
    if trusted_proxies > 0:
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
        if len(hops) >= trusted_proxies:
            return hops[-trusted_proxies]
    return request.remote_addr or "unknown"


@dataclass
class Router:
    """Dispatches one function's routes; every function also answers /healthz and /readyz."""

    function: str
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
    observers: list[Callable[[str, str, int, float], None]] = field(default_factory=list)  # (method, route, status, seconds)
    on_error: list[Callable[[Exception], None]] = field(default_factory=list)  # every error that became a problem answer
    _routes: list[tuple[str, re.Pattern[str], str, Handler]] = field(default_factory=list)

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        regex = re.compile("^" + re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", pattern) + "$")

        def register(handler: Handler) -> Handler:
            self._routes.append((method, regex, pattern, handler))
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
        elapsed = time.perf_counter() - started
        code = _problem_code(response)
        log.info(
            "%s %s %s",
            request.method,
            route,
            response.status_code,
            extra={
                "function": self.function,
                "route": route,
                "method": request.method,
                "status": response.status_code,
                "code": code,
                "latency_ms": round(elapsed * 1000, 3),
                "request_id": rid,
            },
        )
        for observe in self.observers:
            observe(request.method, route, response.status_code, elapsed)
        return response

    def _failed(self, error: Exception) -> None:
        for observe in self.on_error:
            observe(error)

    def _match(self, request: Request) -> tuple[str, Callable[[], Response]]:
        path = request.path.rstrip("/") or "/"
        if path in PROBES:
            if request.method not in {"GET", "HEAD"}:
                raise MethodNotAllowed("use GET or HEAD", headers={"Allow": "GET, HEAD"})
            return path, (lambda: json_response({"status": "ok"})) if path == "/healthz" else self._ready
        allowed: set[str] = set()
        for method, regex, pattern, handler in self._routes:
            match = regex.match(path)
            if match is None:
                continue
            if method != request.method and not (method == "GET" and request.method == "HEAD"):
                allowed.update({method, "HEAD"} if method == "GET" else {method})
                continue
            return pattern, functools.partial(handler, request, **match.groupdict())
        if allowed:
            error = MethodNotAllowed(f"use {', '.join(sorted(allowed))}", headers={"Allow": ", ".join(sorted(allowed))})
            raise error
        raise NotFound(f"no route for {request.method} {path}")

    def _ready(self) -> Response:
        checks: dict[str, str] = {}
        for name, check in self.readiness.items():
            try:
                check()
                checks[name] = "ok"
            except Exception as exc:
                checks[name] = f"error: {type(exc).__name__}"
        if all(v == "ok" for v in checks.values()):
            return json_response({"status": "ok", "checks": checks})
        return problem_response(Unavailable("a dependency does not answer", checks=checks))


PROBES = ("/healthz", "/readyz")


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
