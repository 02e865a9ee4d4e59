"""Web Push delivery against a push service on loopback that checks what a real one checks.

The push service verifies the VAPID JWT with PyJWT (ES256, the ``k`` key, ``aud`` its own
origin, ``exp`` within 24 hours) and decrypts the body with ``http_ece`` using the private
key of a subscription made the way a browser makes one (a P-256 ECDH key pair and 16 random
auth bytes). The encryption is also held to the RFC 8291 Appendix A vector byte for byte.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import http_ece  # type: ignore[import-untyped]
import jwt
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.channels.peers import TlsServer

from herald.channels.base import (
    Channel,
    Delivered,
    DeliveryJob,
    Failed,
    Retry,
    redact_endpoint,
)
from herald.channels.egress import EgressPolicy, EgressRefused
from herald.channels.webpush import (
    MAX_PLAINTEXT,
    RECORD_SIZE,
    USER_AGENT,
    VAPID_JWT_LIFETIME,
    WebPushChannel,
    encrypt,
    fit_payload,
    generate_vapid_key,
    load_vapid_key,
    push_topic,
    remaining_ttl,
    vapid_jwt,
    vapid_pem,
    vapid_public_key_b64url,
)
from herald.errors import BadRequest

SUBJECT = "mailto:ops@herald.example"
B64URL = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

# RFC 8291 Appendix A.
RFC_PLAINTEXT = b"When I grow up, I want to be a watermelon"
RFC_AS_PRIVATE = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
RFC_AS_PUBLIC = (
    "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
)
RFC_UA_PRIVATE = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
RFC_UA_PUBLIC = (
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
)
RFC_SALT = "DGv6ra1nlYgDCS1FRnbzlw"
RFC_AUTH = "BTBZMqHH6r4Tts7J_aSIgg"
RFC_BODY = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS"
    "6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Q"
    "ulcy4a-fN"
)


def b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def private_from_scalar(scalar: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(unb64u(scalar), "big"), ec.SECP256R1())


@dataclass
class Browser:
    """A push subscription made the way a browser makes one (RFC 8291 §2)."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: secrets.token_bytes(16))

    def subscription(self, endpoint: str) -> dict[str, Any]:
        return {
            "endpoint": endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64u(point(self.key)), "auth": b64u(self.auth)},
        }


# -- the push service -----------------------------------------------------------------------


@dataclass
class Captured:
    path: str
    headers: dict[str, str]
    body: bytes
    verdict: str  # "ok" or why verification failed
    claims: dict[str, Any] | None
    plaintext: bytes | None


@dataclass
class PushService:
    """What the loopback push service knows and does; tests change it between requests."""

    port: int = 0
    browser: Browser = field(default_factory=Browser)
    application_server_key: str | None = None  # the key the subscription was made with
    status: int | None = None  # None: 201 when verified, 403 otherwise
    answer_headers: dict[str, str] = field(default_factory=dict)
    requests: list[Captured] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def url(self, path: str = "/push/v2/abc") -> str:
        return self.origin + path

    def verify(self, headers: dict[str, str]) -> dict[str, Any]:
        scheme, _, params = headers["authorization"].partition(" ")
        assert scheme == "vapid"
        fields = dict(part.strip().split("=", 1) for part in params.split(","))
        assert set(fields) == {"t", "k"}
        if self.application_server_key is not None:
            assert fields["k"] == self.application_server_key, "not the subscribing key"
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64u(fields["k"]))
        assert jwt.get_unverified_header(fields["t"]) == {"typ": "JWT", "alg": "ES256"}
        claims: dict[str, Any] = jwt.decode(
            fields["t"],
            public,
            algorithms=["ES256"],
            audience=self.origin,
            options={"require": ["aud", "exp", "sub"]},
        )
        assert claims["exp"] <= time.time() + 24 * 3600, "exp more than 24 hours ahead"
        assert claims["sub"].startswith(("mailto:", "https:"))
        assert headers["content-encoding"] == "aes128gcm"
        assert int(headers["ttl"]) >= 0
        return claims

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> int:
        claims = plaintext = None
        try:
            claims = self.verify(headers)
            plaintext = http_ece.decrypt(
                body,
                private_key=self.browser.key,
                auth_secret=self.browser.auth,
                version="aes128gcm",
            )
        except Exception as exc:  # the verdict is recorded; the answer is a 403
            verdict = f"{type(exc).__name__}: {exc}"
        else:
            verdict = "ok"
        self.requests.append(Captured(path, headers, body, verdict, claims, plaintext))
        return self.status or (201 if verdict == "ok" else 403)


class _Handler(BaseHTTPRequestHandler):
    server: TlsServer

    def do_POST(self) -> None:
        service = self.server.receiver
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {key.lower(): value for key, value in self.headers.items()}
        status = service.handle(self.path, headers, body)
        self.send_response(status)
        for name, value in service.answer_headers.items():
            self.send_header(name, value)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass


@pytest.fixture(scope="module")
def vapid_key() -> ec.EllipticCurvePrivateKey:
    return generate_vapid_key()


@pytest.fixture
def channel(policy: EgressPolicy, vapid_key: ec.EllipticCurvePrivateKey) -> WebPushChannel:
    return WebPushChannel(policy, vapid_key, subject=SUBJECT)


@pytest.fixture
def push(ca: trustme.CA, vapid_key: ec.EllipticCurvePrivateKey) -> Iterator[PushService]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    state = PushService(application_server_key=vapid_public_key_b64url(vapid_key))
    server = TlsServer(ctx, state, _Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_job(endpoint: dict[str, Any], **changes: Any) -> DeliveryJob:
    job = DeliveryJob(
        delivery_id="dlv_01HZX3Q9W7",
        message_id="0190f3c4-1b2a-7c3d-8e4f-5a6b7c8d9e0f",
        tenant_id="acme",
        recipient="user-42",
        topic="orders.shipped",
        attempt=1,
        title="Your order shipped",
        body="Parcel 7 is on its way — ünïcode too",
        html=None,
        data={"order": 7, "items": ["a", "b"]},
        priority="normal",
        created_at=iso(datetime.now(UTC) - timedelta(seconds=100)),
        ttl=3600,
        endpoint=endpoint,
    )
    return dataclasses.replace(job, **changes)


def subscribed(channel: WebPushChannel, push: PushService) -> dict[str, Any]:
    return channel.validate({"subscription": push.browser.subscription(push.url())})


# -- RFC 8291 known answer and helpers ------------------------------------------------------


def test_encrypt_reproduces_the_rfc_8291_example() -> None:
    sender = private_from_scalar(RFC_AS_PRIVATE)
    assert b64u(point(sender)) == RFC_AS_PUBLIC
    body = encrypt(
        RFC_PLAINTEXT,
        unb64u(RFC_UA_PUBLIC),
        unb64u(RFC_AUTH),
        sender_key=sender,
        salt=unb64u(RFC_SALT),
    )
    assert b64u(body) == RFC_BODY
    opened = http_ece.decrypt(
        body,
        private_key=private_from_scalar(RFC_UA_PRIVATE),
        auth_secret=unb64u(RFC_AUTH),
        version="aes128gcm",
    )
    assert opened == RFC_PLAINTEXT


def test_encrypt_uses_a_fresh_key_and_salt_and_one_full_record() -> None:
    browser = Browser()
    first = encrypt(b"x" * MAX_PLAINTEXT, point(browser.key), browser.auth)
    second = encrypt(b"x" * MAX_PLAINTEXT, point(browser.key), browser.auth)
    assert len(first) == len(second) == RECORD_SIZE  # 3,993 bytes fill the record exactly
    assert first[:16] != second[:16]  # salt
    assert first[21:86] != second[21:86]  # the ephemeral public key (keyid)
    assert int.from_bytes(first[16:20], "big") == RECORD_SIZE
    assert first[20] == 65
    for body in (first, second):
        plain = http_ece.decrypt(
            body, private_key=browser.key, auth_secret=browser.auth, version="aes128gcm"
        )
        assert plain == b"x" * MAX_PLAINTEXT
    with pytest.raises(ValueError, match="3993"):
        encrypt(b"x" * (MAX_PLAINTEXT + 1), point(browser.key), browser.auth)
    with pytest.raises(ValueError):
        encrypt(b"", point(browser.key), browser.auth)
    with pytest.raises(ValueError):
        encrypt(b"x", point(browser.key), browser.auth[:15])


def test_vapid_key_helpers_round_trip(vapid_key: ec.EllipticCurvePrivateKey) -> None:
    public = unb64u(vapid_public_key_b64url(vapid_key))
    assert len(public) == 65
    assert public[0] == 4
    assert set(vapid_public_key_b64url(vapid_key)) <= B64URL
    pem = vapid_pem(vapid_key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_vapid_key(pem)
    assert vapid_public_key_b64url(loaded) == vapid_public_key_b64url(vapid_key)
    sec1 = vapid_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert vapid_public_key_b64url(load_vapid_key(sec1)) == vapid_public_key_b64url(vapid_key)
    assert vapid_pem(generate_vapid_key()) != pem


def test_vapid_key_helpers_refuse_other_keys(policy: EgressPolicy) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    ed = Ed25519PrivateKey.generate()
    for other in (p384, ed):
        pem = other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with pytest.raises(ValueError, match="P-256"):
            load_vapid_key(pem)
    with pytest.raises(ValueError):
        load_vapid_key(b"not a pem")
    with pytest.raises(ValueError, match="P-256"):
        WebPushChannel(policy, p384, subject=SUBJECT)
    with pytest.raises(TypeError):
        WebPushChannel(policy, ed, subject=SUBJECT)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "subject",
    ["", "ops@herald.example", "mailto:", "mailto: ops@herald.example", "http://herald.example"],
)
def test_the_subject_must_be_a_mailto_or_https_uri(policy: EgressPolicy, subject: str) -> None:
    with pytest.raises(ValueError, match="subject"):
        WebPushChannel(policy, generate_vapid_key(), subject=subject)
    WebPushChannel(policy, generate_vapid_key(), subject="https://herald.example/contact")


def test_vapid_jwt_claims(vapid_key: ec.EllipticCurvePrivateKey) -> None:
    now = time.time()
    token = vapid_jwt(vapid_key, "https://push.example/send/abc?x=1", SUBJECT, now=now)
    public = vapid_key.public_key()
    claims = jwt.decode(token, public, algorithms=["ES256"], audience="https://push.example")
    assert claims == {
        "aud": "https://push.example",
        "exp": int(now) + VAPID_JWT_LIFETIME,
        "sub": SUBJECT,
    }
    assert VAPID_JWT_LIFETIME == 12 * 3600
    with_port = vapid_jwt(vapid_key, "https://push.example:8443/a", SUBJECT, now=now)
    jwt.decode(with_port, public, algorithms=["ES256"], audience="https://push.example:8443")


def test_remaining_ttl() -> None:
    job = make_job({}, created_at="2026-03-01T12:00:00Z", ttl=3600)
    created = datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp()
    assert remaining_ttl(job, created) == 3600
    assert remaining_ttl(job, created + 600) == 3000
    assert remaining_ttl(job, created + 600.5) == 2999  # age rounds up: never too long
    assert remaining_ttl(job, created + 3600) == 0
    assert remaining_ttl(job, created + 10 * 3600) == 0  # never negative
    assert remaining_ttl(job, created - 60) == 3600  # a clock behind is not extra time
    assert remaining_ttl(dataclasses.replace(job, created_at="yesterday"), created) == 3600


def test_push_topic_is_short_base64url_and_stable() -> None:
    message_id = "0190f3c4-1b2a-7c3d-8e4f-5a6b7c8d9e0f"
    topic = push_topic(message_id)
    assert topic == b64u(uuid.UUID(message_id).bytes)
    assert len(topic) == 22
    assert push_topic(message_id) == topic
    assert push_topic("0190f3c4-1b2a-7c3d-8e4f-5a6b7c8d9e10") != topic
    other = push_topic("msg_" + "x" * 500)
    assert len(other) == 32
    assert set(other) <= B64URL


def test_fit_payload_drops_data_then_cuts_the_body_then_the_title() -> None:
    event = make_job({}).payload()
    small = fit_payload(event)
    assert small is not None
    assert json.loads(small) == event

    big_data = event | {"data": {"blob": "d" * 5000}}
    fitted = fit_payload(big_data)
    assert fitted is not None
    assert json.loads(fitted) == event | {"data": None}  # the body survived intact

    big_body = big_data | {"body": "ü" * 5000}
    fitted = fit_payload(big_body)
    assert fitted is not None
    shaped = json.loads(fitted)
    assert shaped["data"] is None
    assert shaped["title"] == event["title"]
    assert shaped["body"].endswith("…")
    assert shaped["body"][:-1] == "ü" * (len(shaped["body"]) - 1)
    assert MAX_PLAINTEXT - 3 <= len(fitted) <= MAX_PLAINTEXT  # as much as fits

    big_title = big_body | {"title": "\x01" * 1024}  # JSON-escaped: 6 bytes each
    fitted = fit_payload(big_title)
    assert fitted is not None
    shaped = json.loads(fitted)
    assert shaped["body"] == ""
    assert shaped["title"].endswith("…")
    assert len(fitted) <= MAX_PLAINTEXT

    assert fit_payload(event | {"recipient": "r" * 5000}) is None


# -- validation -----------------------------------------------------------------------------


def test_channel_declares_the_plugin_interface(
    channel: WebPushChannel, vapid_key: ec.EllipticCurvePrivateKey
) -> None:
    plugin: Channel = channel
    assert plugin.name == "webpush"
    assert plugin.concurrency == 32
    assert plugin.secret_fields == ("subscription",)
    assert channel.application_server_key == vapid_public_key_b64url(vapid_key)
    endpoint = channel.validate({"subscription": Browser().subscription("https://push.example/")})
    assert redact_endpoint(plugin, endpoint) == {"subscription": "[redacted]"}


def test_validate_normalises_a_browser_subscription(channel: WebPushChannel) -> None:
    browser = Browser()
    raw = browser.subscription("https://FCM.googleapis.com:443/fcm/send/abc:def#frag")
    padded_auth = base64.urlsafe_b64encode(browser.auth).decode()  # with "=="
    raw["keys"]["auth"] = padded_auth
    raw["expirationTime"] = 1767225600000
    normal = channel.validate({"subscription": raw})
    assert normal == {
        "subscription": {
            "endpoint": "https://fcm.googleapis.com/fcm/send/abc:def",
            "expirationTime": 1767225600000,
            "keys": {"p256dh": b64u(point(browser.key)), "auth": b64u(browser.auth)},
        }
    }
    assert channel.validate(normal) == normal  # idempotent
    without = Browser().subscription("https://push.example/x")
    del without["expirationTime"]
    assert channel.validate({"subscription": without})["subscription"]["expirationTime"] is None


def _bad_points() -> list[bytes]:
    good = point(ec.generate_private_key(ec.SECP256R1()))
    compressed = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    )
    off_curve = b"\x04" + (1).to_bytes(32, "big") + (1).to_bytes(32, "big")
    tweaked = good[:-1] + bytes([good[-1] ^ 1])  # y no longer matches x
    return [off_curve, tweaked, compressed, b"\x04" + b"\x00" * 64, good[:64], good + b"\x00"]


@pytest.mark.parametrize(
    "bad",
    _bad_points(),
    # Named, not derived from the random keys: every collection sees the same test ids.
    ids=["off-curve", "y-mismatch", "compressed", "zero-point", "truncated", "extra-byte"],
)
def test_validate_refuses_a_p256dh_that_is_not_an_uncompressed_p256_point(
    channel: WebPushChannel, bad: bytes
) -> None:
    raw = Browser().subscription("https://push.example/x")
    raw["keys"]["p256dh"] = b64u(bad)
    with pytest.raises(BadRequest, match="p256dh") as info:
        channel.validate({"subscription": raw})
    assert b64u(bad) not in info.value.detail


@pytest.mark.parametrize(
    "auth",
    [
        b64u(b"a" * 15),
        b64u(b"a" * 17),
        b64u(b"a" * 32),
        "",
        base64.b64encode(b"\xfb\xff" * 8).decode(),  # standard alphabet: "+" and "/"
        b64u(b"a" * 16)[:-1] + "B",  # non-canonical: unused bits set
        "QUFBQUFBQUFBQUFBQUFBQQ===",  # too much padding
        16,
        None,
    ],
)
def test_validate_refuses_an_auth_secret_that_is_not_16_bytes(
    channel: WebPushChannel, auth: Any
) -> None:
    raw = Browser().subscription("https://push.example/x")
    raw["keys"]["auth"] = auth
    with pytest.raises(BadRequest, match="auth") as info:
        channel.validate({"subscription": raw})
    if isinstance(auth, str) and auth:
        assert auth not in info.value.detail


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://push.example/x", "https"),
        ("http://127.0.0.1/x", "https"),  # allow-listed, but push services are HTTPS only
        ("ftp://push.example/x", "https"),
        ("https://user:pw@push.example/x", "credentials"),
        ("https://10.0.0.1/x", "not a public address"),
        ("https://0177.0.0.1/x", "ambiguous"),
        ("https://push.example/a b", "ASCII"),
        ("https://push.example/" + "a" * 2100, "longer"),
        ("", "required"),
    ],
)
def test_validate_refuses_endpoints_the_egress_guard_would(
    channel: WebPushChannel, url: str, message: str
) -> None:
    with pytest.raises(BadRequest, match=message) as info:
        channel.validate({"subscription": Browser().subscription(url)})
    if url:
        assert "/x" not in info.value.detail


@pytest.mark.parametrize(
    "endpoint",
    [
        {"subscription": {}, "extra": 1},
        {"url": "https://push.example/x"},
        {},
        {"subscription": "https://push.example/x"},
        "not an object",
    ],
)
def test_validate_refuses_malformed_endpoints(channel: WebPushChannel, endpoint: Any) -> None:
    with pytest.raises(BadRequest):
        channel.validate(endpoint)


def test_validate_refuses_unknown_fields(channel: WebPushChannel) -> None:
    raw = Browser().subscription("https://push.example/x")
    with pytest.raises(BadRequest, match="unknown web push endpoint fields: vapid"):
        channel.validate({"subscription": raw, "vapid": "x"})
    with pytest.raises(BadRequest, match="unknown web push subscription fields: options"):
        channel.validate({"subscription": raw | {"options": {}}})
    keys = raw["keys"] | {"aes128gcm": "x"}
    with pytest.raises(BadRequest, match="unknown web push subscription keys fields: aes128gcm"):
        channel.validate({"subscription": raw | {"keys": keys}})
    with pytest.raises(BadRequest, match="keys"):
        channel.validate({"subscription": raw | {"keys": None}})
    with pytest.raises(BadRequest, match="expirationTime"):
        channel.validate({"subscription": raw | {"expirationTime": "soon"}})


# -- deliveries checked by the push service -------------------------------------------------


async def test_delivery_verifies_and_decrypts_at_the_push_service(
    channel: WebPushChannel, push: PushService
) -> None:
    job = make_job(subscribed(channel, push))

    outcome = await channel.deliver(job)

    assert outcome == Delivered("HTTP 201")
    [request] = push.requests
    assert request.verdict == "ok"
    assert request.path == "/push/v2/abc"
    assert request.plaintext is not None
    event = json.loads(request.plaintext)
    assert event == job.payload()
    assert event["title"] == "Your order shipped"
    assert event["body"] == "Parcel 7 is on its way — ünïcode too"
    assert request.claims is not None
    assert request.claims["aud"] == push.origin
    assert request.claims["sub"] == SUBJECT
    assert 12 * 3600 - 60 <= request.claims["exp"] - time.time() <= 12 * 3600
    headers = request.headers
    assert 3499 <= int(headers["ttl"]) <= 3500
    assert headers["urgency"] == "normal"
    assert headers["topic"] == push_topic(job.message_id)
    assert len(headers["topic"]) <= 32
    assert set(headers["topic"]) <= B64URL
    assert headers["content-encoding"] == "aes128gcm"
    assert headers["content-type"] == "application/octet-stream"
    assert headers["user-agent"] == USER_AGENT
    assert "crypto-key" not in headers
    assert "encryption" not in headers
    # The push service only ever sees ciphertext.
    for secret in (b"Your order shipped", b"Parcel 7", job.message_id.encode(), b"orders."):
        assert secret not in request.body
    assert request.body != request.plaintext
    assert int.from_bytes(request.body[16:20], "big") == RECORD_SIZE


@pytest.mark.parametrize(
    ("priority", "urgency"),
    [("low", "low"), ("normal", "normal"), ("high", "high"), ("urgent", "high")],
)
async def test_urgency_follows_the_priority(
    channel: WebPushChannel, push: PushService, priority: str, urgency: str
) -> None:
    assert await channel.deliver(make_job(subscribed(channel, push), priority=priority)) == (
        Delivered("HTTP 201")
    )
    assert push.requests[0].headers["urgency"] == urgency


async def test_an_expired_message_is_sent_with_ttl_zero(
    channel: WebPushChannel, push: PushService
) -> None:
    old = iso(datetime.now(UTC) - timedelta(hours=2))
    outcome = await channel.deliver(make_job(subscribed(channel, push), created_at=old))
    assert outcome == Delivered("HTTP 201")
    assert push.requests[0].headers["ttl"] == "0"


async def test_retries_reuse_the_topic_but_never_the_key_or_salt(
    channel: WebPushChannel, push: PushService
) -> None:
    endpoint = subscribed(channel, push)
    await channel.deliver(make_job(endpoint))
    await channel.deliver(make_job(endpoint, attempt=2))
    first, second = push.requests
    assert first.verdict == second.verdict == "ok"
    assert first.headers["topic"] == second.headers["topic"]
    assert first.body[:16] != second.body[:16]
    assert first.body[21:86] != second.body[21:86]
    assert first.plaintext == second.plaintext


async def test_a_payload_over_the_limit_is_shrunk_and_still_decrypts(
    channel: WebPushChannel, push: PushService
) -> None:
    job = make_job(subscribed(channel, push), data={"blob": "d" * 6000}, body="ä" * 6000)

    outcome = await channel.deliver(job)

    assert outcome == Delivered("HTTP 201")
    [request] = push.requests
    assert request.verdict == "ok"
    assert request.plaintext is not None
    assert len(request.plaintext) <= MAX_PLAINTEXT
    assert len(request.body) <= RECORD_SIZE
    event = json.loads(request.plaintext)
    assert event["data"] is None
    assert event["title"] == job.title
    assert event["body"].endswith("…")
    assert job.body is not None
    assert job.body.startswith(event["body"][:-1])
    assert event["id"] == job.message_id


async def test_a_subscription_signed_with_another_key_is_refused(
    policy: EgressPolicy, push: PushService
) -> None:
    stranger = WebPushChannel(policy, generate_vapid_key(), subject=SUBJECT)
    outcome = await stranger.deliver(make_job(subscribed(stranger, push)))
    assert outcome == Failed("push service refused the VAPID signature or payload (HTTP 403)")
    assert "not the subscribing key" in push.requests[0].verdict


@pytest.mark.parametrize("status", [404, 410])
async def test_a_gone_subscription_disables_the_endpoint(
    channel: WebPushChannel, push: PushService, status: int
) -> None:
    push.status = status
    outcome = await channel.deliver(make_job(subscribed(channel, push)))
    assert isinstance(outcome, Failed)
    assert outcome.disable_endpoint
    assert str(status) in outcome.reason


async def test_429_is_retried_after_retry_after(channel: WebPushChannel, push: PushService) -> None:
    push.status = 429
    push.answer_headers = {"Retry-After": "120"}
    outcome = await channel.deliver(make_job(subscribed(channel, push)))
    assert outcome == Retry("push service answered HTTP 429", after=120.0)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retried(
    channel: WebPushChannel, push: PushService, status: int
) -> None:
    push.status = status
    later = datetime.now(UTC) + timedelta(seconds=90)
    push.answer_headers = {"Retry-After": format_datetime(later, usegmt=True)}
    outcome = await channel.deliver(make_job(subscribed(channel, push)))
    assert isinstance(outcome, Retry)
    assert outcome.after is not None
    assert 80 <= outcome.after <= 90


async def test_500_without_retry_after_is_retried(
    channel: WebPushChannel, push: PushService
) -> None:
    push.status = 500
    outcome = await channel.deliver(make_job(subscribed(channel, push)))
    assert outcome == Retry("push service answered HTTP 500", after=None)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Delivered("HTTP 200")),
        (202, Delivered("HTTP 202")),
        (413, Failed("push service refused the payload as too large (HTTP 413)")),
        (400, Failed("push service refused the VAPID signature or payload (HTTP 400)")),
        (401, Failed("push service refused the VAPID signature or payload (HTTP 401)")),
        (403, Failed("push service refused the VAPID signature or payload (HTTP 403)")),
        (301, Failed("redirects are not followed")),
        (422, Failed("push service refused the delivery (HTTP 422)")),
    ],
)
async def test_other_answers(
    channel: WebPushChannel, push: PushService, status: int, outcome: Any
) -> None:
    push.status = status
    push.answer_headers = {"Location": "https://elsewhere.example/"} if status == 301 else {}
    assert await channel.deliver(make_job(subscribed(channel, push))) == outcome
    assert len(push.requests) == 1


async def test_a_destination_the_guard_refuses_is_failed(
    channel: WebPushChannel, push: PushService, ca_file: Path, vapid_key: Any
) -> None:
    endpoint = subscribed(channel, push)
    strict = WebPushChannel(EgressPolicy(ca_file=ca_file), vapid_key, subject=SUBJECT)
    outcome = await strict.deliver(make_job(endpoint))
    assert outcome == Failed("destination refused by the SSRF guard")
    assert push.requests == []
    with pytest.raises(EgressRefused):
        strict.validate(endpoint)


async def test_an_unreachable_push_service_is_retried(channel: WebPushChannel) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = channel.validate(
        {"subscription": Browser().subscription(f"https://127.0.0.1:{port}/x")}
    )
    outcome = await channel.deliver(make_job(endpoint))
    assert isinstance(outcome, Retry)
    assert outcome.reason.startswith("push service unreachable")
    assert str(port) not in outcome.reason


async def test_an_invalid_stored_subscription_is_failed(channel: WebPushChannel) -> None:
    raw = Browser().subscription("https://push.example/x")
    raw["keys"]["auth"] = b64u(b"short")
    outcome = await channel.deliver(make_job({"subscription": raw}))
    assert isinstance(outcome, Failed)
    assert outcome.reason.startswith("invalid web push subscription")
    assert not outcome.disable_endpoint
