"""Access tokens: EdDSA (Ed25519) JWTs. Only auth holds the private key; the
other functions verify with the public key, without calling auth."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.errors import Unauthorized
from shared.settings import Settings

VERIFIED_CACHE_SIZE = 20_000
ALGORITHM = "EdDSA"  # the only algorithm accepted: no "none", no HS256 key confusion


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


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._verified: dict[str, Claims] = {}

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

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [{"kty": "OKP", "crv": "Ed25519", "x": _b64url(self.public_raw), "kid": self.key_id, "alg": ALGORITHM, "use": "sig"}]
        }

    def verify(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != ALGORITHM:
                raise Unauthorized("token algorithm not accepted")
            if header.get("kid") != self.key_id:
                raise Unauthorized("token signed by an unknown key")
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=[ALGORITHM],
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("token invalid") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("token has no subject")
        return Claims(subject, claims.get("email"), int(claims["exp"]))

    def from_header(self, authorization: str | None) -> Claims:
        if not authorization:
            raise Unauthorized("send Authorization: Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send Authorization: Bearer <token>")
        return self.verify_cached(token.strip())

    def verify_cached(self, token: str) -> Claims:
        """``verify``, remembering tokens already verified until they expire.

        A buyer who presses Buy again, or polls their orders, carries the same
        token: its signature need not be checked twice. Only valid tokens are
        kept (keyed by the whole token, so a tampered one never matches), and
        the expiry is checked on every hit.
        """
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None and cached.expires_at > now:
            return cached
        claims = self.verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()  # bounded: a flood of distinct tokens costs a re-verify, never memory
        self._verified[token] = claims
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
        return token, ttl
