"""What the first press of a crowd costs: verifying an access token never seen before.

``python -m bench.tokens [--tokens N] [--rounds R]`` issues N fresh tokens per
round with ``TokenSigner.issue`` and has each choice verify every one of them
once, the choices taking turns within a round so that a busy neighbour hurts
them alike. It prints the median over the rounds of the µs per token and the
ratio to PyJWT as flashsale used it before. No choice answers from a cache:
``TokenVerifier.verify`` has none, and ``from_header`` meets each token for
the first time.

Before timing, each whole verifier must accept a real token and refuse a
tampered one, so a broken verifier cannot win. joserfc is measured when
installed, not a dependency.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.backends.openssl.backend import backend as openssl
from nacl.signing import VerifyKey

from shared.errors import Unauthorized
from shared.settings import Settings
from shared.tokens import ALGORITHM, BearerToken, TokenSigner, TokenVerifier, generate_keypair, parse_token

Verify = Callable[[str], object]


@dataclass(frozen=True)
class Choice:
    name: str
    verify: Verify
    baseline: bool = False
    part: bool = False  # a part of the work, not a verifier: not asked to refuse a forgery


def pyjwt_as_before(verifier: TokenVerifier) -> Verify:
    """``TokenVerifier.verify`` as it was: PyJWT's decode with every check."""
    settings, key, key_id = verifier.settings, verifier.public_key, verifier.key_id

    def verify(token: str) -> object:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != ALGORITHM or header.get("kid") != key_id:
                raise Unauthorized("token invalid")
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
                leeway=5,
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized("token invalid") from exc
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise Unauthorized("token has no subject")
        return claims

    return verify


class OpenSSLVerifier(TokenVerifier):
    """flashsale's verifier with the Ed25519 check done by ``cryptography`` (OpenSSL) instead of libsodium."""

    def _signed_by_us(self, token: BearerToken) -> bool:
        try:
            self.public_key.verify(token.signature, token.signing_input)
        except InvalidSignature:
            return False
        return True


def joserfc_with_claims(settings: Settings, key_id: str) -> Verify | None:
    try:
        from joserfc import jwt as jose_jwt
        from joserfc.errors import SecurityWarning
        from joserfc.jwk import OKPKey
    except ImportError:
        return None
    warnings.simplefilter("ignore", SecurityWarning)  # RFC 9864 deprecates "EdDSA" for "Ed25519"
    key = OKPKey.import_key(Path(settings.jwt_public_key_file).read_bytes())
    essential = {"essential": True}
    registry = jose_jwt.JWTClaimsRegistry(
        leeway=5,
        iss={"essential": True, "value": settings.jwt_issuer},
        aud={"essential": True, "value": settings.jwt_audience},
        sub=essential,
        exp=essential,
        iat=essential,
    )

    def verify(token: str) -> object:
        try:
            decoded = jose_jwt.decode(token, key, algorithms=[ALGORITHM])
            if decoded.header.get("kid") != key_id:
                raise Unauthorized("token signed by an unknown key")
            registry.validate(decoded.claims)
        except Unauthorized:
            raise
        except Exception as exc:  # joserfc's failures share no one base class
            raise Unauthorized("token invalid") from exc
        return decoded.claims

    return verify


def parse_then_openssl(verifier: TokenVerifier) -> Verify:
    key = verifier.public_key

    def verify(token: str) -> object:
        parsed = parse_token(token)
        key.verify(parsed.signature, parsed.signing_input)
        return parsed

    return verify


def parse_then_libsodium(verifier: TokenVerifier) -> Verify:
    key = VerifyKey(verifier.public_raw)

    def verify(token: str) -> object:
        parsed = parse_token(token)
        key.verify(parsed.signing_input, parsed.signature)
        return parsed

    return verify


def choices(settings: Settings) -> list[Choice]:
    def ready(verifier: TokenVerifier) -> TokenVerifier:
        verifier.key_id  # noqa: B018 - read the key before the clock starts
        return verifier

    kept, openssl_verifier = ready(TokenVerifier(settings)), ready(OpenSSLVerifier(settings))
    found = [
        Choice(f"PyJWT {importlib.metadata.version('pyjwt')} (flashsale before)", pyjwt_as_before(kept), baseline=True),
        Choice("strict, Ed25519 by cryptography (OpenSSL)", openssl_verifier.verify),
        Choice(f"strict, Ed25519 by PyNaCl {importlib.metadata.version('pynacl')} (kept)", kept.verify),
        Choice("  kept, through from_header (cache miss)", lambda token: kept.from_header("Bearer " + token)),
    ]
    jose = joserfc_with_claims(settings, kept.key_id)
    if jose is not None:
        found.append(Choice(f"joserfc {importlib.metadata.version('joserfc')} with its claims registry", jose))
    return found + [
        Choice("part: parse_token alone", parse_token, part=True),
        Choice("part: parse_token + Ed25519 by OpenSSL", parse_then_openssl(kept), part=True),
        Choice("part: parse_token + Ed25519 by libsodium", parse_then_libsodium(kept), part=True),
    ]


def refuses_tampering(choice: Choice, token: str) -> bool:
    header, payload, signature = token.split(".")
    flipped = "B" if payload[-2] == "A" else "A"
    try:
        choice.verify(f"{header}.{payload[:-2]}{flipped}{payload[-1]}.{signature}")
    except Unauthorized:
        return True
    return False


def per_token_us(verify: Verify, tokens: list[str]) -> float:
    started = time.perf_counter()
    for token in tokens:
        verify(token)
    return (time.perf_counter() - started) / len(tokens) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tokens", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2_000, help="fresh tokens per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; the median is printed (default 7)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as keys:
        private, public = generate_keypair(Path(keys))
        settings = Settings.from_env({"JWT_PRIVATE_KEY_FILE": str(private), "JWT_PUBLIC_KEY_FILE": str(public)})
        signer = TokenSigner(settings)
        measured = choices(settings)

        sample = signer.issue("buyer", "buyer@example.com")[0]
        for choice in measured:
            choice.verify(sample)
            if not choice.part and not refuses_tampering(choice, sample):
                raise SystemExit(f"{choice.name} accepted a tampered token")

        results: dict[str, list[float]] = {choice.name: [] for choice in measured}
        for round_no in range(args.rounds):
            tokens = [signer.issue(f"buyer-{round_no}-{i}", f"b{i}@example.com")[0] for i in range(args.tokens)]
            first = round_no % len(measured)
            for choice in measured[first:] + measured[:first]:
                results[choice.name].append(per_token_us(choice.verify, tokens))

    baseline = statistics.median(results[next(c.name for c in measured if c.baseline)])
    print(f"verifying a fresh EdDSA token: {args.tokens} new tokens x {args.rounds} rounds, median µs per token")
    print(f"python {sys.version.split()[0]}, cryptography {importlib.metadata.version('cryptography')} on {openssl.openssl_version_text()}")
    print(f"{'choice':<50} {'µs/token':>9} {'vs PyJWT':>9}")
    for choice in measured:
        us = statistics.median(results[choice.name])
        print(f"{choice.name:<50} {us:>9.1f} {us / baseline:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
