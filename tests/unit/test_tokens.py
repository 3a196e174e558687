"""Every forged, stale or foreign token is a 401 Unauthorized, never accepted, never a crash.

The forgeries below are signed with our own key wherever they can be, so that
only the check a case names stands between it and a sale: remove that check
and its case fails.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import tracemalloc
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared import tokens, validation
from shared.errors import Unauthorized
from shared.settings import Settings
from shared.tokens import (
    MAX_HEADER_CHARS,
    MAX_TOKEN_CHARS,
    PARSED_CACHE_SIZE,
    BearerToken,
    Claims,
    TokenSigner,
    TokenVerifier,
    parse_bearer,
    parse_token,
)

INVALID = "^token invalid$"
EXPIRED = "^token expired$"
ALGORITHM = "^token algorithm not accepted$"
UNKNOWN_KEY = "^token signed by an unknown key$"
NO_SUBJECT = "^token has no subject$"
SEND_BEARER = r"^send Authorization: Bearer <token>$"


@pytest.fixture
def settings(keys: tuple[Path, Path]) -> Settings:
    return Settings.from_env({"JWT_PRIVATE_KEY_FILE": str(keys[0]), "JWT_PUBLIC_KEY_FILE": str(keys[1])})


@pytest.fixture
def verifier(settings: Settings) -> TokenVerifier:
    return TokenVerifier(settings)


@pytest.fixture
def signer(settings: Settings) -> TokenSigner:
    return TokenSigner(settings)


def claims(**overrides: object) -> dict[str, object]:
    """Valid claims; an override of None removes the claim."""
    now = int(time.time())
    base: dict[str, object] = {"sub": "user-1", "iss": "flashsale", "aud": "flashsale", "iat": now, "nbf": now, "exp": now + 60}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64json(data: object) -> str:
    return b64(json.dumps(data).encode())


def sign(signer: TokenSigner, payload: dict[str, object], **headers: object) -> str:
    """A token PyJWT signs with our key; ``headers`` add to or override kid."""
    return jwt.encode(payload, signer.private_key, algorithm="EdDSA", headers={"kid": signer.key_id, **headers})


def sign_segments(signer: TokenSigner, header: str, payload: str) -> str:
    """Our key's signature over whatever two segments are given, however odd."""
    return f"{header}.{payload}.{b64(signer.private_key.sign(f'{header}.{payload}'.encode()))}"


def sign_json(signer: TokenSigner, header_text: str | bytes, payload_text: str | bytes) -> str:
    """Our key's signature over a header and payload written by hand (duplicate keys, arrays, NaN ...)."""
    as_bytes = [text.encode() if isinstance(text, str) else text for text in (header_text, payload_text)]
    return sign_segments(signer, b64(as_bytes[0]), b64(as_bytes[1]))


def our_header(signer: TokenSigner) -> str:
    return json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": signer.key_id})


def refused(verifier: TokenVerifier, token: str, message: str) -> None:
    with pytest.raises(Unauthorized, match=message):
        verifier.verify(token)


# --- what is accepted ---------------------------------------------------------------------------


def test_a_real_token_verifies(settings: Settings, signer: TokenSigner, verifier: TokenVerifier) -> None:
    token, ttl = signer.issue("user-1", "a@example.com")
    verified = verifier.verify(token)
    assert (verified.subject, verified.email) == ("user-1", "a@example.com") and ttl == settings.token_ttl_seconds
    assert verified.expires_at == jwt.decode(token, options={"verify_signature": False})["exp"]


def test_pyjwt_accepts_what_we_issue(signer: TokenSigner, verifier: TokenVerifier) -> None:
    """Signing stays on PyJWT: its own verify is the reference for the tokens auth hands out."""
    token, _ = signer.issue("user-1", "a@example.com")
    decoded = jwt.decode(token, verifier.public_key, algorithms=["EdDSA"], audience="flashsale", issuer="flashsale")
    assert decoded["sub"] == verifier.verify(token).subject


def test_an_audience_list_holding_ours_is_accepted(signer: TokenSigner, verifier: TokenVerifier) -> None:
    assert verifier.verify(sign(signer, claims(aud=["billing", "flashsale"]))).subject == "user-1"


def test_clock_skew_within_the_leeway_is_accepted(signer: TokenSigner, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch) -> None:
    now = int(time.time())
    monkeypatch.setattr(time, "time", lambda: now + 0.5)  # a slow machine must not push exp past the leeway
    assert verifier.verify(sign(signer, claims(exp=now - 2, iat=now - 60, nbf=now + 2))).expires_at == now - 2
    assert verifier.verify(sign(signer, claims(nbf=None))).subject == "user-1"  # nbf is optional


def test_a_float_expiry_is_a_number_like_any_other(signer: TokenSigner, verifier: TokenVerifier) -> None:
    exp = time.time() + 60.5
    assert verifier.verify(sign(signer, claims(exp=exp))).expires_at == int(exp)


# --- the header -----------------------------------------------------------------------------------


def test_alg_none_is_refused(signer: TokenSigner, verifier: TokenVerifier) -> None:
    refused(verifier, f"{b64json({'alg': 'none', 'kid': signer.key_id})}.{b64json(claims())}.", ALGORITHM)


def test_hs256_keyed_with_our_public_key_is_refused(settings: Settings, signer: TokenSigner, verifier: TokenVerifier) -> None:
    header = b64json({"alg": "HS256", "typ": "JWT", "kid": signer.key_id})
    payload = b64json(claims())
    for secret in (Path(settings.jwt_public_key_file).read_bytes(), verifier.public_raw):
        mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        refused(verifier, f"{header}.{payload}.{b64(mac)}", ALGORITHM)


@pytest.mark.parametrize("alg", ["eddsa", "EdDSA ", "Ed25519", "ES256", None])
def test_only_the_exact_alg_eddsa_is_accepted(signer: TokenSigner, verifier: TokenVerifier, alg: object) -> None:
    # Signed with our key: without the allow-list the signature would pass.
    header = json.dumps({"kid": signer.key_id} | ({} if alg is None else {"alg": alg}))
    refused(verifier, sign_json(signer, header, json.dumps(claims())), ALGORITHM)


@pytest.mark.parametrize("kid", ["someone-else", None])
def test_a_kid_other_than_ours_is_refused(signer: TokenSigner, verifier: TokenVerifier, kid: object) -> None:
    header = {"alg": "EdDSA"} | ({} if kid is None else {"kid": kid})
    refused(verifier, sign_json(signer, json.dumps(header), json.dumps(claims())), UNKNOWN_KEY)


@pytest.mark.parametrize(
    "extra",
    [{"alg": ["EdDSA"]}, {"kid": 7}, {"typ": {"JWT": True}}, {"jku": "https://example.com/keys"}, {"x": None}],
    ids=["alg a list", "kid a number", "typ an object", "another field", "a null field"],
)
def test_a_header_of_anything_but_our_string_fields_is_refused_when_parsed(signer: TokenSigner, extra: dict[str, object]) -> None:
    # Signed with our key: only the parse's rule stands between it and a sale.
    header = json.dumps({"alg": "EdDSA", "kid": signer.key_id, "typ": "JWT"} | extra)
    with pytest.raises(Unauthorized, match=INVALID):
        parse_token(sign_json(signer, header, json.dumps(claims())))


def test_another_key_under_our_kid_is_refused(verifier: TokenVerifier) -> None:
    other = Ed25519PrivateKey.generate()
    refused(verifier, jwt.encode(claims(), other, algorithm="EdDSA", headers={"kid": verifier.key_id}), INVALID)


@pytest.mark.parametrize("crit", [["exp"], ["b64"], []])
def test_a_crit_header_is_refused(signer: TokenSigner, verifier: TokenVerifier, crit: list[str]) -> None:
    header = json.dumps({"alg": "EdDSA", "kid": signer.key_id, "crit": crit, "exp": 0, "b64": True})
    refused(verifier, sign_json(signer, header, json.dumps(claims())), INVALID)


def test_a_duplicate_header_key_is_refused(signer: TokenSigner, verifier: TokenVerifier) -> None:
    header = f'{{"alg": "none", "alg": "EdDSA", "kid": "{signer.key_id}"}}'
    refused(verifier, sign_json(signer, header, json.dumps(claims())), INVALID)


# --- the signature --------------------------------------------------------------------------------


def test_a_tampered_payload_is_refused(signer: TokenSigner, verifier: TokenVerifier) -> None:
    header, _, signature = sign(signer, claims()).split(".")
    refused(verifier, f"{header}.{b64json(claims(sub='admin'))}.{signature}", INVALID)


def test_a_tampered_signature_is_refused(signer: TokenSigner, verifier: TokenVerifier) -> None:
    header, payload, signature = sign(signer, claims()).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[10] ^= 1
    refused(verifier, f"{header}.{payload}.{b64(bytes(raw))}", INVALID)
    refused(verifier, f"{header}.{payload}.{b64(bytes(raw[:63]))}", INVALID)  # too short
    refused(verifier, f"{header}.{payload}.", INVALID)


def test_the_signature_covers_the_exact_bytes_not_the_json(signer: TokenSigner, verifier: TokenVerifier) -> None:
    header, payload, signature = sign(signer, claims()).split(".")
    same_json = b64(json.dumps(json.loads(base64.urlsafe_b64decode(header + "==")), indent=1).encode())
    assert same_json != header
    refused(verifier, f"{same_json}.{payload}.{signature}", INVALID)


# --- the claims -----------------------------------------------------------------------------------


class FromNow(int):
    """Seconds from the moment the test runs (parameters are built at collection, maybe minutes earlier)."""


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"exp": FromNow(-6)}, EXPIRED, id="expired beyond the leeway"),
        pytest.param({"exp": None}, INVALID, id="no exp"),
        pytest.param({"exp": "9999999999"}, INVALID, id="exp a string"),
        pytest.param({"exp": True}, INVALID, id="exp a boolean"),
        pytest.param({"nbf": FromNow(60)}, INVALID, id="nbf beyond the leeway"),
        pytest.param({"nbf": "0"}, INVALID, id="nbf a string"),
        pytest.param({"iat": None}, INVALID, id="no iat"),
        pytest.param({"iat": "0"}, INVALID, id="iat a string"),
        pytest.param({"iat": FromNow(600)}, INVALID, id="iat in the future"),
        pytest.param({"iss": None}, INVALID, id="no iss"),
        pytest.param({"iss": "evil"}, INVALID, id="wrong iss"),
        pytest.param({"aud": None}, INVALID, id="no aud"),
        pytest.param({"aud": "other-service"}, INVALID, id="wrong aud"),
        pytest.param({"aud": ["other-service"]}, INVALID, id="aud list without ours"),
        pytest.param({"aud": ["flashsale", 1]}, INVALID, id="aud list with a non-string"),
        pytest.param({"aud": {"flashsale": True}}, INVALID, id="aud an object"),
        pytest.param({"jti": 5}, INVALID, id="jti not a string"),
        pytest.param({"sub": None}, INVALID, id="no sub"),
        pytest.param({"sub": 42}, INVALID, id="sub not a string"),
        pytest.param({"sub": ""}, NO_SUBJECT, id="empty sub"),
    ],
)
def test_claims_are_checked(signer: TokenSigner, verifier: TokenVerifier, overrides: dict[str, object], message: str) -> None:
    now = int(time.time())
    resolved = {name: now + value if isinstance(value, FromNow) else value for name, value in overrides.items()}
    refused(verifier, sign(signer, claims(**resolved)), message)


@pytest.mark.parametrize("exp", ["1e400", "-1e400", "NaN", "Infinity"])
def test_an_expiry_that_is_no_finite_number_is_refused(signer: TokenSigner, verifier: TokenVerifier, exp: str) -> None:
    payload = json.dumps(claims(exp=None))[:-1] + f', "exp": {exp}}}'
    refused(verifier, sign_json(signer, our_header(signer), payload), INVALID)


def test_a_duplicate_claim_is_refused(signer: TokenSigner, verifier: TokenVerifier) -> None:
    # Parsers disagree on which "aud" wins; we take neither.
    payload = json.dumps(claims(aud="other-service"))[:-1] + ', "aud": "flashsale"}'
    refused(verifier, sign_json(signer, our_header(signer), payload), INVALID)


# --- the encoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload_text",
    [b"not json", b"[1, 2]", b'"user-1"', b"null", b"\xff\xfe{}", b"\xef\xbb\xbf{}", json.dumps(claims()).encode("utf-16")],
    ids=["not JSON", "JSON array", "JSON string", "JSON null", "not UTF-8", "UTF-8 BOM", "UTF-16"],
)
def test_a_payload_that_is_no_json_object_is_refused(signer: TokenSigner, verifier: TokenVerifier, payload_text: bytes) -> None:
    refused(verifier, sign_json(signer, our_header(signer), payload_text), INVALID)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_constants_that_are_not_json_are_refused(signer: TokenSigner, verifier: TokenVerifier, constant: str) -> None:
    payload = json.dumps(claims())[:-1] + f', "score": {constant}}}'
    refused(verifier, sign_json(signer, our_header(signer), payload), INVALID)


def test_a_header_that_is_no_json_object_is_refused(signer: TokenSigner, verifier: TokenVerifier) -> None:
    refused(verifier, sign_json(signer, json.dumps(["EdDSA"]), json.dumps(claims())), INVALID)


def test_deeply_nested_json_is_refused_not_a_crash(signer: TokenSigner, verifier: TokenVerifier) -> None:
    payload = '{"sub": "user-1", "x": ' + "[" * 290 + "]" * 290 + "}"  # as deep as MAX_TOKEN_CHARS holds
    token = sign_json(signer, our_header(signer), payload)
    assert len(token) < MAX_TOKEN_CHARS
    refused(verifier, token, INVALID)


def test_an_oversized_token_is_refused_before_decoding(signer: TokenSigner, verifier: TokenVerifier) -> None:
    token = sign(signer, claims(email="x" * MAX_TOKEN_CHARS))
    refused(verifier, token, INVALID)


# --- what a token may hold: plain values, and no more than ours ------------------------------------------

LONGEST_EMAIL = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"  # validation's longest: 254, labels of 63


def test_the_longest_token_auth_mints_fits_the_limit(settings: Settings, signer: TokenSigner, verifier: TokenVerifier) -> None:
    """Bug caught: a limit below what auth mints for the longest email it registers (254 characters), which
    would turn that buyer's every press into a 401."""
    credentials = validation.credentials({"email": LONGEST_EMAIL, "password": "x" * 12}, checking_strength=False)
    assert len(LONGEST_EMAIL) == 254 and credentials.email == LONGEST_EMAIL
    token, _ = signer.issue(uuid.uuid4().hex, LONGEST_EMAIL)
    assert verifier.verify(token).email == LONGEST_EMAIL
    ordinary, _ = signer.issue(uuid.uuid4().hex, "ada@example.com")
    assert len(ordinary) < len(token) < MAX_TOKEN_CHARS


def test_a_token_over_the_limit_is_never_minted(keys: tuple[Path, Path]) -> None:
    """Bug caught: an issuer name long enough that every token auth mints is one the other functions refuse."""
    env = {"JWT_PRIVATE_KEY_FILE": str(keys[0]), "JWT_PUBLIC_KEY_FILE": str(keys[1]), "JWT_ISSUER": "i" * 400}
    with pytest.raises(RuntimeError, match="MAX_TOKEN_CHARS"):
        TokenSigner(Settings.from_env(env)).issue("user-1", LONGEST_EMAIL)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"x": [[]] * 40}, id="another claim, of nested lists"),
        pytest.param({"role": "admin"}, id="another claim, a string"),
        pytest.param({"email": {"a": "b"}}, id="email an object"),
        pytest.param({"email": None}, id="email null"),
        pytest.param({"jti": ["a"]}, id="jti a list"),
        pytest.param({"iss": ["flashsale"]}, id="iss a list"),
        pytest.param({"exp": [1]}, id="exp a list"),
        pytest.param({"iat": False}, id="iat a boolean"),
        pytest.param({"aud": ["flashsale", ["x"]]}, id="aud holding a list"),
        pytest.param({"aud": ["flashsale", "a", "b", "c", "d"]}, id="aud of five"),
        pytest.param({"aud": []}, id="aud empty"),
    ],
)
def test_a_claim_that_is_not_a_plain_value_of_ours_is_refused_when_parsed(signer: TokenSigner, overrides: dict[str, object]) -> None:
    # Signed with our key: only the parse's rule stands between it and being kept, unverified, in the parsed cache.
    payload = claims() | {name: value for name, value in overrides.items()}
    with pytest.raises(Unauthorized, match=INVALID):
        parse_token(sign_json(signer, our_header(signer), json.dumps(payload)))


def test_plain_claims_of_ours_parse(signer: TokenSigner) -> None:
    """The other side of the rule above: every claim auth writes, float times, and an audience list of four."""
    payload = claims(email="a@example.com", jti="j", exp=time.time() + 60.5, aud=["a", "b", "c", "flashsale"])
    assert parse_token(sign(signer, payload)).payload == payload


def largest_forgery(n: int) -> str:
    """A header of plain claims as large as MAX_TOKEN_CHARS allows, under a signature that is not ours."""
    header = b64json({"alg": "EdDSA", "kid": "k" * 43, "typ": "JWT"})
    signature = b64(os.urandom(64))
    room = (MAX_TOKEN_CHARS - len(header) - len(signature) - 2) * 3 // 4
    payload = {"sub": f"stranger-{n}", "iss": "", "email": "", "jti": "", "aud": ["", "", "", ""], "exp": 0, "iat": 0, "nbf": 0}
    payload["email"] = "e" * (room - len(json.dumps(payload, separators=(",", ":"))))
    token = f"{header}.{b64(json.dumps(payload, separators=(',', ':')).encode())}.{signature}"
    assert MAX_TOKEN_CHARS - 4 <= len(token) <= MAX_TOKEN_CHARS
    return "Bearer " + token


def test_a_full_parsed_cache_of_the_largest_forgeries_stays_within_its_bound(verifier: TokenVerifier) -> None:
    """Bug caught: a parsed header kept whatever it held (a payload of nested empty lists, ~140 KB of objects per
    4 KB header, 4,096 of them for 60 s): any caller could take a worker's memory before its signature was checked.
    The bound: PARSED_CACHE_SIZE entries of at most ~4.4 KB each (measured), 1.5 times what real tokens take."""
    headers = [largest_forgery(n) for n in range(PARSED_CACHE_SIZE)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for header in headers:
            verifier.bearer(header[:7] + header[7:])  # a fresh string, as each request's header is, kept as the key
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(verifier._parsed) == PARSED_CACHE_SIZE
    assert kept <= PARSED_CACHE_SIZE * 5 * 1024, f"{kept / PARSED_CACHE_SIZE:.0f} bytes an entry"


def test_a_header_padded_past_a_token_is_answered_but_not_kept(signer: TokenSigner, verifier: TokenVerifier) -> None:
    """Bug caught: spaces after "Bearer" (8 KB of them fit in a header) made every kept entry as large as the header."""
    raw, _ = signer.issue("user-7", "u7@example.com")
    padded = "Bearer" + " " * MAX_HEADER_CHARS + raw
    assert verifier.bearer(padded).unverified_subject == "user-7"
    assert padded not in verifier._parsed.entries and len(verifier._parsed) == 0
    assert verifier.bearer(f"Bearer {raw}") is verifier.bearer(f"Bearer {raw}")  # an ordinary one is kept


def base64_variants(token: str) -> dict[str, str]:
    """Spellings of a valid token's segments that a lenient base64 decoder reads as the same bytes."""
    header, payload, signature = token.split(".")
    last_bits = {"A": "B", "Q": "R", "g": "h", "w": "x"}[signature[-1]]  # 64 bytes: the last char has 4 unused bits
    return {
        "padded signature": f"{header}.{payload}.{signature}==",
        "non-canonical last character": f"{header}.{payload}.{signature[:-1]}{last_bits}",
        "a character outside base64url": f"{header}.{payload}.{signature[:-1]}!",
        "the standard alphabet": f"{header}.{payload}.{signature.replace('-', '+').replace('_', '/')}",
        "whitespace inside": f"{header}.{payload}.{signature[:40]} {signature[40:]}",
        "a length of 4n+1": f"{header}.{payload}.{signature}AAA",
        "non-ASCII digits": f"{header}.{payload}.{signature[:-2]}\uff10{signature[-1]}",
        "a fourth segment": f"{token}.AAAA",
        "two segments": f"{header}.{payload}",
    }


@pytest.mark.parametrize(
    "variant",
    [
        "padded signature",
        "non-canonical last character",
        "a character outside base64url",
        "the standard alphabet",
        "whitespace inside",
        "a length of 4n+1",
        "non-ASCII digits",
        "a fourth segment",
        "two segments",
    ],
)
def test_base64url_is_read_strictly(signer: TokenSigner, verifier: TokenVerifier, variant: str) -> None:
    # A signature with "-" or "_" in it, so that its standard-alphabet spelling differs.
    signed = (sign(signer, claims(jti=str(n))) for n in range(1000))
    token = next(t for t in signed if {"-", "_"} & set(t.rsplit(".", 1)[1]))
    verifier.verify(token)
    spelled = base64_variants(token)[variant]
    refused(verifier, spelled, INVALID)


def test_signed_padding_in_the_payload_is_refused(signer: TokenSigner, verifier: TokenVerifier) -> None:
    # Signed as written, padding included: only the strict decoding refuses it.
    padded = [base64.urlsafe_b64encode(json.dumps(claims(jti="x" * n)).encode()).decode() for n in range(3)]
    payload = next(p for p in padded if p.endswith("="))
    refused(verifier, sign_segments(signer, b64(our_header(signer).encode()), payload), INVALID)


def test_a_signed_standard_alphabet_payload_is_refused(signer: TokenSigner, verifier: TokenVerifier) -> None:
    for filler in range(64):  # find claims whose encoding needs "+" or "/"
        standard = base64.b64encode(json.dumps(claims(jti="?" * filler + ">")).encode()).rstrip(b"=").decode()
        if "+" in standard or "/" in standard:
            break
    refused(verifier, sign_segments(signer, b64(our_header(signer).encode()), standard), INVALID)


# --- parse_bearer: refuse the malformed before any signature check ---------------------------------------


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ", "Bearer    ", "Basic dXNlcjpwYXNz", "Token abc.def.ghi"])
def test_parse_bearer_asks_for_a_bearer_token(authorization: str | None) -> None:
    with pytest.raises(Unauthorized, match=SEND_BEARER) as raised:
        parse_bearer(authorization)
    assert raised.value.status == 401 and raised.value.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "token",
    [
        "not.a.token",
        "a" * 5000,
        "eyJhbGciOi.not-base64!.x",
        f"{b64json({'alg': 'EdDSA'})}.{b64json(['user-1'])}.",
        f"{b64json({'alg': 'EdDSA'})}.{b64json({'name': 'no subject'})}.",
        f"{b64(b'not json')}.{b64json({'sub': 'user-1'})}.",
        f"{b64json({'alg': 'EdDSA'})}.{b64json({'sub': 'user-1'})}",
    ],
    ids=["not base64 JSON", "one long segment", "bad base64", "array payload", "no sub", "header not JSON", "two segments"],
)
def test_parse_bearer_refuses_a_malformed_token(token: str) -> None:
    with pytest.raises(Unauthorized, match=INVALID):
        parse_bearer(f"Bearer {token}")


def test_a_forged_but_well_formed_token_parses_and_only_verification_refuses_it(verifier: TokenVerifier) -> None:
    forged = jwt.encode(claims(sub="victim"), Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": verifier.key_id})
    token = parse_bearer(f"bearer  {forged} ")
    assert isinstance(token, BearerToken)
    assert (token.raw, token.unverified_subject) == (forged, "victim")
    assert forged not in repr(token)  # a token logged by accident is not a credential handed out
    with pytest.raises(Unauthorized, match=INVALID):
        verifier.verify_token(token)


def test_alg_none_parses_and_verification_refuses_it(signer: TokenSigner, verifier: TokenVerifier) -> None:
    token = parse_token(f"{b64json({'alg': 'none', 'kid': signer.key_id})}.{b64json(claims(sub='victim'))}.")
    assert token.unverified_subject == "victim"
    with pytest.raises(Unauthorized, match=ALGORITHM):
        verifier.verify_token(token)


def test_from_header_is_parse_bearer_then_verify_token(signer: TokenSigner, verifier: TokenVerifier) -> None:
    raw, _ = signer.issue("user-7", "u7@example.com")
    assert verifier.from_header(f"Bearer {raw}") == verifier.verify_token(parse_bearer(f"Bearer {raw}")) == verifier.verify(raw)
    with pytest.raises(Unauthorized, match=SEND_BEARER):
        verifier.from_header(raw)  # no scheme


# --- the cache of verified tokens ---------------------------------------------------------------------------


def test_a_verified_token_is_remembered_until_it_expires(
    signer: TokenSigner, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = sign(signer, claims(exp=int(time.time()) + 30))
    assert verifier.from_header(f"Bearer {token}").subject == "user-1"
    checks = {"n": 0}
    real = verifier.check

    def counting(parsed: BearerToken) -> Claims:
        checks["n"] += 1
        return real(parsed)

    monkeypatch.setattr(verifier, "check", counting)
    verifier.from_header(f"Bearer {token}")
    verifier.verify_token(parse_bearer(f"Bearer {token}"))
    assert checks["n"] == 0  # remembered: no second signature check
    header, _, signature = token.split(".")
    with pytest.raises(Unauthorized):
        verifier.from_header(f"Bearer {header}.{b64json(claims(sub='admin'))}.{signature}")
    assert checks["n"] == 1  # keyed by the whole token: a tampered one is checked, and refused
    monkeypatch.setattr(verifier._verified, "clock", lambda: time.time())  # the cache's clock, made to follow the patches below
    later = time.time() + 31
    monkeypatch.setattr(time, "time", lambda: later)
    verifier.from_header(f"Bearer {token}")
    assert checks["n"] == 2  # past its expiry the cache no longer answers; check() decides (within the leeway, still valid)
    monkeypatch.setattr(time, "time", lambda: later + 10)
    with pytest.raises(Unauthorized, match=EXPIRED):
        verifier.from_header(f"Bearer {token}")


def test_the_jwks_publishes_the_public_key_under_its_rfc7638_thumbprint(verifier: TokenVerifier) -> None:
    key = verifier.jwks()["keys"][0]
    assert key["kid"] == verifier.key_id and key["alg"] == "EdDSA" and key["crv"] == "Ed25519"
    assert "d" not in key  # never the private part
    assert base64.urlsafe_b64decode(key["x"] + "=") == verifier.public_raw
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": key["x"]}, separators=(",", ":")).encode()
    assert key["kid"] == b64(hashlib.sha256(canonical).digest())


def test_a_parsed_header_is_remembered_and_never_stands_for_another(
    signer: TokenSigner, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loser's second press is not parsed again; a remembered parse is no verdict, and a bad header is never remembered."""
    raw, _ = signer.issue("user-7", "u7@example.com")
    first = verifier.bearer(f"Bearer {raw}")
    parses = {"n": 0}
    real = tokens.parse_bearer

    def counting(authorization: str | None) -> BearerToken:
        parses["n"] += 1
        return real(authorization)

    monkeypatch.setattr(tokens, "parse_bearer", counting)
    assert verifier.bearer(f"Bearer {raw}") is first and parses["n"] == 0
    header, _, signature = raw.split(".")
    forged = f"{header}.{b64json(claims(sub='victim'))}.{signature}"
    assert verifier.bearer(f"Bearer {forged}").unverified_subject == "victim" and parses["n"] == 1
    with pytest.raises(Unauthorized):
        verifier.verify_token(verifier.bearer(f"Bearer {forged}"))  # remembered as parsed, still refused
    for _ in range(2):
        with pytest.raises(Unauthorized, match=SEND_BEARER):
            verifier.bearer(raw)  # no scheme: refused each time, never remembered
    assert parses["n"] == 3
