"""Every forged, stale or foreign token is a 401 Unauthorized, never accepted, never a crash."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.errors import Unauthorized
from shared.settings import Settings
from shared.tokens import TokenSigner, TokenVerifier


@pytest.fixture
def settings(keys: tuple[Path, Path]) -> Settings:
    return Settings.from_env({"JWT_PRIVATE_KEY_FILE": str(keys[0]), "JWT_PUBLIC_KEY_FILE": str(keys[1])})


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {"sub": "user-1", "iss": "flashsale", "aud": "flashsale", "iat": now, "nbf": now, "exp": now + 60}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(settings: Settings, payload: dict[str, object], **headers: object) -> str:
    signer = TokenSigner(settings)
    return jwt.encode(payload, signer.private_key, algorithm="EdDSA", headers={"kid": signer.key_id, **headers})


def test_a_real_token_verifies(settings: Settings) -> None:
    token, ttl = TokenSigner(settings).issue("user-1", "a@example.com")
    verified = TokenVerifier(settings).verify(token)
    assert verified.subject == "user-1" and ttl == settings.token_ttl_seconds


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def forged(settings: Settings, case: str) -> str:
    verifier = TokenVerifier(settings)
    if case == "alg none":
        return f"{_b64({'alg': 'none', 'kid': verifier.key_id})}.{_b64(claims())}."
    if case == "HS256 with the public key":
        public_pem = Path(settings.jwt_public_key_file).read_bytes()
        header = _b64({"alg": "HS256", "typ": "JWT", "kid": verifier.key_id})
        body = _b64(claims())
        import hashlib
        import hmac

        mac = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
        return f"{header}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    if case == "unknown kid":
        return sign(settings, claims(), kid="someone-else")
    if case == "another key with our kid":
        other = Ed25519PrivateKey.generate()
        return jwt.encode(claims(), other, algorithm="EdDSA", headers={"kid": verifier.key_id})
    if case == "expired":
        return sign(settings, claims(exp=int(time.time()) - 60))
    if case == "not yet valid":
        return sign(settings, claims(nbf=int(time.time()) + 600))
    if case == "wrong issuer":
        return sign(settings, claims(iss="evil"))
    if case == "wrong audience":
        return sign(settings, claims(aud="other-service"))
    if case == "missing subject":
        return sign(settings, claims(sub=None))
    if case == "empty subject":
        return sign(settings, claims(sub=""))
    if case == "missing exp":
        return sign(settings, claims(exp=None))
    if case == "tampered payload":
        header, _, signature = sign(settings, claims()).split(".")
        return f"{header}.{_b64(claims(sub='admin'))}.{signature}"
    if case == "garbage":
        return "eyJhbGciOi.not-base64!.x"
    raise AssertionError(case)


CASES = [
    "alg none", "HS256 with the public key", "unknown kid", "another key with our kid", "expired", "not yet valid",
    "wrong issuer", "wrong audience", "missing subject", "empty subject", "missing exp", "tampered payload", "garbage",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_forged_and_invalid_tokens_are_refused(settings: Settings, case: str) -> None:
    with pytest.raises(Unauthorized):
        TokenVerifier(settings).verify(forged(settings, case))


def test_key_id_is_the_rfc7638_thumbprint(settings: Settings) -> None:
    verifier = TokenVerifier(settings)
    key = verifier.jwks()["keys"][0]
    assert key["kid"] == verifier.key_id and key["alg"] == "EdDSA" and key["crv"] == "Ed25519"
    assert "d" not in key  # never the private part
    raw = serialization.load_pem_public_key(Path(settings.jwt_public_key_file).read_bytes())
    assert raw is not None


def test_a_verified_token_is_remembered_until_it_expires(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = TokenVerifier(settings)
    token = sign(settings, claims(exp=int(time.time()) + 30))
    assert verifier.from_header(f"Bearer {token}").subject == "user-1"
    checks = {"n": 0}
    real = verifier.verify

    def counting(t: str):  # type: ignore[no-untyped-def]
        checks["n"] += 1
        return real(t)

    monkeypatch.setattr(verifier, "verify", counting)
    verifier.from_header(f"Bearer {token}")
    assert checks["n"] == 0  # remembered: no second signature check
    with pytest.raises(Unauthorized):
        verifier.from_header(f"Bearer {forged(settings, 'tampered payload')}")
    assert checks["n"] == 1
    later = time.time() + 31
    monkeypatch.setattr(time, "time", lambda: later)
    verifier.from_header(f"Bearer {token}")
    assert checks["n"] == 2  # past its expiry the cache no longer answers; verify() decides (and refuses expired tokens)
