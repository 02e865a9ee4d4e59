"""Unit tests of the SDK: the publisher against httpx.MockTransport, the subscriber against a
real websockets server on loopback that imitates docs/api.md's stream protocol."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection as SyncServerConnection
from websockets.sync.server import serve as sync_serve

import herald.client
from herald.client import (
    AsyncPublisher,
    AsyncSubscriber,
    AuthenticationError,
    ConnectionFailed,
    HeraldClientError,
    ProblemError,
    Publisher,
    PublishResult,
    RequestSigner,
    StreamClosed,
    StreamMessage,
    Subscriber,
    make_ssl_context,
)

BASE = "https://herald.test"
TOKEN_BODY = {"access_token": "tok-1", "token_type": "Bearer", "expires_in": 600, "scope": "x"}
ACCEPTED = {
    "id": "0190a000-0000-7000-8000-000000000001",
    "topic": "orders.shipped",
    "audit": {"index": 17, "leaf_hash": "ab" * 32},
}


def problem(status: int, slug: str, detail: str, **extra: Any) -> httpx.Response:
    body = {
        "type": f"urn:herald:problem:{slug}",
        "title": "Title",
        "status": status,
        "detail": detail,
        **extra,
    }
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


class FakeApi:
    """A MockTransport handler: issues numbered tokens, answers API calls from a script."""

    def __init__(self, *answers: httpx.Response | Exception, expires_in: int = 600) -> None:
        self.answers = list(answers)
        self.expires_in = expires_in
        self.token_requests: list[httpx.Request] = []
        self.api_requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            self.token_requests.append(request)
            n = len(self.token_requests)
            return httpx.Response(
                200, json={**TOKEN_BODY, "access_token": f"tok-{n}", "expires_in": self.expires_in}
            )
        self.api_requests.append(request)
        answer = self.answers.pop(0) if self.answers else httpx.Response(202, json=ACCEPTED)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def keys(self) -> list[str | None]:
        return [r.headers.get("idempotency-key") for r in self.api_requests]


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.calls.append(delay)


def publisher(api: FakeApi, **kwargs: Any) -> AsyncPublisher:
    kwargs.setdefault("sleep", Sleeps())
    return AsyncPublisher(BASE, "app-1", "s3cret", transport=httpx.MockTransport(api), **kwargs)


# -- public API ---------------------------------------------------------------------------


def test_public_names() -> None:
    assert set(herald.client.__all__) == {
        "AsyncAdmin",
        "AsyncPublisher",
        "AsyncSubscriber",
        "Publisher",
        "Subscriber",
        "PublishResult",
        "StreamMessage",
        "HeraldClientError",
        "ConnectionFailed",
        "ProblemError",
        "AuthenticationError",
        "StreamClosed",
        "make_ssl_context",
        "RequestSigner",
        "sign_request",
        "DeviceKey",
        "E2EDecryptionError",
        "register_device_with_token",
        "Receipt",
        "ReceiptInvalid",
    }
    for name in herald.client.__all__:
        assert getattr(herald.client, name).__doc__
    assert issubclass(AuthenticationError, ProblemError)
    for error in (
        ConnectionFailed,
        ProblemError,
        StreamClosed,
        herald.client.E2EDecryptionError,
        herald.client.ReceiptInvalid,
    ):
        assert issubclass(error, HeraldClientError)


def test_ssl_context_is_strict(tmp_path: Path) -> None:
    context = make_ssl_context(None)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(HeraldClientError, match="cannot use CA file"):
        make_ssl_context(tmp_path / "missing.pem")


# -- tokens -------------------------------------------------------------------------------


async def test_token_request_uses_client_secret_basic_with_url_encoding() -> None:
    api = FakeApi()
    async with AsyncPublisher(
        BASE, "app 1:x", "p%ss/w+rd", scope="publish:orders.>", transport=httpx.MockTransport(api)
    ) as pub:
        assert await pub.token() == "tok-1"
    (request,) = api.token_requests
    assert request.method == "POST"
    # RFC 6749 §2.3.1: form-urlencode id and secret, then Basic-encode "id:secret".
    expected = base64.b64encode(b"app+1%3Ax:p%25ss%2Fw%2Brd").decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.content.decode()) == {
        "grant_type": ["client_credentials"],
        "scope": ["publish:orders.>"],
    }


async def test_token_is_cached_and_refreshed_before_expiry() -> None:
    now = [1000.0]
    api = FakeApi()
    async with publisher(api, clock=lambda: now[0]) as pub:
        assert await pub.token() == "tok-1"
        now[0] += 569  # 600 s token: refreshed when less than 30 s remain
        assert await pub.token() == "tok-1"
        await pub.publish("orders.shipped")
        assert len(api.token_requests) == 1
        now[0] += 2
        assert await pub.token() == "tok-2"
        assert api.api_requests[0].headers["authorization"] == "Bearer tok-1"


async def test_short_token_refreshes_at_ten_percent_of_lifetime() -> None:
    now = [0.0]
    api = FakeApi(expires_in=100)
    async with publisher(api, clock=lambda: now[0]) as pub:
        await pub.token()
        now[0] = 89.0
        assert await pub.token() == "tok-1"
        now[0] = 90.5
        assert await pub.token() == "tok-2"


async def test_bad_client_credentials_raise_authentication_error_without_retry() -> None:
    sleeps = Sleeps()

    def handler(request: httpx.Request) -> httpx.Response:
        return problem(
            401, "invalid-client", "client authentication failed", error="invalid_client"
        )

    async with AsyncPublisher(
        BASE, "a", "b", transport=httpx.MockTransport(handler), sleep=sleeps
    ) as pub:
        with pytest.raises(AuthenticationError) as info:
            await pub.publish("orders.shipped")
    assert info.value.slug == "invalid-client"
    assert info.value.body["error"] == "invalid_client"
    assert sleeps.calls == []


async def test_401_refreshes_token_once_and_retries_with_same_key() -> None:
    api = FakeApi(problem(401, "invalid-token", "expired"))
    async with publisher(api) as pub:
        result = await pub.publish("orders.shipped")
    assert result.id == ACCEPTED["id"]
    assert [r.headers["authorization"] for r in api.api_requests] == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]
    assert len(set(api.keys())) == 1


async def test_persistent_401_gives_up_after_one_refresh() -> None:
    api = FakeApi(*(problem(401, "invalid-token", "expired") for _ in range(5)))
    async with publisher(api) as pub:
        with pytest.raises(AuthenticationError, match="401 invalid-token: expired"):
            await pub.publish("orders.shipped")
    assert len(api.api_requests) == 2
    assert len(api.token_requests) == 2


# -- token revocation (RFC 7009) ---------------------------------------------------------


async def test_revoke_token_revokes_the_held_token_then_fetches_a_new_one() -> None:
    api = FakeApi(httpx.Response(200))
    async with AsyncPublisher(
        BASE, "app 1", "s3c/ret", transport=httpx.MockTransport(api), sleep=Sleeps()
    ) as pub:
        assert await pub.token() == "tok-1"
        await pub.revoke_token()
        assert await pub.token() == "tok-2"
    (request,) = api.api_requests
    assert (request.method, request.url.path) == ("POST", "/oauth/revoke")
    # client_secret_basic like the token request, never the bearer token itself.
    expected = base64.b64encode(b"app+1:s3c%2Fret").decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.content.decode(), strict_parsing=True) == {"token": ["tok-1"]}
    assert len(api.token_requests) == 2


async def test_revoke_token_with_nothing_held_sends_nothing() -> None:
    api = FakeApi()
    async with publisher(api) as pub:
        await pub.revoke_token()
    assert api.api_requests == []
    assert api.token_requests == []


async def test_revoke_token_of_another_token_keeps_the_held_one() -> None:
    api = FakeApi(httpx.Response(200, json={}))
    async with publisher(api) as pub:
        assert await pub.token() == "tok-1"
        await pub.revoke_token("sub.jwt+/=")
        assert await pub.token() == "tok-1"
    (request,) = api.api_requests
    assert parse_qs(request.content.decode(), strict_parsing=True) == {"token": ["sub.jwt+/="]}
    assert len(api.token_requests) == 1


async def test_refused_revocation_raises_and_keeps_the_held_token() -> None:
    sleeps = Sleeps()
    api = FakeApi(
        problem(403, "forbidden", "a client may revoke only its own tokens"),
        problem(401, "invalid-client", "client authentication failed"),
    )
    async with publisher(api, sleep=sleeps) as pub:
        await pub.token()
        with pytest.raises(ProblemError) as info:
            await pub.revoke_token("someone-elses")
        assert not isinstance(info.value, AuthenticationError)
        assert (info.value.status, info.value.slug) == (403, "forbidden")
        with pytest.raises(AuthenticationError):
            await pub.revoke_token()
        assert await pub.token() == "tok-1"
    assert len(api.api_requests) == 2  # neither is retried, nor refreshed and resent
    assert sleeps.calls == []


async def test_revocation_is_retried_with_the_same_body_and_signed_each_time() -> None:
    signer = RequestSigner("key-1", Ed25519PrivateKey.generate())
    sleeps = Sleeps()
    api = FakeApi(problem(503, "unavailable", "db down"), httpx.ConnectError("boom"))
    async with publisher(api, signer=signer, sleep=sleeps) as pub:
        await pub.revoke_token("tok-x")
    assert len(api.api_requests) == 3
    assert len({r.content for r in api.api_requests}) == 1
    assert all(r.url.path == "/oauth/revoke" for r in api.api_requests)
    # RFC 9421: every attempt is signed afresh (a new nonce), over the same digest.
    assert len({r.headers["signature-input"] for r in api.api_requests}) == 3
    assert len({r.headers["content-digest"] for r in api.api_requests}) == 1
    assert len(sleeps.calls) == 2


def test_sync_publisher_revoke_token() -> None:
    api = FakeApi(httpx.Response(200), httpx.Response(200))
    with Publisher(BASE, "a", "b", transport=httpx.MockTransport(api)) as pub:
        pub.revoke_token()  # nothing held yet: nothing sent
        assert pub.token() == "tok-1"
        pub.revoke_token()
        pub.revoke_token("other")
        assert pub.token() == "tok-2"
    assert [parse_qs(r.content.decode())["token"] for r in api.api_requests] == [
        ["tok-1"],
        ["other"],
    ]


# -- retries ------------------------------------------------------------------------------


async def test_retries_503_with_same_key_honouring_retry_after() -> None:
    sleeps = Sleeps()
    api = FakeApi(
        httpx.Response(503, headers={"retry-after": "2"}),
        problem(503, "unavailable", "database unreachable"),
        httpx.Response(429),
    )
    async with publisher(api, sleep=sleeps) as pub:
        result = await pub.publish("orders.shipped", title="hi")
    assert result == PublishResult(ACCEPTED["id"], "orders.shipped", 17, "ab" * 32)
    keys = api.keys()
    assert len(keys) == 4
    assert len(set(keys)) == 1
    assert uuid.UUID(str(keys[0])).version == 4
    assert len({r.content for r in api.api_requests}) == 1
    assert sleeps.calls[0] == 2.0
    # full jitter: uniform in [0, min(5, 0.2 * 2**attempt)]
    assert 0.0 <= sleeps.calls[1] <= 0.4
    assert 0.0 <= sleeps.calls[2] <= 0.8


async def test_retries_transport_errors_with_same_key() -> None:
    sleeps = Sleeps()
    api = FakeApi(httpx.ConnectError("boom"), httpx.ReadTimeout("slow"))
    async with publisher(api, sleep=sleeps) as pub:
        await pub.publish("orders.shipped", idempotency_key="order-123-shipped")
    assert api.keys() == ["order-123-shipped"] * 3
    assert len(sleeps.calls) == 2


async def test_retries_are_bounded() -> None:
    sleeps = Sleeps()
    api = FakeApi(*(problem(503, "unavailable", "db down") for _ in range(10)))
    async with publisher(api, sleep=sleeps, max_retries=2) as pub:
        with pytest.raises(ProblemError) as info:
            await pub.publish("orders.shipped")
    assert info.value.status == 503
    assert info.value.slug == "unavailable"
    assert len(api.api_requests) == 3
    assert all(0.0 <= delay <= 5.0 for delay in sleeps.calls)


async def test_network_errors_exhaust_into_connection_failed() -> None:
    api = FakeApi(*(httpx.ConnectError("[Errno 111] Connection refused") for _ in range(10)))
    async with publisher(api, max_retries=1) as pub:
        with pytest.raises(ConnectionFailed, match="is `herald serve` running"):
            await pub.publish("orders.shipped")
    assert len(api.api_requests) == 2


async def test_long_retry_after_is_not_waited_for() -> None:
    sleeps = Sleeps()
    api = FakeApi(problem(503, "unavailable", "maintenance"))
    api.answers[0].headers["retry-after"] = "3600"
    async with publisher(api, sleep=sleeps) as pub:
        with pytest.raises(ProblemError):
            await pub.publish("orders.shipped")
    assert sleeps.calls == []


@pytest.mark.parametrize(
    ("status", "slug"),
    [
        (400, "invalid-topic"),
        (403, "forbidden"),
        (422, "idempotency-key-reused"),
        (501, "internal"),
    ],
)
async def test_client_errors_and_501_are_not_retried(status: int, slug: str) -> None:
    sleeps = Sleeps()
    api = FakeApi(problem(status, slug, "nope"))
    async with publisher(api, sleep=sleeps) as pub:
        with pytest.raises(ProblemError) as info:
            await pub.publish("orders..shipped")
    assert info.value.slug == slug
    assert len(api.api_requests) == 1
    assert sleeps.calls == []


# -- errors and bodies ---------------------------------------------------------------------


async def test_problem_json_becomes_problem_error() -> None:
    api = FakeApi(problem(400, "invalid-topic", "topic token 2 is empty", instance="/v1/messages"))
    async with publisher(api) as pub:
        with pytest.raises(ProblemError) as info:
            await pub.publish("orders..shipped")
    error = info.value
    assert not isinstance(error, AuthenticationError)
    assert (error.status, error.slug, error.title) == (400, "invalid-topic", "Title")
    assert error.type == "urn:herald:problem:invalid-topic"
    assert error.detail == "topic token 2 is empty"
    assert error.body["instance"] == "/v1/messages"
    assert str(error) == "400 invalid-topic: topic token 2 is empty"


async def test_non_problem_error_body_gets_http_slug() -> None:
    api = FakeApi(
        httpx.Response(502, text="<html>bad gateway</html>", headers={"content-type": "text/html"})
    )
    async with publisher(api, max_retries=0) as pub:
        with pytest.raises(ProblemError) as info:
            await pub.get_message("x")
    assert info.value.slug == "http-502"
    assert str(info.value) == "502 http-502: Bad Gateway"


async def test_json_body_is_serialised_once_without_none_fields() -> None:
    api = FakeApi()
    async with publisher(api) as pub:
        await pub.publish(
            "orders.shipped", title="Zoë", data={"order": 123}, ttl=60, idempotency_key="k-1"
        )
    (request,) = api.api_requests
    assert request.url == f"{BASE}/v1/messages"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == "k-1"
    expected = json.dumps(
        {"topic": "orders.shipped", "title": "Zoë", "data": {"order": 123}, "ttl": 60},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()
    assert request.content == expected
    assert request.headers["content-length"] == str(len(expected))


async def test_prepare_hook_sees_every_attempt() -> None:
    seen: list[bytes] = []

    class Signing(AsyncPublisher):
        def _prepare(self, request: httpx.Request) -> httpx.Request:
            seen.append(request.content)
            request.headers["x-signed"] = "yes"
            return request

    api = FakeApi(httpx.Response(503))
    async with Signing(BASE, "a", "b", transport=httpx.MockTransport(api), sleep=Sleeps()) as pub:
        await pub.publish("orders.shipped")
    # The token request and each publish attempt (the first and one retry after 503).
    assert seen == [b"grant_type=client_credentials"] + [b'{"topic":"orders.shipped"}'] * 2
    assert all(r.headers["x-signed"] == "yes" for r in api.api_requests)


async def test_batch_history_message_and_subscriber_token() -> None:
    batch = {
        "results": [
            ACCEPTED,
            {
                "error": {
                    "type": "urn:herald:problem:invalid-topic",
                    "title": "Invalid",
                    "status": 400,
                    "detail": "bad topic",
                }
            },
        ]
    }
    sub = {"token": "sub-jwt", "expires_in": 3600, "recipient": "user-42", "topics": ["a.>"]}
    api = FakeApi(
        httpx.Response(202, json=batch),
        httpx.Response(200, json={"messages": [], "next": None}),
        httpx.Response(200, json={"id": "m1", "deliveries": []}),
        httpx.Response(201, json=sub),
    )
    async with publisher(api) as pub:
        results = await pub.publish_batch(
            [{"topic": "orders.shipped", "title": None}, {"topic": "orders..x"}]
        )
        history = await pub.history("orders.shipped", since="m0", limit=10)
        message = await pub.get_message("m1")
        token = await pub.subscriber_token("user-42", ["a.>"])
    assert isinstance(results[0], PublishResult)
    assert results[0].audit_index == 17
    assert isinstance(results[1], ProblemError)
    assert results[1].slug == "invalid-topic"
    assert history == {"messages": [], "next": None}
    assert message["id"] == "m1"
    assert token["token"] == "sub-jwt"
    batch_req, history_req, message_req, token_req = api.api_requests
    assert batch_req.url.path == "/v1/messages:batch"
    assert json.loads(batch_req.content) == {
        "messages": [{"topic": "orders.shipped"}, {"topic": "orders..x"}]
    }
    assert batch_req.headers["idempotency-key"]
    assert history_req.url.path == "/v1/topics/orders.shipped/messages"
    assert dict(history_req.url.params) == {"since": "m0", "limit": "10"}
    assert message_req.method == "GET"
    assert message_req.url.path == "/v1/messages/m1"
    assert json.loads(token_req.content) == {"recipient": "user-42", "topics": ["a.>"]}


def test_sync_publisher() -> None:
    api = FakeApi()
    with Publisher(BASE, "a", "b", transport=httpx.MockTransport(api)) as pub:
        assert pub.publish("orders.shipped").audit_index == 17
        assert pub.token() == "tok-1"
    pub.close()  # idempotent


# -- routing, schedules, templates, recipients, deliveries ----------------------------------

SCHEDULED = {
    **ACCEPTED,
    "scheduled": True,
    "deliver_at": "2026-12-01T08:00:00Z",
}


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content)


async def test_publish_sends_routing_schedule_and_template_fields() -> None:
    api = FakeApi(httpx.Response(202, json=SCHEDULED))
    shanghai = dt.timezone(dt.timedelta(hours=8))
    async with publisher(api) as pub:
        result = await pub.publish(
            "orders.shipped",
            recipients=["user-42"],
            fallback=({"channels": ["webpush"]}, {"channels": ["email"], "after": 300}),
            category="shipping",
            template={"name": "order-shipped", "locale": "zh-CN", "variables": {"order": 7}},
            deliver_at=dt.datetime(2026, 12, 1, 16, 0, tzinfo=shanghai),
            dedup_window=600,
        )
    (request,) = api.api_requests
    assert request.method == "POST"
    assert request.url.path == "/v1/messages"
    assert request.headers["idempotency-key"]
    assert body_of(request) == {
        "topic": "orders.shipped",
        "recipients": ["user-42"],
        "fallback": [{"channels": ["webpush"]}, {"channels": ["email"], "after": 300}],
        "category": "shipping",
        "template": {"name": "order-shipped", "locale": "zh-CN", "variables": {"order": 7}},
        # RFC 3339 with an offset, normalised to UTC.
        "deliver_at": "2026-12-01T08:00:00Z",
        "dedup_window": 600,
    }
    assert result == PublishResult(
        ACCEPTED["id"],
        "orders.shipped",
        17,
        "ab" * 32,
        scheduled=True,
        deliver_at="2026-12-01T08:00:00Z",
    )


async def test_publish_channels_and_deliver_at_string_are_sent_as_given() -> None:
    api = FakeApi()
    async with publisher(api) as pub:
        result = await pub.publish(
            "orders.shipped", channels=("email", "webhook"), deliver_at="2026-12-01T16:00:00+08:00"
        )
    assert body_of(api.api_requests[0]) == {
        "topic": "orders.shipped",
        "channels": ["email", "webhook"],
        "deliver_at": "2026-12-01T16:00:00+08:00",
    }
    # An answer without "scheduled" (e.g. deliver_at was now): published at once.
    assert (result.scheduled, result.deliver_at) == (False, None)


async def test_naive_deliver_at_is_refused_before_anything_is_sent() -> None:
    api = FakeApi()
    async with publisher(api) as pub:
        with pytest.raises(HeraldClientError, match="deliver_at must be timezone-aware"):
            await pub.publish("orders.shipped", deliver_at=dt.datetime(2026, 12, 1, 8, 0))  # noqa: DTZ001
    assert api.api_requests == []
    assert api.token_requests == []


def test_publish_result_defaults_keep_old_callers_working() -> None:
    result = PublishResult("m1", "orders.shipped", 3, "cd" * 32)
    assert result.scheduled is False
    assert result.deliver_at is None


@pytest.mark.parametrize(
    "answer",
    [
        {**ACCEPTED, "scheduled": True},
        {**ACCEPTED, "scheduled": "yes", "deliver_at": "2026-12-01T08:00:00Z"},
    ],
)
async def test_malformed_scheduled_answer_is_an_error(answer: dict[str, Any]) -> None:
    api = FakeApi(httpx.Response(202, json=answer))
    async with publisher(api) as pub:
        with pytest.raises(HeraldClientError, match="unexpected body"):
            await pub.publish("orders.shipped", deliver_at="2026-12-01T08:00:00Z")


async def test_cancel_posts_an_empty_body_and_is_not_retried() -> None:
    sleeps = Sleeps()
    view = {"id": "m/1", "topic": "orders.shipped", "state": "cancelled", "deliveries": []}
    api = FakeApi(httpx.Response(200, json=view), problem(503, "unavailable", "db down"))
    async with publisher(api, sleep=sleeps) as pub:
        assert await pub.cancel("m/1") == view
        with pytest.raises(ProblemError) as info:
            await pub.cancel("m2")
    assert info.value.status == 503
    first, second = api.api_requests
    assert first.method == "POST"
    assert first.url.raw_path == b"/v1/messages/m%2F1:cancel"
    assert first.content == b""
    assert "content-type" not in first.headers
    assert "idempotency-key" not in first.headers
    assert second.url.raw_path == b"/v1/messages/m2:cancel"
    assert sleeps.calls == []


async def test_template_calls() -> None:
    spec = {"default_locale": "en", "variants": [{"locale": "en", "title": "Hi {{ name }}"}]}
    stored = {"name": "order/shipped", "version": 2, **spec}
    rendered = {"version": 2, "channel": "email", "locale": "en", "title": "Hi Zoë"}
    api = FakeApi(
        httpx.Response(201, json=stored),
        httpx.Response(200, json=stored),
        httpx.Response(200, json={"templates": [{"name": "order/shipped", "version": 2}]}),
        httpx.Response(200, json=rendered),
        httpx.Response(200, json=rendered),
    )
    async with publisher(api) as pub:
        assert await pub.put_template("order/shipped", spec) == stored
        assert await pub.get_template("order/shipped", version=2) == stored
        assert (await pub.list_templates())["templates"][0]["version"] == 2
        preview = await pub.render_template(
            "order/shipped", channel="email", locale="en", variables={"name": "Zoë"}
        )
        assert preview == rendered
        await pub.render_template("order/shipped")
    put, get, listing, render, bare = api.api_requests
    assert (put.method, put.url.raw_path) == ("PUT", b"/v1/templates/order%2Fshipped")
    assert put.headers["content-type"] == "application/json"
    assert body_of(put) == spec
    assert (get.method, get.url.raw_path) == ("GET", b"/v1/templates/order%2Fshipped?version=2")
    assert (listing.method, listing.url.raw_path) == ("GET", b"/v1/templates")
    assert (render.method, render.url.raw_path) == (
        "POST",
        b"/v1/templates/order%2Fshipped:render",
    )
    assert body_of(render) == {"channel": "email", "locale": "en", "variables": {"name": "Zoë"}}
    assert body_of(bare) == {}
    assert all("idempotency-key" not in r.headers for r in api.api_requests)


async def test_recipient_and_delivery_calls() -> None:
    view = {"recipient": "user 42", "endpoints": [], "preferences": {"locale": "en"}}
    delivery = {"id": "d1", "state": "pending"}
    api = FakeApi(
        httpx.Response(200, json=view),
        httpx.Response(200, json=view),
        httpx.Response(200, json={"deliveries": [delivery], "next": "d1"}),
        httpx.Response(200, json={"deliveries": [], "next": None}),
        httpx.Response(202, json=delivery),
    )
    endpoint = {"channel": "webhook", "url": "https://hooks.test/x", "secret": "whsec_x"}
    async with publisher(api) as pub:
        assert await pub.put_recipient("user 42", [endpoint], {"locale": "en"}) == view
        assert await pub.get_recipient("user 42") == view
        page = await pub.deliveries(state="dead", limit=10, after="d0")
        assert page["next"] == "d1"
        await pub.deliveries()
        assert await pub.retry_delivery("d1") == delivery
    put, get, listed, unfiltered, retried = api.api_requests
    assert (put.method, put.url.raw_path) == ("PUT", b"/v1/recipients/user%2042")
    assert body_of(put) == {"endpoints": [endpoint], "preferences": {"locale": "en"}}
    assert (get.method, get.url.raw_path) == ("GET", b"/v1/recipients/user%2042")
    assert listed.url.path == "/v1/deliveries"
    assert dict(listed.url.params) == {"state": "dead", "limit": "10", "after": "d0"}
    assert unfiltered.url.raw_path == b"/v1/deliveries"
    assert (retried.method, retried.url.raw_path) == ("POST", b"/v1/deliveries/d1:retry")
    assert retried.content == b""


async def test_put_recipient_without_preferences_leaves_them_out() -> None:
    api = FakeApi(httpx.Response(200, json={"recipient": "r", "endpoints": []}))
    async with publisher(api) as pub:
        await pub.put_recipient("r", [])
    assert body_of(api.api_requests[0]) == {"endpoints": []}


@pytest.mark.parametrize(
    ("method", "args", "retried"),
    [
        # Safe or idempotent: a repeat after a lost answer leaves the same state.
        ("get_template", ("t",), True),
        ("list_templates", (), True),
        ("render_template", ("t",), True),
        ("put_recipient", ("r", []), True),
        ("get_recipient", ("r",), True),
        ("deliveries", (), True),
        # A repeat would store a second version, or answer 409/404 for a success.
        ("put_template", ("t", {}), False),
        ("cancel", ("m",), False),
        ("retry_delivery", ("d",), False),
    ],
)
async def test_only_safe_calls_are_retried(
    method: str, args: tuple[Any, ...], *, retried: bool
) -> None:
    api = FakeApi(problem(503, "unavailable", "db down"), httpx.Response(200, json={}))
    async with publisher(api) as pub:
        call = getattr(pub, method)
        if retried:
            assert await call(*args) == {}
        else:
            with pytest.raises(ProblemError):
                await call(*args)
    assert len(api.api_requests) == (2 if retried else 1)


async def test_state_changing_calls_are_signed_and_reads_are_not() -> None:
    signer = RequestSigner("key-1", Ed25519PrivateKey.generate())
    api = FakeApi(*(httpx.Response(200, json={}) for _ in range(6)))
    async with publisher(api, signer=signer) as pub:
        await pub.cancel("m1")
        await pub.put_template("t", {"default_locale": "en", "variants": []})
        await pub.put_recipient("r", [])
        await pub.retry_delivery("d1")
        await pub.get_template("t")
        await pub.deliveries()
    signed = ["signature" in r.headers for r in api.api_requests]
    assert signed == [True, True, True, True, False, False]
    # RFC 9421: an empty body has a digest too, so the server can verify it is empty.
    assert api.api_requests[0].headers["content-digest"].startswith("sha-256=:")


def test_sync_publisher_new_calls() -> None:
    api = FakeApi(
        httpx.Response(202, json=SCHEDULED),
        *(httpx.Response(200, json={"ok": n}) for n in range(9)),
    )
    utc_at = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
    with Publisher(BASE, "a", "b", transport=httpx.MockTransport(api)) as pub:
        result = pub.publish(
            "orders.shipped",
            channels=["email"],
            category="c",
            template={"name": "t"},
            deliver_at=utc_at,
            dedup_window=0,
        )
        assert result.scheduled
        assert result.deliver_at == "2026-12-01T08:00:00Z"
        answers = [
            pub.cancel("m1"),
            pub.put_template("t", {"default_locale": "en"}),
            pub.get_template("t", 3),
            pub.list_templates(),
            pub.render_template("t", channel="email", locale="en", version=3, variables={}),
            pub.put_recipient("r", [], {"locale": "en"}),
            pub.get_recipient("r"),
            pub.deliveries("dead", 5, "d0"),
            pub.retry_delivery("d1"),
        ]
        with pytest.raises(HeraldClientError, match="timezone-aware"):
            pub.publish("orders.shipped", deliver_at=dt.datetime(2026, 12, 1))  # noqa: DTZ001
    assert answers == [{"ok": n} for n in range(9)]
    assert body_of(api.api_requests[0]) == {
        "topic": "orders.shipped",
        "channels": ["email"],
        "category": "c",
        "template": {"name": "t"},
        "deliver_at": "2026-12-01T08:00:00Z",
        "dedup_window": 0,
    }
    assert [r.url.raw_path for r in api.api_requests[1:]] == [
        b"/v1/messages/m1:cancel",
        b"/v1/templates/t",
        b"/v1/templates/t?version=3",
        b"/v1/templates",
        b"/v1/templates/t:render",
        b"/v1/recipients/r",
        b"/v1/recipients/r",
        b"/v1/deliveries?state=dead&limit=5&after=d0",
        b"/v1/deliveries/d1:retry",
    ]
    assert body_of(api.api_requests[5]) == {
        "channel": "email",
        "locale": "en",
        "version": 3,
        "variables": {},
    }


# -- real sockets: refused connection, untrusted certificate --------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_refused_connection_is_actionable() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    sleeps = Sleeps()
    async with AsyncPublisher(url, "a", "b", sleep=sleeps, max_retries=1) as pub:
        with pytest.raises(ConnectionFailed) as info:
            await pub.token()
    assert str(info.value) == (
        f"cannot reach {url}: connection refused — is `herald serve` running?"
    )
    assert len(sleeps.calls) == 1


class Pki:
    def __init__(self, directory: Path) -> None:
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Herald test CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        cert_file, key_file = directory / "cert.pem", directory / "key.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_context.load_cert_chain(cert_file, key_file)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


# -- subscriber -----------------------------------------------------------------------------

M1, M2, M3 = (f"0190a000-0000-7000-8000-00000000000{n}" for n in (1, 2, 3))


def message_frame(message_id: str) -> str:
    return json.dumps(
        {
            "type": "message",
            "id": message_id,
            "topic": "orders.shipped",
            "title": f"title {message_id[-1]}",
            "body": "b",
            "data": {"n": 1},
            "priority": "normal",
            "created_at": "2025-01-01T00:00:00Z",
            "audit": {"index": int(message_id[-1]), "leaf_hash": "cd" * 32},
        }
    )


READY = json.dumps({"type": "ready", "topics": ["orders.>"], "resumed": 0})
HEARTBEAT = json.dumps({"type": "heartbeat", "time": 1735689600})


class StreamServer:
    """Records each connection's request path and Authorization header."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.auth: list[str | None] = []
        self.client_frames: list[dict[str, Any]] = []
        self.url = ""


Handler = Callable[[ServerConnection, int], Any]


@pytest.fixture
async def stream_server() -> AsyncIterator[Callable[..., Any]]:
    servers: list[Any] = []

    async def start(
        handler: Handler, *, tls: ssl.SSLContext | None = None, process_request: Any = None
    ) -> StreamServer:
        state = StreamServer()

        async def on_connect(connection: ServerConnection) -> None:
            state.paths.append(connection.request.path)
            state.auth.append(connection.request.headers.get("Authorization"))
            await handler(connection, len(state.paths))

        server = await serve(
            on_connect, "127.0.0.1", 0, ssl=tls, process_request=process_request
        ).__aenter__()
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        state.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        return state

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def drain(sub: AsyncSubscriber, into: list[StreamMessage]) -> None:
    async for message in sub:
        into.append(message)


async def test_subscriber_resumes_without_duplicates_then_stops_on_4401(
    stream_server: Callable[..., Any],
) -> None:
    async def handler(ws: ServerConnection, n: int) -> None:
        await ws.send(READY)
        if n == 1:
            await ws.send(message_frame(M1))
            await ws.send(HEARTBEAT)
            await ws.send(message_frame(M2))
            await ws.close(1001, "going away")
        else:
            await ws.send(message_frame(M2))  # re-sent after the resume: must be dropped
            await ws.send(message_frame(M3))
            await ws.close(4401, "token expired")

    server = await stream_server(handler)
    received: list[StreamMessage] = []
    async with AsyncSubscriber(
        server.url, "sub-token", topics=["orders.>", "user.*"], max_backoff=0.05
    ) as sub:
        with pytest.raises(StreamClosed) as info:
            await drain(sub, received)
        assert sub.last_id == M3
        assert sub.ready_count == 2
        assert [m async for m in sub] == []  # finished for good
    assert (info.value.code, info.value.reason) == (4401, "token expired")
    assert [m.id for m in received] == [M1, M2, M3]
    first = received[0]
    assert (first.topic, first.title, first.data, first.audit_index) == (
        "orders.shipped",
        "title 1",
        {"n": 1},
        1,
    )
    assert first.raw["type"] == "message"
    assert server.auth == ["Bearer sub-token", "Bearer sub-token"]
    first_query = parse_qs(urlsplit(server.paths[0]).query)
    assert urlsplit(server.paths[0]).path == "/v1/stream"
    assert first_query == {"topics": ["orders.>,user.*"]}
    assert parse_qs(urlsplit(server.paths[1]).query) == {
        "topics": ["orders.>,user.*"],
        "since": [M2],
    }


async def test_subscriber_without_reconnect_raises_on_going_away(
    stream_server: Callable[..., Any],
) -> None:
    async def handler(ws: ServerConnection, n: int) -> None:
        await ws.send(message_frame(M1))
        await ws.close(1001, "going away")

    server = await stream_server(handler)
    async with AsyncSubscriber(server.url, "t", since=M1[:-1] + "0", reconnect=False) as sub:
        assert (await anext(sub)).id == M1
        with pytest.raises(StreamClosed) as info:
            await anext(sub)
    assert info.value.code == 1001
    assert len(server.paths) == 1
    assert parse_qs(urlsplit(server.paths[0]).query) == {"since": [M1[:-1] + "0"]}


async def test_acks_are_sent(stream_server: Callable[..., Any]) -> None:
    frames: list[dict[str, Any]] = []

    async def handler(ws: ServerConnection, n: int) -> None:
        await ws.send(READY)
        await ws.send(message_frame(M1))
        await ws.send(message_frame(M2))
        await ws.send(json.dumps({"type": "error", "problem": {"detail": "unknown frame"}}))
        async for raw in ws:
            frames.append(json.loads(raw))
            if len(frames) == 2:
                break
        await ws.close(1000, "bye")

    server = await stream_server(handler)
    async with AsyncSubscriber(server.url, "t", auto_ack=True) as sub:
        ids = [message.id async for message in sub]
    assert ids == [M1, M2]
    assert frames == [{"type": "ack", "id": M1}, {"type": "ack", "id": M2}]

    frames.clear()
    server = await stream_server(handler)
    async with AsyncSubscriber(server.url, "t") as sub:
        async for message in sub:
            await sub.ack(message.id)
    assert frames == [{"type": "ack", "id": M1}, {"type": "ack", "id": M2}]


async def test_refused_handshake_is_a_problem(stream_server: Callable[..., Any]) -> None:
    def reject(connection: ServerConnection, request: Request) -> Response:
        body = json.dumps(
            {
                "type": "urn:herald:problem:invalid-token",
                "title": "Invalid",
                "status": 401,
                "detail": "token expired",
            }
        ).encode()
        headers = Headers(
            [("Content-Type", "application/problem+json"), ("Content-Length", str(len(body)))]
        )
        return Response(401, "Unauthorized", headers, body)

    async def handler(ws: ServerConnection, n: int) -> None:
        raise AssertionError("not reached")

    server = await stream_server(handler, process_request=reject)
    with pytest.raises(AuthenticationError) as info:
        async with AsyncSubscriber(server.url, "t"):
            pass
    assert info.value.slug == "invalid-token"


async def test_subscriber_connection_refused() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    sub = AsyncSubscriber(url, "t")
    with pytest.raises(ConnectionFailed, match="connection refused — is `herald serve` running"):
        await anext(sub)
    await sub.close()


async def test_tls_needs_the_ca(stream_server: Callable[..., Any], pki: Pki) -> None:
    async def handler(ws: ServerConnection, n: int) -> None:
        await ws.send(message_frame(M1))
        await ws.close(1000)

    server = await stream_server(handler, tls=pki.server_context)
    hint = "certificate not trusted — pass --ca PATH (the dev CA is .herald/tls/ca.pem)"
    with pytest.raises(ConnectionFailed) as info:
        async with AsyncSubscriber(server.url, "t"):
            pass
    assert str(info.value) == f"cannot reach {server.url}: {hint}"

    sleeps = Sleeps()
    async with AsyncPublisher(server.url, "a", "b", sleep=sleeps) as pub:
        with pytest.raises(ConnectionFailed) as info:
            await pub.token()
    assert str(info.value) == f"cannot reach {server.url}: {hint}"
    assert sleeps.calls == []  # an untrusted certificate is not retried

    async with AsyncSubscriber(server.url, "t", ca=pki.ca_file) as sub:
        assert [m.id async for m in sub] == [M1]


@pytest.fixture
def sync_server() -> Iterator[StreamServer]:
    state = StreamServer()

    def handler(ws: SyncServerConnection) -> None:
        state.paths.append(ws.request.path if ws.request else "")
        ws.send(READY)
        ws.send(message_frame(M1))
        ws.send(message_frame(M2))
        state.client_frames.append(json.loads(ws.recv()))
        ws.close(1000)

    with sync_serve(handler, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        state.url = f"http://127.0.0.1:{server.socket.getsockname()[1]}"
        yield state
        server.shutdown()
        thread.join(timeout=5)


def test_sync_subscriber(sync_server: StreamServer) -> None:
    with Subscriber(sync_server.url, "t", topics=["orders.>"]) as sub:
        first = next(sub)
        sub.ack(first.id)
        rest = list(sub)
        assert sub.last_id == M2
    assert [first.id] + [m.id for m in rest] == [M1, M2]
    assert sync_server.client_frames == [{"type": "ack", "id": M1}]


async def test_odd_frames_are_ignored_and_oversized_frames_are_fatal(
    stream_server: Callable[..., Any],
) -> None:
    async def handler(ws: ServerConnection, n: int) -> None:
        await ws.send("not json")
        await ws.send(json.dumps(["a", "list"]))
        await ws.send(json.dumps({"type": "message", "topic": "no.id"}))
        await ws.send(json.dumps({"type": "future-frame"}))
        await ws.send(message_frame(M1))
        await ws.send("x" * (2 * 1024 * 1024))
        await ws.wait_closed()

    server = await stream_server(handler)
    async with AsyncSubscriber(server.url, "t", max_backoff=0.01) as sub:
        assert (await anext(sub)).id == M1
        with pytest.raises(StreamClosed) as info:
            await anext(sub)
    assert info.value.code == 1009
    assert len(server.paths) == 1


async def test_reconnect_retries_through_a_failed_handshake(
    stream_server: Callable[..., Any],
) -> None:
    attempts: list[str] = []

    def flaky(connection: ServerConnection, request: Request) -> Response | None:
        attempts.append(request.path)
        if len(attempts) == 2:
            return connection.respond(503, "restarting\n")
        return None

    async def handler(ws: ServerConnection, n: int) -> None:
        await ws.send(message_frame(M1 if n == 1 else M2))
        await ws.close(1012 if n == 1 else 1000)

    server = await stream_server(handler, process_request=flaky)
    async with AsyncSubscriber(server.url, "t", max_backoff=0.01) as sub:
        assert [m.id async for m in sub] == [M1, M2]
    assert len(attempts) == 3
    assert all(f"since={M1}" in path for path in attempts[1:])
