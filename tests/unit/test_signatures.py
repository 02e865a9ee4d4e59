"""RFC 9421 request signatures and RFC 9530 digests: herald.core.signatures and the SDK signer.

Known-answer vectors from RFC 9421 Appendix B.2.5 (hmac-sha256) and B.2.6 (ed25519), every
refusal of ``parse_signature`` with its exact error class, the freshness and digest checks,
and two-way interoperability with the independent ``http_message_signatures`` library.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from types import SimpleNamespace

import http_sf
import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    MappingKeyResolver,
    algorithms,
)
from http_message_signatures import InvalidSignature as LibInvalidSignature
from http_sf.innerlist import ser_innerlist

from herald.client import RequestSigner
from herald.core.signatures import (
    MAX_FIELD_LENGTH,
    ParsedSignature,
    check_content_digest,
    check_freshness,
    content_digest,
    parse_signature,
    signature_base,
    signature_params,
)
from herald.errors import DigestMismatch, RequestExpired, SignatureInvalid, SignatureMissing
from herald.service.signatures import SignedRequest, _component_values

# -- RFC 9421 Appendix B ------------------------------------------------------------------

# B.1.4: the example Ed25519 key "test-key-ed25519".
RFC_ED25519_PRIVATE_PEM = b"""-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF
-----END PRIVATE KEY-----
"""
RFC_ED25519_PUBLIC_PEM = b"""-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=
-----END PUBLIC KEY-----
"""
# B.1.5: the example shared secret "test-shared-secret".
RFC_SHARED_SECRET = base64.b64decode(
    "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="
)

# B.2: the test request (POST /foo?param=Value&Pet=dog, body {"hello": "world"}).
RFC_BODY = b'{"hello": "world"}'
RFC_DIGEST_SHA512 = (
    "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+"
    "TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
)
RFC_VALUES = {
    "@method": "POST",
    "@path": "/foo",
    "@authority": "example.com",
    "date": "Tue, 20 Apr 2021 02:07:55 GMT",
    "content-type": "application/json",
    "content-digest": RFC_DIGEST_SHA512,
    "content-length": "18",
}

# B.2.5
B25_COMPONENTS = ("date", "@authority", "content-type")
B25_PARAMS = '("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"'
B25_BASE = (
    b'"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    b'"@authority": example.com\n'
    b'"content-type": application/json\n'
    b'"@signature-params": ("date" "@authority" "content-type")'
    b';created=1618884473;keyid="test-shared-secret"'
)
B25_SIGNATURE = "pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8="

# B.2.6
B26_COMPONENTS = ("date", "@method", "@path", "@authority", "content-type", "content-length")
B26_PARAMS = (
    '("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
B26_BASE = (
    b'"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    b'"@method": POST\n'
    b'"@path": /foo\n'
    b'"@authority": example.com\n'
    b'"content-type": application/json\n'
    b'"content-length": 18\n'
    b'"@signature-params": ("date" "@method" "@path" "@authority" "content-type" '
    b'"content-length");created=1618884473;keyid="test-key-ed25519"'
)
B26_SIGNATURE = (
    "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
)


def rfc_ed25519_key() -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(RFC_ED25519_PRIVATE_PEM, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def test_rfc_ed25519_key_pair_matches() -> None:
    public = serialization.load_pem_public_key(RFC_ED25519_PUBLIC_PEM)
    assert isinstance(public, Ed25519PublicKey)
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert rfc_ed25519_key().public_key().public_bytes(*raw) == public.public_bytes(*raw)


def test_rfc_9421_b25_hmac_sha256() -> None:
    base = signature_base(B25_COMPONENTS, RFC_VALUES.get, B25_PARAMS)
    assert base == B25_BASE
    mac = hmac.new(RFC_SHARED_SECRET, base, hashlib.sha256).digest()
    assert base64.b64encode(mac).decode() == B25_SIGNATURE


def test_rfc_9421_b26_ed25519() -> None:
    base = signature_base(B26_COMPONENTS, RFC_VALUES.get, B26_PARAMS)
    assert base == B26_BASE
    public = serialization.load_pem_public_key(RFC_ED25519_PUBLIC_PEM)
    assert isinstance(public, Ed25519PublicKey)
    public.verify(base64.b64decode(B26_SIGNATURE), base)  # raises if it does not verify
    # Ed25519 is deterministic: the RFC's private key reproduces the RFC's signature.
    assert base64.b64encode(rfc_ed25519_key().sign(base)).decode() == B26_SIGNATURE


def test_rfc_9421_b2_content_digest_sha512_accepted() -> None:
    check_content_digest(RFC_DIGEST_SHA512, RFC_BODY)


@pytest.mark.parametrize(
    ("components", "params"),
    [(B25_COMPONENTS, B25_PARAMS), (B26_COMPONENTS, B26_PARAMS)],
    ids=["b25", "b26"],
)
def test_rfc_params_are_canonical_serialisation(components: tuple[str, ...], params: str) -> None:
    """The RFC's ``@signature-params`` is what ``ser_innerlist`` produces after a parse."""
    parsed = http_sf.parse(f"sig={params}".encode(), tltype="dictionary")
    assert isinstance(parsed, dict)
    assert ser_innerlist(parsed["sig"]) == params
    assert tuple(name for name, _ in parsed["sig"][0]) == components


def test_rfc_example_is_refused_by_policy() -> None:
    """The RFC examples carry neither nonce nor alg, which Herald requires."""
    with pytest.raises(SignatureInvalid):
        parse_signature(f"sig-b26={B26_PARAMS}", f"sig-b26=:{B26_SIGNATURE}:")


# -- parse_signature ----------------------------------------------------------------------

NONCE = base64.urlsafe_b64encode(bytes(range(16))).decode().rstrip("=")  # 16 bytes, 22 chars
SIG_BYTES = b"\x01" * 64
SIG = "sig=:" + base64.b64encode(SIG_BYTES).decode() + ":"
INNER = '"@method" "@target-uri" "content-digest"'
DEFAULT_PARAMS = {
    "created": "1700000000",
    "keyid": '"hk_0123"',
    "nonce": f'"{NONCE}"',
    "alg": '"ed25519"',
}


def make_input(
    inner: str = INNER, *, label: str = "sig", drop: tuple[str, ...] = (), **raw: str
) -> str:
    """A Signature-Input value; ``raw`` overrides parameters with raw SF text."""
    params = {**DEFAULT_PARAMS, **raw}
    text = "".join(f";{k}={v}" for k, v in params.items() if k not in drop)
    return f"{label}=({inner}){text}"


VALID = make_input()


def test_parse_well_formed() -> None:
    sig = parse_signature(VALID, SIG)
    assert sig == ParsedSignature(
        label="sig",
        components=("@method", "@target-uri", "content-digest"),
        created=1700000000,
        expires=None,
        nonce=NONCE,
        keyid="hk_0123",
        alg="ed25519",
        params=VALID.removeprefix("sig="),
        signature=SIG_BYTES,
    )


def test_parse_hmac_alg_and_expires() -> None:
    sig = parse_signature(make_input(alg='"hmac-sha256"', expires="1700000060"), SIG)
    assert sig.alg == "hmac-sha256"
    assert sig.expires == 1700000060


def test_params_are_canonical_serialisation() -> None:
    sloppy = (
        'sig=(  "@method"   "@target-uri" );created=1700000000;  keyid="hk_0123"'
        f';nonce="{NONCE}";alg="ed25519"'
    )
    sig = parse_signature(sloppy, SIG)
    expected = signature_params(
        ["@method", "@target-uri"],
        created=1700000000,
        keyid="hk_0123",
        nonce=NONCE,
        alg="ed25519",
    )
    assert sig.params == expected
    assert sig.params == (
        f'("@method" "@target-uri");created=1700000000;keyid="hk_0123";nonce="{NONCE}"'
        ';alg="ed25519"'
    )


def test_params_keep_the_signers_order_and_extra_parameters() -> None:
    """The base must be built from what was signed: no re-ordering, nothing dropped."""
    text = f'sig=("@method");alg="ed25519";tag="app";nonce="{NONCE}";keyid="k";created=5'
    assert parse_signature(text, SIG).params == text.removeprefix("sig=")


def test_first_label_is_used() -> None:
    second = make_input(label="second", keyid='"other"')
    sig = parse_signature(f"{VALID}, {second}", f"{SIG}, second=:AAAA:")
    assert (sig.label, sig.keyid, sig.signature) == ("sig", "hk_0123", SIG_BYTES)


def test_nonce_limits_accepted() -> None:
    assert parse_signature(make_input(nonce='"' + "A" * 128 + '"'), SIG).nonce == "A" * 128
    assert parse_signature(make_input(nonce='"' + "A" * 22 + '"'), SIG).nonce == "A" * 22


def test_field_of_exactly_max_length_is_parsed() -> None:
    pad = MAX_FIELD_LENGTH - len(make_input(keyid='""'))
    text = make_input(keyid='"' + "k" * pad + '"')
    assert len(text) == MAX_FIELD_LENGTH
    assert parse_signature(text, SIG).keyid == "k" * pad


@pytest.mark.parametrize(
    ("signature_input", "signature"),
    [
        pytest.param(None, SIG, id="no-input"),
        pytest.param(VALID, None, id="no-signature"),
        pytest.param(None, None, id="neither"),
        pytest.param("", SIG, id="empty-input"),
        pytest.param(VALID, "", id="empty-signature"),
        pytest.param("   ", SIG, id="blank-input"),
    ],
)
def test_parse_missing(signature_input: str | None, signature: str | None) -> None:
    with pytest.raises(SignatureMissing):
        parse_signature(signature_input, signature)


SHORT_NONCE = base64.urlsafe_b64encode(bytes(15)).decode()  # 15 bytes: 20 chars, no padding
REFUSED: dict[str, tuple[str, str]] = {
    # syntax
    "garbage": ("%%% not a field", SIG),
    "unterminated": ('sig=("@method"', SIG),
    "non-ascii": (VALID + ';x="é"', SIG),
    "control-char": (VALID.replace("hk_0123", "hk\x7f"), SIG),
    "signature-garbage": (VALID, "sig=:::"),
    "signature-non-ascii": (VALID, "sig=:é:"),
    # shape
    "list-not-dictionary": ('("@method");created=1', SIG),
    "member-is-item": ("sig=1", SIG),
    "member-is-bare-key": ("sig", SIG),
    "member-is-string": ('sig="@method"', SIG),
    "label-missing-from-signature": (VALID, "other=:AAAA:"),
    "signature-is-string": (VALID, 'sig="AAAA"'),
    "signature-is-inner-list": (VALID, "sig=(:AAAA:)"),
    "signature-is-integer": (VALID, "sig=1"),
    "signature-is-boolean": (VALID, "sig=?1"),
    # components
    "component-with-sf": (make_input('"@method" "content-type";sf'), SIG),
    "component-with-key": (make_input('"@method" "content-digest";key="sha-256"'), SIG),
    "component-with-req": (make_input('"@method";req'), SIG),
    "component-uppercase": (make_input('"@method" "Content-Type"'), SIG),
    "component-duplicate": (make_input('"@method" "@target-uri" "@method"'), SIG),
    "component-token": (make_input("content-type"), SIG),
    "component-bytes": (make_input(":AAAA:"), SIG),
    "component-integer": (make_input("1"), SIG),
    "component-empty-string": (make_input('""'), SIG),
    "component-with-space": (make_input('"content type"'), SIG),
    "too-many-components": (make_input(" ".join(f'"x-h{i}"' for i in range(17))), SIG),
    # alg
    "alg-missing": (make_input(drop=("alg",)), SIG),
    "alg-unknown": (make_input(alg='"hs256"'), SIG),
    "alg-rsa-pss-sha512": (make_input(alg='"rsa-pss-sha512"'), SIG),
    "alg-none": (make_input(alg='"none"'), SIG),
    "alg-uppercase": (make_input(alg='"ED25519"'), SIG),
    "alg-empty": (make_input(alg='""'), SIG),
    "alg-token": (make_input(alg="ed25519"), SIG),
    # nonce
    "nonce-missing": (make_input(drop=("nonce",)), SIG),
    "nonce-empty": (make_input(nonce='""'), SIG),
    "nonce-too-short": (make_input(nonce=f'"{SHORT_NONCE}"'), SIG),
    "nonce-not-base64url": (make_input(nonce='"abc+def/ghi+jkl/mno+pqr/stu"'), SIG),
    "nonce-with-dot": (make_input(nonce='"' + "A" * 22 + '.A"'), SIG),
    "nonce-too-long": (make_input(nonce='"' + "A" * 129 + '"'), SIG),
    "nonce-integer": (make_input(nonce="12345678901234"), SIG),
    "nonce-token": (make_input(nonce="A" + "a" * 30), SIG),
    "nonce-bytes": (make_input(nonce=":" + base64.b64encode(bytes(24)).decode() + ":"), SIG),
    # created
    "created-missing": (make_input(drop=("created",)), SIG),
    "created-string": (make_input(created='"1700000000"'), SIG),
    "created-boolean": (make_input(created="?1"), SIG),
    "created-float": (make_input(created="1700000000.5"), SIG),
    "created-token": (make_input(created="now"), SIG),
    # expires
    "expires-string": (make_input(expires='"1700000060"'), SIG),
    "expires-boolean": (make_input(expires="?1"), SIG),
    "expires-float": (make_input(expires="1700000060.0"), SIG),
    # keyid
    "keyid-missing": (make_input(drop=("keyid",)), SIG),
    "keyid-empty": (make_input(keyid='""'), SIG),
    "keyid-token": (make_input(keyid="hk_0123"), SIG),
    "keyid-integer": (make_input(keyid="123"), SIG),
    # size
    "input-oversize": (make_input(keyid='"' + "k" * MAX_FIELD_LENGTH + '"'), SIG),
    "signature-oversize": (VALID, "sig=:" + "A" * MAX_FIELD_LENGTH + ":"),
}


@pytest.mark.parametrize(("signature_input", "signature"), REFUSED.values(), ids=REFUSED.keys())
def test_parse_refused(signature_input: str, signature: str) -> None:
    with pytest.raises(SignatureInvalid):
        parse_signature(signature_input, signature)


def test_oversize_is_one_over_the_limit() -> None:
    pad = MAX_FIELD_LENGTH - len(make_input(keyid='""')) + 1
    text = make_input(keyid='"' + "k" * pad + '"')
    assert len(text) == MAX_FIELD_LENGTH + 1
    with pytest.raises(SignatureInvalid):
        parse_signature(text, SIG)


# -- check_freshness ----------------------------------------------------------------------

NOW = 1_700_000_000
WINDOW = 300


def parsed(created: int, expires: int | None = None) -> ParsedSignature:
    return ParsedSignature(
        label="sig",
        components=("@method",),
        created=created,
        expires=expires,
        nonce=NONCE,
        keyid="k",
        alg="ed25519",
        params="",
        signature=b"",
    )


@pytest.mark.parametrize("created", [NOW - WINDOW, NOW - 1, NOW, NOW + 1, NOW + WINDOW])
def test_fresh_inside_inclusive_window(created: int) -> None:
    check_freshness(parsed(created), now=NOW, window=WINDOW)


@pytest.mark.parametrize("created", [NOW - WINDOW - 1, NOW + WINDOW + 1, 0, NOW + 10**9])
def test_stale_or_future_created(created: int) -> None:
    with pytest.raises(RequestExpired):
        check_freshness(parsed(created), now=NOW, window=WINDOW)


def test_expires_in_future_accepted() -> None:
    check_freshness(parsed(NOW, expires=NOW + 60), now=NOW, window=WINDOW)


@pytest.mark.parametrize(
    ("created", "expires"),
    [
        pytest.param(NOW - 10, NOW - 1, id="expired"),
        pytest.param(NOW - 10, NOW - WINDOW * 10, id="long-expired"),
        pytest.param(NOW + 100, NOW + 50, id="expires-before-created"),
    ],
)
def test_expires_refused(created: int, expires: int) -> None:
    with pytest.raises(RequestExpired):
        check_freshness(parsed(created, expires=expires), now=NOW, window=WINDOW)


def test_not_before() -> None:
    check_freshness(parsed(NOW - 10), now=NOW, window=WINDOW, not_before=NOW - 10)
    check_freshness(parsed(NOW - 10), now=NOW, window=WINDOW, not_before=None)
    with pytest.raises(RequestExpired):
        check_freshness(parsed(NOW - 10), now=NOW, window=WINDOW, not_before=NOW - 9)


# -- Content-Digest -----------------------------------------------------------------------

EMPTY_DIGEST = "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"
# RFC 9530 §2 example: sha-256 of {"hello": "world"}.
HELLO_SHA256 = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


HELLO_MD5 = f"md5=:{b64(hashlib.md5(RFC_BODY).digest())}:"  # noqa: S324 - an unsupported digest


def test_content_digest_known_answers() -> None:
    assert content_digest(b"") == EMPTY_DIGEST
    assert content_digest(RFC_BODY) == HELLO_SHA256


@pytest.mark.parametrize(
    ("header", "body"),
    [
        pytest.param(EMPTY_DIGEST, b"", id="empty-body"),
        pytest.param(HELLO_SHA256, RFC_BODY, id="sha-256"),
        pytest.param(RFC_DIGEST_SHA512, RFC_BODY, id="sha-512"),
        pytest.param(f"{HELLO_SHA256}, {RFC_DIGEST_SHA512}", RFC_BODY, id="both"),
        pytest.param(f"{HELLO_MD5}, {HELLO_SHA256}", RFC_BODY, id="unknown-ignored"),
    ],
)
def test_content_digest_accepted(header: str, body: bytes) -> None:
    check_content_digest(header, body)


WRONG_SHA256 = f"sha-256=:{b64(hashlib.sha256(b'other').digest())}:"
WRONG_SHA512 = f"sha-512=:{b64(hashlib.sha512(b'other').digest())}:"
DIGEST_REFUSED: dict[str, str | None] = {
    "missing": None,
    "empty": "",
    "mismatch-sha256": WRONG_SHA256,
    "mismatch-sha512": WRONG_SHA512,
    "truncated": f"sha-256=:{b64(hashlib.sha256(RFC_BODY).digest()[:16])}:",
    "malformed": "sha-256=:not base64:",
    "garbage": "!!!",
    "token-value": "sha-256=abc",
    "string-value": f'sha-256="{b64(hashlib.sha256(RFC_BODY).digest())}"',
    "inner-list": f"sha-256=({HELLO_SHA256.removeprefix('sha-256=')})",
    "bare-key": "sha-256",
    "uppercase-name": "SHA-256" + HELLO_SHA256.removeprefix("sha-256"),
    "only-unknown": HELLO_MD5,
    "only-unknown-sha1": f"sha=:{b64(hashlib.sha1(RFC_BODY).digest())}:",  # noqa: S324
    "wrong-sha256-right-sha512": f"{WRONG_SHA256}, {RFC_DIGEST_SHA512}",
    "right-sha256-wrong-sha512": f"{HELLO_SHA256}, {WRONG_SHA512}",
    "non-ascii": HELLO_SHA256 + ', x="é"',
    "oversize": HELLO_SHA256 + ", x=:" + "A" * MAX_FIELD_LENGTH + ":",
}


@pytest.mark.parametrize("header", DIGEST_REFUSED.values(), ids=DIGEST_REFUSED.keys())
def test_content_digest_refused(header: str | None) -> None:
    with pytest.raises(DigestMismatch):
        check_content_digest(header, RFC_BODY)


# -- interoperability with http_message_signatures ----------------------------------------

BASE_URL = "https://herald.example"
PATH = "/v1/messages"
QUERY = "topic=orders.shipped&x=1"
BODY = b'{"topic": "orders.shipped", "data": {"id": 7}}'
KEYID = "hk_00112233aabbccdd"
REQUIRED = ("@method", "@target-uri", "content-digest", "content-type")


def new_request(**headers: str) -> httpx.Request:
    return httpx.Request(
        "POST",
        f"{BASE_URL}{PATH}?{QUERY}",
        content=BODY,
        headers={"content-type": "application/json", **headers},
    )


def library_verifier(algorithm: type, key: object) -> HTTPMessageVerifier:
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithm,
        key_resolver=MappingKeyResolver(public_keys={KEYID: key}, private_keys={}),
    )
    # Both defaults are loose (5 s skew, one day max age): set them explicitly.
    verifier.max_clock_skew = dt.timedelta(seconds=5)
    return verifier


def library_verify(request: httpx.Request, algorithm: type, key: object) -> None:
    results = library_verifier(algorithm, key).verify(
        request,
        max_age=dt.timedelta(seconds=300),
        require_components=REQUIRED,
        body=request.content,
    )
    assert len(results) == 1
    assert results[0].body == request.content  # the digest was checked against the body
    sig = parse_signature(request.headers["signature-input"], request.headers["signature"])
    assert results[0].nonce == sig.nonce
    assert results[0].parameters["alg"] == sig.alg


def ed25519_case() -> tuple[RequestSigner, type, object]:
    key = Ed25519PrivateKey.generate()
    return RequestSigner(KEYID, key), algorithms.ED25519, key.public_key()


def hmac_case() -> tuple[RequestSigner, type, object]:
    secret = secrets.token_bytes(32)
    return RequestSigner(KEYID, secret), algorithms.HMAC_SHA256, secret


CASES = pytest.mark.parametrize("case", [ed25519_case, hmac_case], ids=["ed25519", "hmac"])


@CASES
def test_request_signer_verified_by_library(
    case: Callable[[], tuple[RequestSigner, type, object]],
) -> None:
    signer, algorithm, key = case()
    request = signer.sign(new_request(authorization="Bearer tok-1"))
    sig = parse_signature(request.headers["signature-input"], request.headers["signature"])
    assert sig.components == (*REQUIRED, "authorization")
    assert sig.alg == signer.alg
    assert len(base64.urlsafe_b64decode(sig.nonce + "==")) >= 16
    library_verify(request, algorithm, key)


@CASES
def test_library_refuses_tampered_body(
    case: Callable[[], tuple[RequestSigner, type, object]],
) -> None:
    signer, algorithm, key = case()
    request = signer.sign(new_request())
    with pytest.raises(LibInvalidSignature):
        library_verifier(algorithm, key).verify(
            request, max_age=dt.timedelta(seconds=300), body=BODY + b" "
        )


@CASES
def test_library_refuses_tampered_header(
    case: Callable[[], tuple[RequestSigner, type, object]],
) -> None:
    signer, algorithm, key = case()
    request = signer.sign(new_request())
    request.headers["content-type"] = "text/plain"
    with pytest.raises(LibInvalidSignature):
        library_verify(request, algorithm, key)


def test_each_signature_has_a_fresh_nonce() -> None:
    signer, _, _ = ed25519_case()
    first = parse_signature(**_sig_headers(signer.sign(new_request())))
    second = parse_signature(**_sig_headers(signer.sign(new_request())))
    assert first.nonce != second.nonce


def _sig_headers(request: httpx.Request) -> dict[str, str]:
    return {
        "signature_input": request.headers["signature-input"],
        "signature": request.headers["signature"],
    }


def server_side_verify(request: httpx.Request, verify: Callable[[bytes, bytes], None]) -> None:
    """What service/signatures.verify_request does with a request, minus key lookup."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    received = SignedRequest(
        method=request.method, path=PATH, query=QUERY, headers=headers, body=request.content
    )
    sig = parse_signature(headers.get("signature-input"), headers.get("signature"))
    assert set(REQUIRED) <= set(sig.components)
    check_freshness(sig, now=time.time(), window=300)
    check_content_digest(headers.get("content-digest"), received.body)
    rt = SimpleNamespace(settings=SimpleNamespace(base_url=BASE_URL))
    values = _component_values(rt, received)  # type: ignore[arg-type]
    base = signature_base(
        sig.components, lambda name: values.get(name, received.headers.get(name)), sig.params
    )
    verify(sig.signature, base)


def library_sign(request: httpx.Request, algorithm: type, key: object) -> None:
    signer = HTTPMessageSigner(
        signature_algorithm=algorithm,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={KEYID: key}),
    )
    nonce = base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")
    signer.sign(
        request,
        key_id=KEYID,
        created=dt.datetime.now(dt.UTC),
        nonce=nonce,
        label="herald",
        include_alg=True,
        covered_component_ids=REQUIRED,
        body=request.content,
    )


def test_library_ed25519_signature_accepted_by_herald() -> None:
    key = Ed25519PrivateKey.generate()
    request = new_request()
    library_sign(request, algorithms.ED25519, key)
    server_side_verify(request, key.public_key().verify)
    # The same check refuses a different key: the base really is what the library signed.
    with pytest.raises(InvalidSignature):
        server_side_verify(request, Ed25519PrivateKey.generate().public_key().verify)


def test_library_hmac_signature_accepted_by_herald() -> None:
    secret = secrets.token_bytes(32)
    request = new_request()
    library_sign(request, algorithms.HMAC_SHA256, secret)

    def verify(signature: bytes, base: bytes) -> None:
        expected = hmac.new(secret, base, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            raise InvalidSignature

    server_side_verify(request, verify)
    request.headers["content-type"] = "text/plain"
    with pytest.raises(InvalidSignature):
        server_side_verify(request, verify)


def test_request_signer_accepted_by_herald_server_path() -> None:
    key = Ed25519PrivateKey.generate()
    request = RequestSigner(KEYID, key).sign(new_request())
    server_side_verify(request, key.public_key().verify)
