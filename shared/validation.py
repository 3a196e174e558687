"""Checks on what clients send. Each failure is an InvalidRequest naming the field."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shared.errors import InvalidRequest

# Used with fullmatch: Python's "$" also matches before a final newline, so
# "iphone-17\n" would pass a plain match (the spec's ECMA patterns reject it).
SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Deliberately ASCII-only: look-alike Unicode addresses (Cyrillic "а" for "a",
# full-width "＠") cannot register a second account that displays the same.
EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
# What a JSON parser accepts but no text field does: NUL, lone surrogates ("\ud800"
# is valid JSON, yet cannot be encoded as UTF-8, so bcrypt, the database or a log
# line would fail on it) and the 66 Unicode non-characters (U+FDD0-U+FDEF and the
# last two code points of every plane), which are never meant to be exchanged.
NOT_TEXT = re.compile(
    "[\x00\ud800-\udfff\ufdd0-\ufdef" + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17)) + "]"
)
PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_BYTES = 72  # bcrypt reads no further; longer would be silently cut
MAX_QUANTITY = 1000


@dataclass(frozen=True)
class Credentials:
    email: str
    password: str


@dataclass(frozen=True)
class OrderRequest:
    sku: str
    quantity: int


def _invalid(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {message}", errors=[{"field": field, "message": message}])


def text(value: Any, field: str) -> str:
    """``value`` as a string every later step can encode and store, or InvalidRequest.

    Every text field of the API goes through here first, so that no string a
    JSON parser accepts reaches bcrypt, a regex, the store or a log line and
    fails there with a 500.
    """
    if not isinstance(value, str):
        raise _invalid(field, "must be a string")
    bad = NOT_TEXT.search(value)
    if bad is not None:
        raise _invalid(field, f"must not contain {_describe(bad.group())}")
    return value


def _describe(char: str) -> str:
    if char == "\x00":
        return "NUL"
    if "\ud800" <= char <= "\udfff":
        return f"a lone surrogate (U+{ord(char):04X})"
    return f"the non-character U+{ord(char):04X}"


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        # The problem names the field only when the name is short, clean text: a
        # client's name for a field is not something to echo back unchecked.
        name = unknown[0]
        if NOT_TEXT.search(name) or len(name) > 64:
            raise _invalid("body", "has a field name that is not one of " + ", ".join(sorted(allowed)))
        raise _invalid(name, "unknown field")


def credentials(body: dict[str, Any], *, checking_strength: bool) -> Credentials:
    _only(body, {"email", "password"})
    email, password = text(body.get("email"), "email"), text(body.get("password"), "password")
    email = email.strip().lower()
    if len(email) > 254 or not EMAIL.fullmatch(email):
        raise _invalid("email", "is not a valid email address")
    if len(password.encode("utf-8")) > PASSWORD_MAX_BYTES:
        raise _invalid("password", f"must be at most {PASSWORD_MAX_BYTES} bytes")
    if checking_strength and len(password) < PASSWORD_MIN_CHARS:
        raise _invalid("password", f"must be at least {PASSWORD_MIN_CHARS} characters")
    if not password:
        raise _invalid("password", "must not be empty")
    return Credentials(email, password)


def sku(value: Any, field: str = "sku") -> str:
    if not isinstance(value, str) or not SKU.fullmatch(value):
        # The pattern refuses every string text() would (it is ASCII); text()
        # runs only on a refusal, to name the reason, and so costs a buyer nothing.
        text(value, field)
        raise _invalid(field, "must be 1-64 letters, digits, '.', '_' or '-'")
    return value


def order_request(body: dict[str, Any]) -> OrderRequest:
    _only(body, {"sku", "quantity"})
    quantity = body.get("quantity", 1)
    # JSON has one number type: 2.0 is the integer 2 (as JSON Schema's "integer"
    # says), 2.5 is not. bool is an int in Python; true must not mean 1.
    if isinstance(quantity, float) and quantity.is_integer():
        quantity = int(quantity)
    if not isinstance(quantity, int) or isinstance(quantity, bool):
        raise _invalid("quantity", "must be a whole number")
    if not 1 <= quantity <= MAX_QUANTITY:
        raise _invalid("quantity", f"must be between 1 and {MAX_QUANTITY}")
    return OrderRequest(sku(body.get("sku")), quantity)


def idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(value):
        raise _invalid("Idempotency-Key", "must be 1-255 printable ASCII characters")
    return value
