"""Access tokens: EdDSA (Ed25519) JWTs. Only auth holds the private key; the
other functions verify with the public key, without calling auth.

Signing stays with PyJWT (one token per login, behind a bcrypt check).
Verification is written here instead: every buyer of a crowd's first press
brings a token never seen before, PyJWT's generic path costs a good part of a
verification on top of the Ed25519 check, and libsodium (PyNaCl) does that
check in less time than OpenSSL (``python -m bench.tokens``). Accepting one
algorithm and one key keeps the code short and strict.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from shared import strict_json
from shared.errors import Unauthorized
from shared.settings import Settings
from shared.ttlcache import TTLCache

VERIFIED_CACHE_SIZE = 20_000
# Authorization headers parsed lately, and how long one is kept: a loser pressing Buy again is refused
# from memory without parsing their token again (23 us a press, measured). A parsed token is only its
# decoded parts, not a verdict: verification still checks it, and a header that fails to parse is not kept.
# Anyone can fill it (the signature is not checked yet), so what one entry may hold is bounded below:
# MAX_TOKEN_CHARS, plain claims only, and headers no longer than a token and its scheme.
PARSED_CACHE_SIZE = 4_096
PARSED_SECONDS = 60.0
ALGORITHM = "EdDSA"  # the only algorithm accepted: no "none", no HS256 key confusion
LEEWAY_SECONDS = 5  # clock skew between auth and the other functions
# The longest token auth mints is 780 characters: the longest email validation accepts (254) with
# the default issuer and audience; an ordinary one is ~460. 1,024 leaves ~180 bytes of claims for a
# longer JWT_ISSUER or JWT_AUDIENCE (TokenSigner.issue refuses to mint past it). The cap bounds
# what an unauthenticated request can make this process decode, and keep, before its signature is checked.
MAX_TOKEN_CHARS = 1_024
MAX_HEADER_CHARS = len("Bearer ") + MAX_TOKEN_CHARS  # longer (padded with spaces) still parses, but is not kept
SIGNATURE_BYTES = 64
# What a token may carry, all plain values: the claims auth writes (TokenSigner.issue) and the
# header PyJWT writes. Anything else (another claim, an object, a list where a string is due) is no
# token of ours, and is refused when parsed, before it is kept: a payload of nested empty lists cost
# ~140 KB of objects per 4 KB header.
HEADER_FIELDS = frozenset({"alg", "kid", "typ"})  # strings
STRING_CLAIMS = frozenset({"sub", "iss", "email", "jti"})
NUMBER_CLAIMS = frozenset({"exp", "iat", "nbf"})  # a JSON number, never a boolean or infinity
MAX_AUDIENCES = 4  # "aud": a string, or a list of 1 to 4 strings (RFC 7519 allows either)

# Compact JWS: three base64url segments (RFC 7515 §7.1), unpadded, ASCII only.
_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)")
# The last character of an unpadded segment whose unused low bits are zero
# (RFC 4648 §3.5): any other spelling is a second encoding of the same bytes.
_LAST_OF_TWO = frozenset("AQgw")
_LAST_OF_THREE = frozenset("AEIMQUYcgkosw048")

BEARER_HINT = "send Authorization: Bearer <token>"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def generate_keypair(directory: Path) -> tuple[Path, Path]:
    """Write a new signing key and its public key as PEM files (private one 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private = directory / "signing.pem"
    public = directory / "signing.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@dataclass(frozen=True)
class Claims:
    subject: str
    email: str | None
    expires_at: int


@dataclass(frozen=True, slots=True, eq=False)
class BearerToken:
    """A token split and decoded, its signature not yet checked.

    ``unverified_subject`` is whoever the token claims to be: good enough to
    refuse early (a buyer already served, a sale sold out), never to sell.
    """

    raw: str = field(repr=False)
    unverified_subject: str
    header: dict[str, Any] = field(repr=False)
    payload: dict[str, Any] = field(repr=False)
    signature: bytes = field(repr=False)

    @property
    def signing_input(self) -> bytes:
        """The exact ``header.payload`` bytes the signature covers: made when checked, not kept (the parsed cache holds many)."""
        return self.raw[: self.raw.rindex(".")].encode("ascii")


def _segment_bytes(segment: str) -> bytes:
    """Strict unpadded base64url; the alphabet is already checked by ``_COMPACT``."""
    tail = len(segment) % 4
    if tail == 1 or (tail == 2 and segment[-1] not in _LAST_OF_TWO) or (tail == 3 and segment[-1] not in _LAST_OF_THREE):
        raise ValueError("not canonical base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-tail % 4))


def _json_object(segment: str) -> dict[str, Any]:
    value = strict_json.DECODER.decode(_segment_bytes(segment).decode("utf-8"))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _plain_header(header: dict[str, Any]) -> bool:
    return all(name in HEADER_FIELDS and type(value) is str for name, value in header.items())


# The type of each claim as we write it: one dict lookup and one comparison a claim on the way through.
_WRITTEN_AS = {name: str for name in STRING_CLAIMS} | {name: int for name in NUMBER_CLAIMS} | {"aud": str}


def _plain_claims(payload: dict[str, Any]) -> bool:
    """Only the claims we write, each a plain value of its type (``STRING_CLAIMS``, ``NUMBER_CLAIMS``, ``aud``)."""
    return all(type(value) is _WRITTEN_AS.get(name) or _plain_otherwise(name, value) for name, value in payload.items())


def _plain_otherwise(name: str, value: object) -> bool:
    """A claim not written as we write it, yet plain: a finite float for a number, a short list of strings for ``aud``."""
    if name in NUMBER_CLAIMS:
        return type(value) is float and math.isfinite(value)
    if name == "aud":
        return type(value) is list and 0 < len(value) <= MAX_AUDIENCES and all(type(one) is str for one in value)
    return False


def parse_token(raw: str) -> BearerToken:
    """Split and decode a compact JWT without checking its signature.

    Raises ``Unauthorized("token invalid")`` for anything that is not three
    strict base64url segments, at most ``MAX_TOKEN_CHARS`` in all, with
    JSON-object header and payload holding only plain values of the fields
    we write (``HEADER_FIELDS``, ``STRING_CLAIMS``, ``NUMBER_CLAIMS``, ``aud``)
    and a string ``sub`` (``"token has no subject"`` when it is empty); a
    well-formed forgery parses, and ``TokenVerifier.check`` refuses it.
    """
    matched = _COMPACT.fullmatch(raw) if len(raw) <= MAX_TOKEN_CHARS else None
    if matched is None:
        raise Unauthorized("token invalid")
    header_segment, payload_segment, signature_segment = matched.groups()
    try:
        header = _json_object(header_segment)
        payload = _json_object(payload_segment)
        signature = _segment_bytes(signature_segment)
    except (ValueError, RecursionError) as exc:  # binascii, UTF-8 and JSON errors are ValueErrors
        raise Unauthorized("token invalid") from exc
    if not _plain_header(header) or not _plain_claims(payload):
        raise Unauthorized("token invalid")
    subject = payload.get("sub")
    if not isinstance(subject, str):
        raise Unauthorized("token invalid")
    if not subject:
        raise Unauthorized("token has no subject")
    return BearerToken(raw, subject, header, payload, signature)


def parse_bearer(authorization: str | None) -> BearerToken:
    """``parse_token`` on the token of an ``Authorization: Bearer`` header."""
    if not authorization:
        raise Unauthorized(BEARER_HINT)
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(BEARER_HINT)
    return parse_token(token)


def _number(value: object) -> float | None:
    """A JSON number (never a bool, string or infinity), else None."""
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return value
    return None


def _checked_claims(payload: dict[str, Any], issuer: str, audience: str, now: float) -> Claims:
    """The registered claims, checked in PyJWT's order so a token gets the message it got before."""
    exp, iat, nbf = _number(payload.get("exp")), _number(payload.get("iat")), payload.get("nbf")
    if exp is None or iat is None or payload.get("iss") is None or not payload.get("aud"):
        raise Unauthorized("token invalid")  # required, and numbers where numbers are due
    if iat > now + LEEWAY_SECONDS:
        raise Unauthorized("token invalid")  # issued in the future
    if "nbf" in payload and ((nbf := _number(nbf)) is None or nbf > now + LEEWAY_SECONDS):
        raise Unauthorized("token invalid")
    if exp <= now - LEEWAY_SECONDS:
        raise Unauthorized("token expired")
    if payload["iss"] != issuer:
        raise Unauthorized("token invalid")
    aud = payload["aud"]
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(one, str) for one in audiences) or audience not in audiences:
        raise Unauthorized("token invalid")
    if "jti" in payload and not isinstance(payload["jti"], str):
        raise Unauthorized("token invalid")
    email = payload.get("email")
    return Claims(payload["sub"], email if isinstance(email, str) else None, int(exp))


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # On the wall clock, as exp is: a token is never answered from here past its own exp.
        self._verified: TTLCache[str, Claims] = TTLCache(VERIFIED_CACHE_SIZE, clock=time.time)
        self._parsed: TTLCache[str, BearerToken] = TTLCache(PARSED_CACHE_SIZE)

    @cached_property
    def public_key(self) -> Ed25519PublicKey:
        try:
            key = serialization.load_pem_public_key(Path(self.settings.jwt_public_key_file).read_bytes())
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot read the public key at JWT_PUBLIC_KEY_FILE: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise RuntimeError("JWT_PUBLIC_KEY_FILE must hold an Ed25519 public key")
        return key

    @cached_property
    def public_raw(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @cached_property
    def key_id(self) -> str:
        # RFC 7638 thumbprint: stable for a key, changes when the key rotates.
        canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64url(self.public_raw)}, separators=(",", ":"))
        return _b64url(hashlib.sha256(canonical.encode()).digest())

    @cached_property
    def _sodium_key(self) -> VerifyKey:
        return VerifyKey(self.public_raw)

    def _signed_by_us(self, token: BearerToken) -> bool:
        """The Ed25519 check over the exact ``header.payload`` bytes, by libsodium."""
        try:
            self._sodium_key.verify(token.signing_input, token.signature)
        except BadSignatureError:
            return False
        return True

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [{"kty": "OKP", "crv": "Ed25519", "x": _b64url(self.public_raw), "kid": self.key_id, "alg": ALGORITHM, "use": "sig"}]
        }

    def check(self, token: BearerToken) -> Claims:
        """Every check on a parsed token, signature included; no cache."""
        header = token.header
        if header.get("alg") != ALGORITHM:
            raise Unauthorized("token algorithm not accepted")
        if header.get("kid") != self.key_id:
            raise Unauthorized("token signed by an unknown key")
        if "crit" in header:
            raise Unauthorized("token invalid")  # we understand no extension, so none may be critical
        if len(token.signature) != SIGNATURE_BYTES or not self._signed_by_us(token):
            raise Unauthorized("token invalid")
        return _checked_claims(token.payload, self.settings.jwt_issuer, self.settings.jwt_audience, time.time())

    def verify(self, token: str) -> Claims:
        """Parse and check a raw token; no cache."""
        return self.check(parse_token(token))

    def verify_token(self, token: BearerToken) -> Claims:
        """``check``, remembering tokens already verified until they expire.

        A buyer who presses Buy again, or polls their orders, carries the same
        token: its signature need not be checked twice. Only valid tokens are
        kept (keyed by the whole token, so a tampered one never matches), and
        the expiry is checked on every hit.
        """
        return self._verified.get(token.raw) or self._remember(token.raw, self.check(token))

    def bearer(self, authorization: str | None) -> BearerToken:
        """``parse_bearer``, remembering the headers parsed lately (keyed by the whole header).

        Only headers that parse, and no longer than ``MAX_HEADER_CHARS``: an entry costs a few KB at
        most, so the whole cache stays within a few MB whatever strangers send.
        """
        if authorization is not None and (token := self._parsed.get(authorization)) is not None:
            return token
        token = parse_bearer(authorization)
        if authorization is not None and len(authorization) <= MAX_HEADER_CHARS:
            self._parsed.set(authorization, token, PARSED_SECONDS)
        return token

    def from_header(self, authorization: str | None) -> Claims:
        """``parse_bearer`` then ``verify_token``."""
        return self.verify_token(parse_bearer(authorization))

    def _remember(self, raw: str, claims: Claims) -> Claims:
        # Bounded: a flood of distinct tokens costs a re-verify, never memory.
        self._verified.set_until(raw, claims, claims.expires_at)
        return claims


class TokenSigner(TokenVerifier):
    @cached_property
    def private_key(self) -> Ed25519PrivateKey:
        try:
            key = serialization.load_pem_private_key(Path(self.settings.jwt_private_key_file).read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot read the signing key at JWT_PRIVATE_KEY_FILE: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise RuntimeError("JWT_PRIVATE_KEY_FILE must hold an Ed25519 private key")
        return key

    @cached_property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def issue(self, user_id: str, email: str, *, ttl_seconds: int | None = None) -> tuple[str, int]:
        ttl = ttl_seconds or self.settings.token_ttl_seconds
        now = int(time.time())
        claims = {
            "sub": user_id,
            "email": email,
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self.private_key, algorithm=ALGORITHM, headers={"kid": self.key_id})
        if len(token) > MAX_TOKEN_CHARS:  # every verifier would refuse it: fail here, loudly, not as 401s at the sale
            raise RuntimeError(f"a token of {len(token)} characters is over MAX_TOKEN_CHARS; shorten JWT_ISSUER or JWT_AUDIENCE")
        return token, ttl
