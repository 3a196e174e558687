"""flashsale's one error hierarchy. :mod:`shared.http` renders it as RFC 9457 problem+json."""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://flashsale.dev/problems/"


class FlashsaleError(Exception):
    status = 500
    code = "internal"
    title = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, str]] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = dict(headers or {})
        self.errors = errors
        self.extra = extra

    def to_problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.code.replace("_", "-"),
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


class InvalidRequest(FlashsaleError):
    status, code, title = 400, "invalid_request", "Invalid request"


class Unauthorized(FlashsaleError):
    status, code, title = 401, "unauthorized", "Missing or invalid access token"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers.setdefault("WWW-Authenticate", 'Bearer realm="flashsale"')


class InvalidCredentials(FlashsaleError):
    status, code, title = 401, "invalid_credentials", "Email or password is wrong"


class NotFound(FlashsaleError):
    status, code, title = 404, "not_found", "Not found"


class UnknownSku(FlashsaleError):
    status, code, title = 404, "unknown_sku", "No sale for this sku"


class MethodNotAllowed(FlashsaleError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class EmailTaken(FlashsaleError):
    status, code, title = 409, "email_taken", "This email is already registered"


class SoldOut(FlashsaleError):
    status, code, title = 409, "sold_out", "Sold out"


class LimitReached(FlashsaleError):
    status, code, title = 409, "limit_reached", "You already bought the most this sale allows"


class SaleNotStarted(FlashsaleError):
    status, code, title = 409, "sale_not_started", "The sale has not started yet"


class SaleExists(FlashsaleError):
    status, code, title = 409, "sale_exists", "A sale with this sku already exists"


class SaleChanged(FlashsaleError):
    """The sale's terms changed since the caller read them (its version moved): read it again, then decide."""

    status, code, title = 409, "sale_changed", "The sale changed since it was read"


class RequestTimeout(FlashsaleError):
    """The request's body did not arrive within BODY_TIMEOUT_SECONDS: the server closes the connection."""

    status, code, title = 408, "request_timeout", "The request body did not arrive in time"


class PayloadTooLarge(FlashsaleError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class Forbidden(FlashsaleError):
    status, code, title = 403, "forbidden", "Forbidden"


class UriTooLong(FlashsaleError):
    status, code, title = 414, "uri_too_long", "URI Too Long"


class ExpectationFailed(FlashsaleError):
    status, code, title = 417, "expectation_failed", "Expectation Failed"


class HeaderFieldsTooLarge(FlashsaleError):
    status, code, title = 431, "header_fields_too_large", "Request Header Fields Too Large"


class NotImplementedByServer(FlashsaleError):
    status, code, title = 501, "not_implemented", "Not Implemented"


class UnsupportedMediaType(FlashsaleError):
    status, code, title = 415, "unsupported_media_type", "Send application/json"


class IdempotencyKeyReused(FlashsaleError):
    status, code, title = 422, "idempotency_key_reused", "This Idempotency-Key was used with a different request"


class RateLimited(FlashsaleError):
    status, code, title = 429, "rate_limited", "Too many attempts; try again later"

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class Unavailable(FlashsaleError):
    status, code, title = 503, "unavailable", "A dependency is unavailable; try again shortly"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))}, **extra)


class ConcurrentUpdate(FlashsaleError):
    """A compare-and-set lost every retry: the caller may try again."""

    status, code, title = 503, "unavailable", "Too much contention; try again shortly"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": "1"})


class StoreError(FlashsaleError):
    """The database failed (not the client's fault)."""

    status, code, title = 503, "unavailable", "The database is unavailable; try again shortly"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": "1"})


class OutcomeUnknown(StoreError):
    """A write began and nobody heard how it ended (its waiter was killed): it may have committed."""
