"""Standard Webhooks delivery against a real HTTPS receiver on loopback.

The receiver verifies every request with the independent ``standardwebhooks`` package
(``v1``) and with ``cryptography`` (``v1a`` Ed25519), so a signature Herald gets wrong is
caught by someone else's code, not by ours.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks.webhooks as swh
import trustme
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from standardwebhooks import Webhook
from tests.channels.peers import LOOPBACK, TlsServer

from herald.channels.base import (
    Channel,
    Delivered,
    DeliveryJob,
    Failed,
    Retry,
    redact_endpoint,
)
from herald.channels.egress import EgressPolicy
from herald.channels.webhook import (
    USER_AGENT,
    WebhookChannel,
    ed25519_public_key,
    new_ed25519_key,
    new_secret,
    sign,
    sign_v1,
    sign_v1a,
    signed_content,
)
from herald.errors import BadRequest

TOLERANCE = timedelta(minutes=5)  # standardwebhooks' fixed tolerance

# The Standard Webhooks known-answer vector (REFERENCES.md).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = '{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _whsec(raw: bytes) -> str:
    return "whsec_" + base64.b64encode(raw).decode()


# -- the receiver ---------------------------------------------------------------------------


@dataclass
class Captured:
    path: str
    headers: dict[str, str]
    body: bytes
    verdict: str  # "ok" or why verification failed


@dataclass
class Receiver:
    """What the loopback receiver knows and does; tests change it between requests."""

    port: int = 0
    secret: str | None = None
    public_key: Ed25519PublicKey | None = None
    status: int | None = None  # None: 204 when verified, 401 otherwise
    answer_headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    release: threading.Event = field(default_factory=threading.Event)
    requests: list[Captured] = field(default_factory=list)

    def url(self, path: str = "/hook") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def verify(self, body: bytes, headers: dict[str, str]) -> str:
        try:
            if self.secret is not None:
                Webhook(self.secret).verify(body, headers)
            if self.public_key is not None:
                _verify_v1a(self.public_key, body, headers)
        except Exception as exc:  # the verdict is recorded; the answer is a 401
            return f"{type(exc).__name__}: {exc}"
        return "ok"


def _verify_v1a(public_key: Ed25519PublicKey, body: bytes, headers: dict[str, str]) -> None:
    msg_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    # The same (patchable) clock standardwebhooks uses, with its tolerance.
    now = swh.datetime.now(tz=UTC)
    sent = datetime.fromtimestamp(int(stamp), tz=UTC)
    if abs(now - sent) > TOLERANCE:
        raise ValueError("v1a timestamp outside tolerance")
    for entry in headers["webhook-signature"].split(" "):
        version, _, value = entry.partition(",")
        if version != "v1a":
            continue
        try:
            public_key.verify(base64.b64decode(value), f"{msg_id}.{stamp}.".encode() + body)
        except InvalidSignature:
            continue
        return
    raise ValueError("no valid v1a signature")


class _Handler(BaseHTTPRequestHandler):
    server: TlsServer

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {key.lower(): value for key, value in self.headers.items()}
        verdict = receiver.verify(body, headers)
        receiver.requests.append(Captured(self.path, headers, body, verdict))
        if receiver.delay:
            receiver.release.wait(receiver.delay)
        status = receiver.status or (204 if verdict == "ok" else 401)
        self.send_response(status)
        for name, value in receiver.answer_headers.items():
            self.send_header(name, value)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass


@pytest.fixture
def channel(policy: EgressPolicy) -> WebhookChannel:
    return WebhookChannel(policy)


@pytest.fixture
def receiver(ca: trustme.CA) -> Iterator[Receiver]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    state = Receiver()
    server = TlsServer(ctx, state, _Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def keys() -> dict[str, str]:
    return {"secret": new_secret(), "ed25519_private_key": new_ed25519_key()}


def _public(seed_b64: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(ed25519_public_key(seed_b64)))


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
        created_at="2026-03-01T12:00:00Z",
        ttl=3600,
        endpoint=endpoint,
    )
    return dataclasses.replace(job, **changes)


async def _resend(ca_file: Path, url: str, body: bytes, headers: dict[str, str]) -> int:
    """Send a captured request again, as an attacker who recorded it would."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    keep = {k: v for k, v in headers.items() if k.startswith("webhook-") or k == "content-type"}
    async with httpx.AsyncClient(verify=ctx) as client:
        response = await client.post(url, content=body, headers=keep)
    return response.status_code


# -- known answers and helpers --------------------------------------------------------------


def test_standard_webhooks_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG
    assert sign_v1(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY.encode()) == VECTOR_SIG
    stamp = datetime.fromtimestamp(VECTOR_TS, tz=UTC)
    assert Webhook(VECTOR_SECRET).sign(VECTOR_ID, stamp, VECTOR_BODY) == VECTOR_SIG


def test_v1a_signature_verifies_with_the_public_key() -> None:
    seed = new_ed25519_key()
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed))
    signature = sign(key, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    assert signature == sign_v1a(key, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    version, _, value = signature.partition(",")
    assert version == "v1a"
    content = signed_content(VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    assert content == f"{VECTOR_ID}.{VECTOR_TS}.{VECTOR_BODY}".encode()
    _public(seed).verify(base64.b64decode(value), content)


def test_sign_refuses_a_malformed_secret() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        sign("not-a-secret", VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    with pytest.raises(ValueError, match="seed"):
        ed25519_public_key("AAAA")


def test_new_secret_is_a_whsec_of_32_random_bytes(channel: WebhookChannel) -> None:
    first, second = new_secret(), WebhookChannel.new_secret()
    assert first != second
    for secret in (first, second):
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
        assert channel.validate({"url": "https://example.com/", "secret": secret})["secret"] == (
            secret
        )
        Webhook(secret)  # the independent library accepts it


def test_channel_declares_the_plugin_interface(channel: WebhookChannel) -> None:
    plugin: Channel = channel
    assert plugin.name == "webhook"
    assert plugin.concurrency == 32
    assert set(plugin.secret_fields) == {"secret", "secrets", "ed25519_private_key"}
    endpoint = channel.validate(
        {"url": "https://example.com/", "secret": new_secret(), "secrets": [new_secret()]}
        | {"ed25519_private_key": new_ed25519_key()}
    )
    shown = redact_endpoint(plugin, endpoint)
    assert shown["url"] == "https://example.com/"
    assert {shown[name] for name in plugin.secret_fields} == {"[redacted]"}


# -- deliveries verified by an independent receiver -----------------------------------------


async def test_delivery_verifies_at_the_receiver(
    channel: WebhookChannel, receiver: Receiver, keys: dict[str, str]
) -> None:
    receiver.secret = keys["secret"]
    receiver.public_key = _public(keys["ed25519_private_key"])
    endpoint = channel.validate({"url": receiver.url(), **keys})
    job = make_job(endpoint)

    outcome = await channel.deliver(job)

    assert outcome == Delivered("HTTP 204")
    [request] = receiver.requests
    assert request.verdict == "ok"
    assert request.path == "/hook"
    assert request.headers["webhook-id"] == job.delivery_id
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    versions = [entry.split(",")[0] for entry in request.headers["webhook-signature"].split(" ")]
    assert versions == ["v1", "v1a"]
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert json.loads(request.body) == job.payload()
    compact = json.dumps(job.payload(), separators=(",", ":"), ensure_ascii=False)
    assert request.body == compact.encode()


async def test_ed25519_only_endpoint(channel: WebhookChannel, receiver: Receiver) -> None:
    seed = new_ed25519_key()
    receiver.public_key = _public(seed)
    endpoint = channel.validate({"url": receiver.url(), "ed25519_private_key": seed})
    assert await channel.deliver(make_job(endpoint)) == Delivered("HTTP 204")
    [request] = receiver.requests
    assert request.verdict == "ok"
    assert request.headers["webhook-signature"].startswith("v1a,")
    assert " " not in request.headers["webhook-signature"]


async def test_replayed_delivery_is_refused_by_the_receiver(
    channel: WebhookChannel,
    receiver: Receiver,
    keys: dict[str, str],
    ca_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver.secret = keys["secret"]
    receiver.public_key = _public(keys["ed25519_private_key"])
    endpoint = channel.validate({"url": receiver.url(), **keys})
    assert isinstance(await channel.deliver(make_job(endpoint)), Delivered)
    [original] = receiver.requests

    # Ten minutes later, an attacker who recorded the request sends it again.
    class _Later(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.now(tz) + timedelta(minutes=10)

    monkeypatch.setattr(swh, "datetime", _Later)
    status = await _resend(ca_file, receiver.url(), original.body, original.headers)

    assert status == 401
    assert "too old" in receiver.requests[-1].verdict


async def test_altered_body_is_refused_by_the_receiver(
    channel: WebhookChannel, receiver: Receiver, keys: dict[str, str], ca_file: Path
) -> None:
    receiver.secret = keys["secret"]
    endpoint = channel.validate({"url": receiver.url(), **keys})
    assert isinstance(await channel.deliver(make_job(endpoint)), Delivered)
    original = receiver.requests[0]
    tampered = original.body.replace(b'"priority":"normal"', b'"priority":"urgent"')
    assert tampered != original.body

    assert await _resend(ca_file, receiver.url(), tampered, original.headers) == 401
    assert "No matching signature" in receiver.requests[-1].verdict

    # Only v1a left to check: the Ed25519 check refuses the tampered body too.
    receiver.secret = None
    receiver.public_key = _public(keys["ed25519_private_key"])
    assert await _resend(ca_file, receiver.url(), tampered, original.headers) == 401
    assert await _resend(ca_file, receiver.url(), original.body, original.headers) == 204


async def test_secret_rotation_overlap(channel: WebhookChannel, receiver: Receiver) -> None:
    old, new = new_secret(), new_secret()
    endpoint = channel.validate({"url": receiver.url(), "secret": new, "secrets": [old]})
    job = make_job(endpoint)

    receiver.secret = old  # a receiver that has not switched yet
    assert await channel.deliver(job) == Delivered("HTTP 204")
    receiver.secret = new  # and one that has
    assert await channel.deliver(job) == Delivered("HTTP 204")

    assert [request.verdict for request in receiver.requests] == ["ok", "ok"]
    signatures = receiver.requests[0].headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(entry.startswith("v1,") for entry in signatures)
    stamp = int(receiver.requests[0].headers["webhook-timestamp"])
    body = receiver.requests[0].body
    assert signatures == [
        sign(new, job.delivery_id, stamp, body),
        sign(old, job.delivery_id, stamp, body),
    ]


async def test_id_stable_and_timestamp_per_attempt(
    policy: EgressPolicy, receiver: Receiver, keys: dict[str, str]
) -> None:
    start = int(time.time())
    ticks = iter([start - 30.7, start + 0.2])
    channel = WebhookChannel(policy, clock=lambda: next(ticks))
    receiver.secret = keys["secret"]
    endpoint = channel.validate({"url": receiver.url(), **keys})
    job = make_job(endpoint)

    assert isinstance(await channel.deliver(job), Delivered)
    assert isinstance(await channel.deliver(dataclasses.replace(job, attempt=2)), Delivered)

    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == job.delivery_id
    assert first.headers["webhook-timestamp"] == str(start - 31)
    assert second.headers["webhook-timestamp"] == str(start)
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    assert first.body == second.body
    assert [first.verdict, second.verdict] == ["ok", "ok"]


# -- outcomes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        (200, {}, Delivered("HTTP 200")),
        (202, {}, Delivered("HTTP 202")),
        (410, {}, Failed("receiver says the endpoint is gone (HTTP 410)", disable_endpoint=True)),
        (500, {}, Retry("receiver answered HTTP 500")),
        (503, {"Retry-After": "120"}, Retry("receiver answered HTTP 503", after=120)),
        (503, {"Retry-After": "999999"}, Retry("receiver answered HTTP 503")),
        (503, {"Retry-After": "soon"}, Retry("receiver answered HTTP 503")),
        (429, {"Retry-After": "7"}, Retry("receiver answered HTTP 429", after=7)),
        (408, {}, Retry("receiver answered HTTP 408")),
        (302, {"Location": "https://169.254.169.254/"}, Failed("redirects are not followed")),
        (301, {"Location": "/elsewhere"}, Failed("redirects are not followed")),
        (400, {}, Failed("receiver refused the delivery (HTTP 400)")),
        (401, {}, Failed("receiver refused the delivery (HTTP 401)")),
        (404, {}, Failed("receiver refused the delivery (HTTP 404)")),
    ],
)
async def test_status_outcomes(
    channel: WebhookChannel,
    receiver: Receiver,
    keys: dict[str, str],
    case: tuple[int, dict[str, str], object],
) -> None:
    status, answer_headers, expected = case
    receiver.status = status
    receiver.answer_headers = answer_headers
    endpoint = channel.validate({"url": receiver.url("/hook?token=QUERYSECRET"), **keys})

    outcome = await channel.deliver(make_job(endpoint))

    assert outcome == expected
    assert len(receiver.requests) == 1  # never a second request, redirects included
    assert "QUERYSECRET" not in repr(outcome)


async def test_retry_after_http_date(
    channel: WebhookChannel, receiver: Receiver, keys: dict[str, str]
) -> None:
    receiver.status = 503
    later = datetime.now(UTC) + timedelta(seconds=90)
    receiver.answer_headers = {"Retry-After": format_datetime(later, usegmt=True)}
    endpoint = channel.validate({"url": receiver.url(), **keys})

    outcome = await channel.deliver(make_job(endpoint))

    assert isinstance(outcome, Retry)
    assert outcome.after is not None
    assert 80 <= outcome.after <= 91


async def test_closed_port_is_retried(channel: WebhookChannel, keys: dict[str, str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = channel.validate({"url": f"https://127.0.0.1:{port}/hook?token=Q1", **keys})

    outcome = await channel.deliver(make_job(endpoint))

    assert isinstance(outcome, Retry)
    assert "Q1" not in outcome.reason
    assert str(port) not in outcome.reason


async def test_slow_receiver_is_retried(
    ca_file: Path, receiver: Receiver, keys: dict[str, str]
) -> None:
    policy = EgressPolicy(allow=LOOPBACK, ca_file=ca_file, read_timeout=0.5)
    channel = WebhookChannel(policy)
    receiver.delay = 5.0
    endpoint = channel.validate({"url": receiver.url(), **keys})

    started = time.monotonic()
    outcome = await channel.deliver(make_job(endpoint))

    assert isinstance(outcome, Retry)
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_ssrf_guard_refusal_fails(
    ca_file: Path, receiver: Receiver, keys: dict[str, str], host: str
) -> None:
    # Saved while loopback was allowed; the operator has since removed it from the list.
    url = receiver.url().replace("127.0.0.1", host)
    endpoint = WebhookChannel(EgressPolicy(allow=LOOPBACK)).validate({"url": url, **keys})
    channel = WebhookChannel(EgressPolicy(allow=(), ca_file=ca_file))

    outcome = await channel.deliver(make_job(endpoint))

    assert outcome == Failed("destination refused by the SSRF guard")
    assert receiver.requests == []


async def test_untrusted_certificate_is_not_delivered(
    receiver: Receiver, keys: dict[str, str]
) -> None:
    channel = WebhookChannel(EgressPolicy(allow=LOOPBACK))  # system CAs: trustme is unknown
    endpoint = channel.validate({"url": receiver.url(), **keys})

    outcome = await channel.deliver(make_job(endpoint))

    assert not isinstance(outcome, Delivered)
    assert receiver.requests == []


async def test_invalid_stored_endpoint_fails_without_raising(channel: WebhookChannel) -> None:
    outcome = await channel.deliver(make_job({"url": "https://example.com/"}))
    assert isinstance(outcome, Failed)
    assert "signing key" in outcome.reason


# -- validate() -----------------------------------------------------------------------------

SECRET = _whsec(b"k" * 32)


@pytest.mark.parametrize(
    "endpoint",
    [
        {"url": "http://example.com/hook", "secret": SECRET},
        {"url": "http://10.0.0.1/hook", "secret": SECRET},  # literal, but not allow-listed
        {"url": "ftp://example.com/hook", "secret": SECRET},
        {"url": "https:///hook", "secret": SECRET},
        {"url": "https://user:pw@example.com/hook", "secret": SECRET},
        {"url": "https://169.254.169.254/latest", "secret": SECRET},  # blocked, not allowed
        {"url": "https://0x7f.0.0.1/hook", "secret": SECRET},  # ambiguous IPv4 notation
        {"url": "https://2130706433/hook", "secret": SECRET},
        {"url": "https://example.com:99999/", "secret": SECRET},
        {"url": "https://exa mple.com/", "secret": SECRET},
        {"url": "https://bad_-.example..com/", "secret": SECRET},
        {"url": "https://[fe80::1%25eth0]/", "secret": SECRET},
        {"url": "https://example.com/" + "a" * 3000, "secret": SECRET},
        {"url": 42, "secret": SECRET},
        {"secret": SECRET},
        {"url": "https://example.com/"},  # no signing key at all
        {"url": "https://example.com/", "secret": None, "secrets": []},
        {"url": "https://example.com/", "secret": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
        {"url": "https://example.com/", "secret": "whsec_not*base64*at*all"},
        {"url": "https://example.com/", "secret": _whsec(b"s" * 16)},  # too short
        {"url": "https://example.com/", "secret": _whsec(b"l" * 65)},  # too long
        {"url": "https://example.com/", "secret": b"whsec_bytes"},
        {"url": "https://example.com/", "secrets": SECRET},  # not a list
        {"url": "https://example.com/", "secrets": [SECRET, _whsec(b"s" * 8)]},
        {"url": "https://example.com/", "secrets": [_whsec(bytes([i]) * 32) for i in range(5)]},
        {
            "url": "https://example.com/",
            "ed25519_private_key": base64.b64encode(b"e" * 31).decode(),
        },
        {"url": "https://example.com/", "ed25519_private_key": 12345},
        {"url": "https://example.com/", "secret": SECRET, "token": "whsec_leak"},
    ],
)
def test_validate_refuses(channel: WebhookChannel, endpoint: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        channel.validate(endpoint)
    message = str(caught.value) + repr(caught.value.extra)
    for name in ("secret", "secrets", "ed25519_private_key"):
        values = endpoint.get(name)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str):
                assert value not in message
                assert value.removeprefix("whsec_") not in message
    assert "a" * 100 not in message  # nor the URL


def test_validate_refuses_a_non_mapping(channel: WebhookChannel) -> None:
    with pytest.raises(BadRequest):
        channel.validate(["https://example.com/"])  # type: ignore[arg-type]


def test_validate_never_echoes_the_url(channel: WebhookChannel) -> None:
    with pytest.raises(BadRequest) as caught:
        channel.validate({"url": "http://example.com/hook?token=TOPSECRET", "secret": SECRET})
    assert "TOPSECRET" not in str(caught.value)


def test_validate_normalises(channel: WebhookChannel) -> None:
    unpadded = _whsec(b"n" * 32).rstrip("=")
    old = _whsec(b"o" * 32)
    seed = base64.b64encode(b"e" * 32).decode().rstrip("=")
    endpoint = channel.validate(
        {
            "url": "HTTPS://Example.com/hook?x=1",
            "secret": unpadded,
            "secrets": [old, old, _whsec(b"n" * 32)],  # duplicates and the current one dropped
            "ed25519_private_key": seed,
        }
    )
    assert endpoint == {
        "url": "https://example.com/hook?x=1",
        "secret": _whsec(b"n" * 32),
        "secrets": [old],
        "ed25519_private_key": base64.b64encode(b"e" * 32).decode(),
    }
    assert channel.validate(endpoint) == endpoint  # idempotent


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",  # an allow-listed literal may use plain http
        "http://127.5.6.7/",
        "https://127.0.0.1/",
        "https://[2606:4700::1111]:8443/x",
        "https://hooks.example.com./x",
    ],
)
def test_validate_accepts(channel: WebhookChannel, url: str) -> None:
    assert channel.validate({"url": url, "secret": SECRET})["url"] == url


def test_validate_http_literal_needs_the_allow_list(ca_file: Path) -> None:
    strict = WebhookChannel(EgressPolicy(allow=(), ca_file=ca_file))
    with pytest.raises(BadRequest, match="https"):
        strict.validate({"url": "http://93.184.215.14/hook", "secret": SECRET})
    with pytest.raises(BadRequest, match="not a public address"):
        strict.validate({"url": "http://127.0.0.1:8080/hook", "secret": SECRET})
    assert strict.validate({"url": "https://93.184.215.14/hook", "secret": SECRET})
