"""Real-time streams against a real ``herald serve``: WebSocket and SSE (docs/api.md, Real time).

Every test uses topics under its own random prefix, so that tests never see each other's
messages on the shared session server. Streams are ordered: to prove that a message did
*not* arrive, a test publishes it before a message that must arrive, and checks that the
latter comes first.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import json
import os
import re
import socket
import ssl
import struct
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from herald.client import AsyncPublisher, AsyncSubscriber, RequestSigner
from herald.config import load_settings
from herald.core.ids import default_generator
from herald.core.topics import TopicPattern
from herald.crypto.signing import PURPOSE_TOKEN, unwrap_signing_key
from herald.crypto.tokens import TokenService
from herald.service.runtime import Runtime

WAIT = 10.0  # seconds: the bound of every single wait in this module
PROBLEM_PREFIX = "urn:herald:problem:"


def _api_conftest() -> ModuleType:
    """tests/api/conftest.py, for its plain helper functions (start_server, …)."""
    path = Path(__file__).with_name("conftest.py").resolve()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve() == path:
            return module
    spec = importlib.util.spec_from_file_location("herald_api_conftest", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def new_prefix() -> str:
    """A topic prefix no other test uses: ``t<32 hex>``."""
    return "t" + uuid.uuid4().hex


# -- HTTP helpers ---------------------------------------------------------------------------


@dataclass
class Api:
    """The REST calls the stream tests need, with a demo access token."""

    client: httpx.AsyncClient
    access: str

    def _auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.access}"}

    async def publish(
        self, topic: str, *, access: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        response = await self.client.post(
            "/v1/messages", json={"topic": topic, **fields}, headers=self._auth(access)
        )
        assert response.status_code == 202, response.text
        return dict(response.json())

    async def publish_id(self, topic: str, **fields: Any) -> str:
        return str((await self.publish(topic, **fields))["id"])

    async def sub_token(
        self, recipient: str, topics: list[str], *, access: str | None = None, **extra: Any
    ) -> str:
        response = await self.client.post(
            "/v1/subscriber-tokens",
            json={"recipient": recipient, "topics": topics, **extra},
            headers=self._auth(access),
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["recipient"] == recipient
        assert body["topics"] == topics
        return str(body["token"])

    async def ticket_response(self, token: str) -> httpx.Response:
        return await self.client.post("/v1/stream-tickets", headers=self._auth(token))

    async def ticket(self, token: str) -> str:
        response = await self.ticket_response(token)
        assert response.status_code == 201, response.text
        return str(response.json()["ticket"])

    async def get_message(self, message_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/messages/{message_id}", headers=self._auth())
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def readyz_streams(self) -> int:
        response = await self.client.get("/readyz")
        return int(response.json()["streams"])


@pytest.fixture
def access(server: Any) -> str:
    return str(server.token())


@pytest.fixture
async def api(server: Any, access: str) -> AsyncIterator[Api]:
    async with server.async_client(timeout=WAIT) as client:
        yield Api(client, access)


# -- WebSocket helpers ----------------------------------------------------------------------


def ws_url(server: Any, **params: str) -> str:
    base = server.url.replace("https://", "wss://", 1) + "/v1/stream"
    return f"{base}?{urlencode(params)}" if params else base


def ws_connect(
    server: Any, bearer: str | None = None, *, headers: dict[str, str] | None = None, **params: str
) -> Any:
    """``websockets`` connect to ``/v1/stream`` (use as ``async with``); ``params`` is the query."""
    all_headers = dict(headers or {})
    if bearer is not None:
        all_headers["Authorization"] = f"Bearer {bearer}"
    return connect(
        ws_url(server, **params),
        additional_headers=all_headers,
        ssl=server.ssl_context(),
        open_timeout=WAIT,
        close_timeout=2,
        compression=None,
    )


async def next_frame(
    ws: ClientConnection, *, skip: tuple[str, ...] = ("heartbeat",), timeout: float = WAIT
) -> dict[str, Any]:
    """The next server frame whose type is not in ``skip``."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            assert isinstance(frame, dict), frame
            if frame.get("type") not in skip:
                return frame


async def expect_ready(ws: ClientConnection) -> dict[str, Any]:
    frame = await next_frame(ws)
    assert frame["type"] == "ready", frame
    return frame


async def next_message(ws: ClientConnection, timeout: float = WAIT) -> dict[str, Any]:
    frame = await next_frame(ws, timeout=timeout)
    assert frame["type"] == "message", frame
    return frame


async def messages_until(ws: ClientConnection, last_id: str) -> list[str]:
    """Ids of the message frames received up to and including ``last_id``."""
    ids: list[str] = []
    async with asyncio.timeout(WAIT * 3):
        while not ids or ids[-1] != last_id:
            ids.append(str((await next_message(ws))["id"]))
    return ids


async def expect_error(
    ws: ClientConnection, status: int, slug: str | None = None
) -> dict[str, Any]:
    frame = await next_frame(ws)
    assert frame["type"] == "error", frame
    problem = frame["problem"]
    assert problem["status"] == status, problem
    assert problem["type"].startswith(PROBLEM_PREFIX), problem
    assert problem["detail"], problem
    if slug is not None:
        assert problem["type"] == PROBLEM_PREFIX + slug, problem
    return dict(problem)


async def read_until_closed(ws: ClientConnection, forbidden: set[str] | None = None) -> None:
    """Read frames until the connection closes (raises ConnectionClosed) or WAIT passes."""
    async with asyncio.timeout(WAIT):
        while True:
            frame = json.loads(await ws.recv())
            assert frame.get("type") not in (forbidden or set()), frame


async def expect_closed(
    server: Any,
    code: int,
    bearer: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **params: str,
) -> str:
    """Connect and expect the server to close with ``code`` before any ``ready``."""
    async with ws_connect(server, bearer, headers=headers, **params) as ws:
        with pytest.raises(ConnectionClosed):
            await read_until_closed(ws, forbidden={"ready", "message"})
        assert ws.close_code == code, (ws.close_code, ws.close_reason)
        return str(ws.close_reason or "")


async def expect_ws_works(
    server: Any, api: Api, bearer: str | None, topic: str, **params: str
) -> None:
    """A stream opened this way is ready and receives a message published to ``topic``."""
    async with ws_connect(server, bearer, **params) as ws:
        await expect_ready(ws)
        message_id = await api.publish_id(topic, title="works")
        assert (await next_message(ws))["id"] == message_id


async def publish_and_expect(
    api: Api, ws: ClientConnection, plan: list[tuple[str, bool]], **fields: Any
) -> None:
    """Publish ``(topic, should_arrive)`` in order; exactly the expected ones arrive, in order.

    The last entry must be expected: once it arrives, everything published before it that
    was going to arrive has arrived (streams are ordered).
    """
    assert plan[-1][1], "the plan must end with a message that arrives"
    expected: list[str] = []
    for topic, arrives in plan:
        message_id = await api.publish_id(topic, title=topic, **fields)
        if arrives:
            expected.append(message_id)
    assert await messages_until(ws, expected[-1]) == expected


# -- WebSocket: basics ----------------------------------------------------------------------


async def test_ws_first_frame_is_ready_then_live_message_has_every_field(
    server: Any, api: Api
) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    async with ws_connect(server, token) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        # heartbeat: the test servers' HERALD_HEARTBEAT_INTERVAL (tests/api/conftest.py)
        assert first == {"type": "ready", "topics": [f"{p}.>"], "resumed": 0, "heartbeat": 1}

        published = await api.publish(
            f"{p}.orders.shipped",
            title="Order 123 shipped",
            body="It is on its way",
            data={"order": 123, "tags": ["a"]},
            priority="high",
        )
        frame = await next_message(ws)
    assert frame["id"] == published["id"]
    assert frame["topic"] == f"{p}.orders.shipped"
    assert frame["title"] == "Order 123 shipped"
    assert frame["body"] == "It is on its way"
    assert frame["data"] == {"order": 123, "tags": ["a"]}
    assert frame["priority"] == "high"
    assert isinstance(frame["created_at"], str)
    assert frame["created_at"]
    assert frame["audit"] == published["audit"]
    assert isinstance(frame["audit"]["index"], int)
    assert re.fullmatch(r"[0-9a-f]{64}", frame["audit"]["leaf_hash"])


async def test_ws_message_without_optional_fields(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    async with ws_connect(server, token) as ws:
        await expect_ready(ws)
        message_id = (await api.publish(f"{p}.bare"))["id"]
        frame = await next_message(ws)
    assert frame["id"] == message_id
    assert frame["title"] is None
    assert frame["body"] is None
    assert frame["data"] is None
    assert frame["priority"] == "normal"


async def test_ws_single_token_wildcard(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    async with ws_connect(server, token, topics=f"{p}.orders.*") as ws:
        ready = await expect_ready(ws)
        assert ready["topics"] == [f"{p}.orders.*"]
        await publish_and_expect(
            api,
            ws,
            [
                (f"{p}.orders.a.b", False),  # * is exactly one token
                (f"{p}.orders", False),  # ... and at least one
                (f"{p}.ordersx.a", False),
                (f"{p}.other.a", False),
                (f"{p}.orders.a", True),
                (f"{p}.orders.b", True),
            ],
        )


async def test_ws_full_wildcard(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    async with ws_connect(server, token, topics=f"{p}.orders.>") as ws:
        await expect_ready(ws)
        await publish_and_expect(
            api,
            ws,
            [
                (f"{p}.orders", False),  # > needs one or more trailing tokens
                (f"{p}.orders.a.b.c", True),
                (f"{p}.other.a", False),
                (f"{p}.orders.a", True),
            ],
        )


async def test_ws_several_patterns_in_query(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    async with ws_connect(server, token, topics=f"{p}.a,{p}.c.*") as ws:
        ready = await expect_ready(ws)
        assert ready["topics"] == [f"{p}.a", f"{p}.c.*"]
        await publish_and_expect(
            api,
            ws,
            [(f"{p}.b", False), (f"{p}.a", True), (f"{p}.c.d.e", False), (f"{p}.c.d", True)],
        )


async def test_ws_default_topics_are_all_of_the_token(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.a.>", f"{p}.b"])
    async with ws_connect(server, token) as ws:
        ready = await expect_ready(ws)
        assert ready["topics"] == [f"{p}.a.>", f"{p}.b"]
        await publish_and_expect(
            api, ws, [(f"{p}.c", False), (f"{p}.a.x", True), (f"{p}.b.x", False), (f"{p}.b", True)]
        )


async def test_ws_recipients_reach_only_their_streams(server: Any, api: Api) -> None:
    p = new_prefix()
    r1 = await api.sub_token("r1", [f"{p}.>"])
    r2 = await api.sub_token("r2", [f"{p}.>"])
    async with ws_connect(server, r1) as ws1, ws_connect(server, r2) as ws2:
        await expect_ready(ws1)
        await expect_ready(ws2)
        only_r1 = await api.publish_id(f"{p}.x", title="for r1", recipients=["r1"])
        await api.publish_id(f"{p}.x", title="for r3", recipients=["r3"])
        both = await api.publish_id(f"{p}.x", title="for r1 and r2", recipients=["r2", "r1"])
        everyone = await api.publish_id(f"{p}.x", title="broadcast")
        assert await messages_until(ws1, everyone) == [only_r1, both, everyone]
        assert await messages_until(ws2, everyone) == [both, everyone]


async def test_ws_other_tenant_never_sees_messages(server: Any, api: Api) -> None:
    p = new_prefix()
    other_access = server.token(server.other)
    demo_token = await api.sub_token("user-1", [f"{p}.>"])
    other_token = await api.sub_token("user-1", [f"{p}.>"], access=other_access)
    async with (
        ws_connect(server, demo_token) as demo_ws,
        ws_connect(server, other_token) as other_ws,
    ):
        await expect_ready(demo_ws)
        await expect_ready(other_ws)
        demo_id = await api.publish_id(f"{p}.x", title="demo")
        other_id = await api.publish_id(f"{p}.x", title="other", access=other_access)
        demo_last = await api.publish_id(f"{p}.x", title="demo again")
        assert await messages_until(other_ws, other_id) == [other_id]
        assert await messages_until(demo_ws, demo_last) == [demo_id, demo_last]


# -- WebSocket: resume ----------------------------------------------------------------------


async def test_ws_resume_after_disconnect_no_gaps_no_duplicates(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    async with ws_connect(server, token) as ws:
        await expect_ready(ws)
        m1 = await api.publish_id(f"{p}.x", title="m1")
        assert (await next_message(ws))["id"] == m1

    m2 = await api.publish_id(f"{p}.x", title="m2")
    await api.publish_id(f"{p}.x", title="for someone else", recipients=["user-2"])
    await api.publish_id(f"{p}.elsewhere", title="not subscribed")  # filtered by topics below
    m3 = await api.publish_id(f"{p}.x", title="m3", recipients=["user-1"])

    async with ws_connect(server, token, since=m1, topics=f"{p}.x") as ws:
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(WAIT):
            while not any(f["type"] == "ready" for f in frames):
                frames.append(await next_frame(ws))
        replayed = [f["id"] for f in frames if f["type"] == "message"]
        assert replayed == [m2, m3]
        ready = next(f for f in frames if f["type"] == "ready")
        assert ready["resumed"] == 2
        assert ready["topics"] == [f"{p}.x"]
        assert [f["title"] for f in frames if f["type"] == "message"] == ["m2", "m3"]

        m4 = await api.publish_id(f"{p}.x", title="m4")
        m5 = await api.publish_id(f"{p}.x", title="m5")
        assert await messages_until(ws, m5) == [m4, m5]


async def test_ws_resume_while_publishing_is_gap_free_and_duplicate_free(
    server: Any, api: Api
) -> None:
    """Messages committed while the stream reconnects arrive exactly once, in order."""
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    since = await api.publish_id(f"{p}.x", title="m0")
    published: list[str] = []

    async def publisher() -> None:
        for i in range(40):
            published.append(await api.publish_id(f"{p}.x", title=f"m{i + 1}"))

    task = asyncio.create_task(publisher())
    try:
        await asyncio.sleep(0.05)
        async with ws_connect(server, token, since=since) as ws:
            received: list[str] = []
            async with asyncio.timeout(WAIT * 3):
                while len(received) < 40:
                    frame = await next_frame(ws)
                    if frame["type"] == "message":
                        received.append(frame["id"])
                await task
            assert received == published
            # nothing else (no late duplicate) before a fresh message
            last = await api.publish_id(f"{p}.x", title="last")
            assert await messages_until(ws, last) == [last]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_ws_resume_since_unknown_message_is_4400(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    unknown = default_generator().new_str()
    reason = await expect_closed(server, 4400, token, since=unknown)
    assert reason  # says why


async def test_ws_resume_since_malformed_id_is_4400(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    await expect_closed(server, 4400, token, since="not-a-uuid")
    await expect_closed(server, 4400, token, since=str(uuid.uuid4()))  # v4, not v7


async def test_ws_resume_since_other_tenants_message_is_4400(server: Any, api: Api) -> None:
    p = new_prefix()
    other_id = await api.publish_id(f"{p}.x", access=server.token(server.other))
    token = await api.sub_token("user-1", [f"{p}.>"])
    await expect_closed(server, 4400, token, since=other_id)


async def test_ws_bad_pattern_is_4400(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    await expect_closed(server, 4400, token, topics=f"{p}..x")
    await expect_closed(server, 4400, token, topics=f"{p}.>.x")


# -- WebSocket: authentication and authorisation --------------------------------------------


async def expired_subscriber_token(server: Any, topics: list[str]) -> str:
    """A subscriber token signed with the server's real key, expired an hour ago."""
    port = urlsplit(server.url).port
    assert port is not None
    settings = load_settings(data_dir=server.data_dir, port=port)
    rt = await Runtime.open(settings, migrate=False)
    try:
        records = await rt.store.signing_keys(PURPOSE_TOKEN)
        keys = [await unwrap_signing_key(rt.provider, r) for r in records if r.retired_at is None]
    finally:
        await rt.close()
    past = time.time() - 3600
    service = TokenService(
        issuer=server.url, keys=keys, clock=lambda: past, new_jti=lambda: str(uuid.uuid4())
    )
    token, _ = service.issue_subscriber(
        tenant_id=server.demo.tenant,
        client_id=server.demo.client_id,
        recipient="user-1",
        patterns=[TopicPattern.parse(t) for t in topics],
        ttl=60,
    )
    return token


def foreign_key_token(server: Any, topics: list[str]) -> str:
    """Well-formed subscriber-token claims, signed by a key the server does not know."""
    now = int(time.time())
    claims = {
        "iss": server.url,
        "aud": server.url + "/v1/stream",
        "sub": "user-1",
        "client_id": server.demo.client_id,
        "tenant": server.demo.tenant,
        "topics": topics,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(
        claims,
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": "unknown", "typ": "herald-sub+jwt"},
    )


async def test_ws_missing_token_is_4401(server: Any) -> None:
    await expect_closed(server, 4401)


async def test_ws_garbage_tokens_are_4401(server: Any) -> None:
    await expect_closed(server, 4401, "not-a-jwt")
    await expect_closed(server, 4401, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    await expect_closed(server, 4401, ticket="no-such-ticket")


async def test_ws_access_token_is_not_a_subscriber_token(server: Any, access: str) -> None:
    await expect_closed(server, 4401, access)


async def test_ws_token_signed_by_unknown_key_is_4401(server: Any) -> None:
    await expect_closed(server, 4401, foreign_key_token(server, [f"{new_prefix()}.>"]))


async def test_ws_expired_token_is_4401(server: Any) -> None:
    await expect_closed(server, 4401, await expired_subscriber_token(server, [f"{new_prefix()}.>"]))


async def test_ws_token_in_query_is_not_accepted(server: Any, api: Api) -> None:
    token = await api.sub_token("user-1", [f"{new_prefix()}.>"])
    await expect_closed(server, 4401, access_token=token)
    await expect_closed(server, 4401, token=token)


async def test_ws_topics_outside_token_are_4403(server: Any, api: Api) -> None:
    token = await api.sub_token("user-1", ["orders.>"])
    await expect_closed(server, 4403, token, topics="billing.>")
    await expect_closed(server, 4403, token, topics="orders.a,billing.a")
    await expect_closed(server, 4403, token, topics=">")


async def test_subscriber_token_cannot_exceed_app_scope(server: Any, api: Api) -> None:
    narrow = server.token(server.narrow)
    response = await api.client.post(
        "/v1/subscriber-tokens",
        json={"recipient": "user-1", "topics": ["billing.>"]},
        headers={"Authorization": f"Bearer {narrow}"},
    )
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == PROBLEM_PREFIX + "forbidden"


# -- WebSocket: client frames ---------------------------------------------------------------


async def test_ws_subscribe_frame_replaces_topics(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    async with ws_connect(server, token, topics=f"{p}.a") as ws:
        await expect_ready(ws)
        await publish_and_expect(api, ws, [(f"{p}.b", False), (f"{p}.a", True)])

        await ws.send(json.dumps({"type": "subscribe", "topics": [f"{p}.b", f"{p}.c.*"]}))
        # Client frames are handled in order: once the reply to this invalid frame is
        # back, the subscription change before it has been applied.
        await ws.send("{}")
        await expect_error(ws, 400)
        await publish_and_expect(api, ws, [(f"{p}.a", False), (f"{p}.c.d", True), (f"{p}.b", True)])


async def test_ws_subscribe_frame_outside_token_is_refused_and_keeps_subscription(
    server: Any, api: Api
) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.a.>"])
    async with ws_connect(server, token) as ws:
        await expect_ready(ws)
        await ws.send(json.dumps({"type": "subscribe", "topics": [f"{p}.b"]}))
        await expect_error(ws, 403, "forbidden")
        await ws.send(json.dumps({"type": "subscribe", "topics": [f"{p}..b"]}))
        await expect_error(ws, 400, "invalid-topic")
        await publish_and_expect(api, ws, [(f"{p}.b", False), (f"{p}.a.x", True)])


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[]",
        "null",
        '{"type": "nope"}',
        '{"no_type": 1}',
        '{"type": "ack"}',
        '{"type": "ack", "id": 5}',
        '{"type": "ack", "id": "x", "extra": true}',
        '{"type": "subscribe", "topics": "a.b"}',
    ],
)
async def test_ws_invalid_client_frame_gets_error_and_stays_open(
    server: Any, api: Api, frame: str
) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    async with ws_connect(server, token) as ws:
        await expect_ready(ws)
        await ws.send(frame)
        await expect_error(ws, 400)
        # still open and still subscribed
        await publish_and_expect(api, ws, [(f"{p}.x", True)])


async def test_ws_ack_with_malformed_id_gets_invalid_id_error(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    async with ws_connect(server, token) as ws:
        await expect_ready(ws)
        await ws.send(json.dumps({"type": "ack", "id": "not-a-uuid"}))
        await expect_error(ws, 400, "invalid-id")
        await publish_and_expect(api, ws, [(f"{p}.x", True)])


async def test_ws_binary_client_frame_gets_error_and_stays_open(server: Any, api: Api) -> None:
    """A binary frame is a refused client frame too: an error frame, not a crash."""
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    async with ws_connect(server, token) as ws:
        await expect_ready(ws)
        await ws.send(b'{"type": "ack"}')
        await expect_error(ws, 400)
        await publish_and_expect(api, ws, [(f"{p}.x", True)])


async def test_ws_oversized_client_frame_closes_1009(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    async with ws_connect(server, token) as ws:
        await expect_ready(ws)
        await ws.send(json.dumps({"type": "subscribe", "topics": ["x" * 20_000]}))
        with pytest.raises(ConnectionClosed):
            await read_until_closed(ws)
        assert ws.close_code == 1009


async def delivery_state(api: Api, message_id: str, recipient: str) -> str | None:
    message = await api.get_message(message_id)
    states = [
        d["state"]
        for d in message["deliveries"]
        if d["channel"] == "inapp" and d["endpoint"] == recipient
    ]
    assert len(states) <= 1, message["deliveries"]
    return states[0] if states else None


async def wait_delivered(api: Api, message_id: str, recipient: str) -> None:
    deadline = time.monotonic() + WAIT
    state = None
    while time.monotonic() < deadline:
        state = await delivery_state(api, message_id, recipient)
        if state == "delivered":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"delivery of {message_id} to {recipient} is still {state!r}")


async def test_ws_ack_marks_delivery_delivered(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("r1", [f"{p}.>"])
    async with ws_connect(server, token) as ws:
        await expect_ready(ws)
        message_id = await api.publish_id(f"{p}.x", title="hello", recipients=["r1", "r2"])
        assert await delivery_state(api, message_id, "r1") == "pending"
        assert (await next_message(ws))["id"] == message_id

        await ws.send(json.dumps({"type": "ack", "id": message_id}))
        await wait_delivered(api, message_id, "r1")
        assert await delivery_state(api, message_id, "r2") == "pending"

        # acking twice is fine: no error frame comes before the reply to the next frame
        await ws.send(json.dumps({"type": "ack", "id": message_id}))
        await ws.send("{}")
        problem = await expect_error(ws, 400)
        assert problem["type"] != PROBLEM_PREFIX + "not-found"
        assert await delivery_state(api, message_id, "r1") == "delivered"


async def test_ws_ack_unknown_or_foreign_message_gets_not_found(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("r1", [f"{p}.>"])
    for_r2 = await api.publish_id(f"{p}.x", recipients=["r2"])
    other_topic = await api.publish_id(f"{new_prefix()}.x")
    other_tenant = await api.publish_id(f"{p}.x", access=server.token(server.other))
    async with ws_connect(server, token) as ws:
        await expect_ready(ws)
        for message_id in (default_generator().new_str(), for_r2, other_topic, other_tenant):
            await ws.send(json.dumps({"type": "ack", "id": message_id}))
            await expect_error(ws, 404, "not-found")
        await publish_and_expect(api, ws, [(f"{p}.x", True)])
    assert await delivery_state(api, for_r2, "r1") is None
    assert await delivery_state(api, for_r2, "r2") == "pending"


async def test_ws_heartbeats_when_idle(server: Any, api: Api) -> None:
    token = await api.sub_token("user-1", [f"{new_prefix()}.>"])
    async with ws_connect(server, token) as ws:
        await expect_ready(ws)
        for _ in range(2):
            frame = await next_frame(ws, skip=(), timeout=5.0)
            assert frame["type"] == "heartbeat", frame
            assert isinstance(frame["time"], int)
            assert abs(frame["time"] - time.time()) < 60


# -- WebSocket: frames built once, written as they are (herald serve's raw writer) ---------


async def websocket_writers(api: Api) -> dict[str, float]:
    """``herald_websocket_streams_total`` by ``writer`` (raw: pre-framed, asgi: send_text)."""
    text = (await api.client.get("/metrics")).text
    pattern = r'^herald_websocket_streams_total\{writer="(\w+)"\}\s+(\S+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.MULTILINE)}


async def test_ws_streams_under_herald_serve_write_frames_built_once(server: Any, api: Api) -> None:
    """Every stream on ``herald serve`` uses the raw writer; frames arrive intact, in order.

    The second message's frame is ~40 KB: a 16-bit payload length (RFC 6455 §5.2); the
    heartbeats of ``test_ws_heartbeats_when_idle`` use the 7-bit one.
    """
    p = new_prefix()
    before = await websocket_writers(api)
    tokens = [await api.sub_token(f"user-{i}", [f"{p}.>"]) for i in range(2)]
    big = "é" * 20_000
    async with ws_connect(server, tokens[0]) as a, ws_connect(server, tokens[1]) as b:
        await expect_ready(a)
        await expect_ready(b)
        ids = [
            await api.publish_id(f"{p}.x", title="small"),
            await api.publish_id(f"{p}.x", title="big", body=big),
            await api.publish_id(f"{p}.x", title="after"),
        ]
        for ws in (a, b):
            frames = [await next_message(ws) for _ in ids]
            assert [f["id"] for f in frames] == ids
            assert frames[1]["body"] == big
    after = await websocket_writers(api)
    assert after.get("raw", 0) - before.get("raw", 0) >= 2, after
    # Every stream test on this server ran on the raw writer, none on websocket.send.
    assert after.get("asgi", 0) == 0, after


async def test_ws_burst_is_delivered_complete_and_in_order(server: Any, api: Api) -> None:
    """A batch publish queues many frames at once; the sender writes them in few writes.

    40 messages: under the test server's queue size (64), so nobody is cut off.
    """
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    async with ws_connect(server, token) as ws:
        await expect_ready(ws)
        response = await api.client.post(
            "/v1/messages:batch",
            json={"messages": [{"topic": f"{p}.n", "title": str(i)} for i in range(40)]},
            headers=api._auth(),
        )
        assert response.status_code == 202, response.text
        ids = [item["id"] for item in response.json()["results"]]
        assert len(ids) == 40
        assert await messages_until(ws, ids[-1]) == ids


# -- WebSocket: SDK -------------------------------------------------------------------------


async def test_sdk_publish_subscribe_ack_and_resume(server: Any) -> None:
    p = new_prefix()
    async with AsyncPublisher(
        server.url,
        server.demo.client_id,
        server.demo.client_secret,
        ca=server.ca,
        signer=server.demo.signer,
    ) as pub:
        grant = await pub.subscriber_token("sdk-user", [f"{p}.>"])
        # The WebSocket handshake completes before the server has subscribed the stream;
        # resuming from a known message makes the first message race-free.
        cursor = (await pub.publish(f"{p}.x", title="cursor")).id
        async with AsyncSubscriber(
            server.url, grant["token"], ca=server.ca, since=cursor, reconnect=False
        ) as sub:
            first = await pub.publish(f"{p}.x", title="one", data={"n": 1}, recipients=["sdk-user"])
            async with asyncio.timeout(WAIT):
                message = await anext(sub)
            assert message.id == first.id
            assert message.title == "one"
            assert message.data == {"n": 1}
            assert message.audit_index == first.audit_index
            await sub.ack(message.id)
            last_id = sub.last_id

        second = await pub.publish(f"{p}.x", title="two")
        async with AsyncSubscriber(
            server.url, grant["token"], ca=server.ca, since=last_id, reconnect=False
        ) as sub:
            async with asyncio.timeout(WAIT):
                resumed = await anext(sub)
            assert resumed.id == second.id

        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            details = await pub.get_message(first.id)
            states = {d["endpoint"]: d["state"] for d in details["deliveries"]}
            if states.get("sdk-user") == "delivered":
                break
            await asyncio.sleep(0.1)
        assert states.get("sdk-user") == "delivered", details["deliveries"]


# -- WebSocket: tickets ---------------------------------------------------------------------


async def test_ticket_is_issued_for_a_subscriber_token(server: Any, api: Api) -> None:
    token = await api.sub_token("user-1", [f"{new_prefix()}.>"])
    response = await api.ticket_response(token)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"ticket", "expires_in"}
    assert body["expires_in"] == 30
    assert isinstance(body["ticket"], str)
    assert 16 <= len(body["ticket"]) <= 128
    assert token not in body["ticket"]
    assert (await api.ticket(token)) != body["ticket"]


async def test_ticket_connects_once(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    ticket = await api.ticket(token)
    await expect_ws_works(server, api, None, f"{p}.x", ticket=ticket)
    await expect_closed(server, 4401, ticket=ticket)


async def test_ticket_keeps_the_tokens_limits(server: Any, api: Api) -> None:
    token = await api.sub_token("user-1", ["orders.>"])
    await expect_closed(server, 4403, ticket=await api.ticket(token), topics="billing.>")


async def test_ticket_cannot_be_obtained_with_other_credentials(server: Any, api: Api) -> None:
    for headers in (
        {"Authorization": f"Bearer {api.access}"},
        {},
        {"Authorization": "Bearer garbage"},
        {"Authorization": f"Bearer {foreign_key_token(server, ['orders.>'])}"},
    ):
        response = await api.client.post("/v1/stream-tickets", headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"] == PROBLEM_PREFIX + "invalid-token"


async def test_ticket_cannot_be_obtained_with_expired_token(server: Any, api: Api) -> None:
    expired = await expired_subscriber_token(server, ["orders.>"])
    response = await api.ticket_response(expired)
    assert response.status_code == 401, response.text


async def test_subscriber_token_is_not_an_access_token(server: Any, api: Api) -> None:
    token = await api.sub_token("user-1", [f"{new_prefix()}.>"])
    response = await api.client.post(
        "/v1/messages", json={"topic": "orders.x"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401, response.text


# -- WebSocket: slow consumer ---------------------------------------------------------------


class RawWebSocket:
    """A hand-made WebSocket client over TLS with a tiny receive buffer that reads nothing
    until told to, so that the server's send buffer fills up."""

    def __init__(self, server: Any, token: str) -> None:
        parts = urlsplit(server.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 443
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: no autotune
        sock.settimeout(WAIT)
        sock.connect((host, port))
        self.sock: ssl.SSLSocket = server.ssl_context().wrap_socket(sock, server_hostname=host)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                "GET /v1/stream HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                f"Authorization: Bearer {token}\r\n"
                "\r\n"
            ).encode()
        )
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = self.sock.recv(1024)
            assert chunk, "connection closed during the handshake"
            buffer += chunk
        head, _, self.buffer = buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def drain(self, deadline: float) -> tuple[list[dict[str, Any]], int | None, bool]:
        """Read until the server closes: ``(text frames, close code or None, closed?)``."""
        frames: list[dict[str, Any]] = []
        close_code: int | None = None
        self.sock.settimeout(1.0)
        data = self.buffer
        eof = False
        while not eof and time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except (ssl.SSLError, ConnectionError):
                chunk = b""
            if not chunk:
                eof = True
            data += chunk
            data, parsed, code = _parse_frames(data)
            frames.extend(parsed)
            if code is not None:
                close_code = code
        return frames, close_code, eof

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _parse_frames(data: bytes) -> tuple[bytes, list[dict[str, Any]], int | None]:
    """Parse complete unmasked server frames; returns (rest, text frames, close code)."""
    frames: list[dict[str, Any]] = []
    close_code: int | None = None
    while len(data) >= 2:
        opcode = data[0] & 0x0F
        length = data[1] & 0x7F
        offset = 2
        if length == 126:
            if len(data) < 4:
                break
            (length,) = struct.unpack("!H", data[2:4])
            offset = 4
        elif length == 127:
            if len(data) < 10:
                break
            (length,) = struct.unpack("!Q", data[2:10])
            offset = 10
        if len(data) < offset + length:
            break
        payload = data[offset : offset + length]
        data = data[offset + length :]
        if opcode == 0x1:
            frames.append(json.loads(payload))
        elif opcode == 0x8 and len(payload) >= 2:
            (close_code,) = struct.unpack("!H", payload[:2])
    return data, frames, close_code


async def slow_consumer_cutoffs(api: Api) -> float:
    """The server's count of slow-consumer cut-offs (0 if the metric is not exposed)."""
    text = (await api.client.get("/metrics")).text
    match = re.search(
        r'^herald_stream_disconnects_total\{[^}]*reason="slow_consumer"[^}]*\}\s+(\S+)$',
        text,
        re.MULTILINE,
    )
    return float(match.group(1)) if match else 0.0


async def test_slow_consumer_is_cut_off_without_hurting_others(server: Any, api: Api) -> None:
    """A stream that reads nothing is cut off (4408); a normal one on the same topic gets all.

    Between the server and a client that never reads sit the session queue (64 here), the
    transport's buffer and the kernel's socket buffers (a few MB on loopback): ~30 KB
    messages fill them all within a few hundred. Publishing stops a little after the server
    reports the cut-off, or after ``limit`` messages.
    """
    p = new_prefix()
    limit, body = 600, "x" * 30_000
    slow_token = await api.sub_token("slow", [f"{p}.>"])
    fast_token = await api.sub_token("fast", [f"{p}.>"])
    baseline = await slow_consumer_cutoffs(api)

    slow = await asyncio.to_thread(RawWebSocket, server, slow_token)
    try:
        async with ws_connect(server, fast_token) as fast:
            await expect_ready(fast)
            published: list[str] = []
            received: list[str] = []
            finished = asyncio.Event()

            async def read_fast() -> None:
                while not (finished.is_set() and len(received) >= len(published)):
                    with contextlib.suppress(TimeoutError):
                        frame = await next_frame(fast, timeout=0.5)
                        if frame["type"] == "message":
                            received.append(frame["id"])

            reader = asyncio.create_task(read_fast())
            try:
                cut_at: int | None = None
                for i in range(limit):
                    published.append(await api.publish_id(f"{p}.x", title=f"m{i}", body=body))
                    if (
                        cut_at is None
                        and i % 10 == 9
                        and await slow_consumer_cutoffs(api) > baseline
                    ):
                        cut_at = len(published)
                    if cut_at is not None and len(published) >= cut_at + 20:
                        break
                finished.set()
                await asyncio.wait_for(reader, WAIT * 3)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            # the normal subscriber got every message, in order, once
            assert received == published

        frames, close_code, closed = await asyncio.to_thread(
            slow.drain, time.monotonic() + WAIT * 3
        )
    finally:
        slow.close()
    got = [f["id"] for f in frames if f.get("type") == "message"]
    assert closed, f"the slow consumer is still connected after receiving {len(got)} messages"
    assert len(got) < len(published), "the slow consumer was never cut off"
    assert got == published[: len(got)]  # what it did get is a gap-free prefix
    if close_code is not None:
        assert close_code == 4408


async def test_server_shutdown_closes_streams_with_1001(tmp_path: Path) -> None:
    """docs/api.md: ``1001`` server going away (reconnect) — on a graceful stop (SIGTERM)."""
    helpers = _api_conftest()
    env = helpers.base_env(tmp_path / "data", helpers.free_port())
    init = json.loads(helpers.run_cli(env, "init", "--json").stdout)
    process = await asyncio.to_thread(helpers.start_server, env, init["url"], Path(init["ca_cert"]))
    try:
        async with AsyncPublisher(
            init["url"],
            init["client_id"],
            init["client_secret"],
            ca=init["ca_cert"],
            signer=RequestSigner.from_key_file(init["signing_keyid"], init["signing_key_file"]),
        ) as pub:
            token = (await pub.subscriber_token("user-1", ["orders.>"]))["token"]
        async with connect(
            init["url"].replace("https://", "wss://", 1) + "/v1/stream",
            additional_headers={"Authorization": f"Bearer {token}"},
            ssl=ssl.create_default_context(cafile=init["ca_cert"]),
            open_timeout=WAIT,
            close_timeout=2,
        ) as ws:
            await expect_ready(ws)
            stopping = asyncio.create_task(asyncio.to_thread(helpers.stop_server, process))
            with pytest.raises(ConnectionClosed):
                await read_until_closed(ws)
            await stopping
        assert ws.close_code == 1001, (ws.close_code, ws.close_reason)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# -- Server-Sent Events ---------------------------------------------------------------------


class SseReader:
    """Parses ``text/event-stream`` events from a streaming httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next_event(self, timeout: float = WAIT) -> dict[str, str]:
        event: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            async for line in self.lines:
                if not line:
                    if event:
                        return event
                    continue
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                event[name] = event[name] + "\n" + value if name in event else value
        raise AssertionError("the event stream ended")

    async def next_message(self, timeout: float = WAIT) -> dict[str, str]:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next_event()
                if event.get("event") == "message":
                    return event

    async def messages_until(self, last_id: str) -> list[str]:
        ids: list[str] = []
        while not ids or ids[-1] != last_id:
            ids.append((await self.next_message())["id"])
        return ids


@contextlib.asynccontextmanager
async def sse(
    api: Api, token: str | None = None, headers: dict[str, str] | None = None, **params: str
) -> AsyncIterator[SseReader]:
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    async with api.client.stream(
        "GET", "/v1/stream/sse", params=params, headers=all_headers
    ) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        yield SseReader(response)


async def wait_sse_registered(api: Api, reader: SseReader) -> None:
    """An SSE stream has no ready event: its first bytes (``retry:``) follow registration."""
    event = await reader.next_event()
    assert "retry" in event, event


async def test_sse_delivers_messages_with_id_and_json_data(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    async with sse(api, token) as reader:
        assert reader.response.headers["content-type"].startswith("text/event-stream")
        assert reader.response.headers["cache-control"] == "no-store"
        # a stream has no length: a Content-Length (0) would end it before it starts
        assert "content-length" not in reader.response.headers
        await wait_sse_registered(api, reader)
        published = await api.publish(f"{p}.x", title="hello", body="b", data={"k": "v"})
        event = await reader.next_message()
    assert event["event"] == "message"
    assert event["id"] == published["id"]
    data = json.loads(event["data"])
    assert data["type"] == "message"
    assert data["id"] == published["id"]
    assert data["topic"] == f"{p}.x"
    assert data["title"] == "hello"
    assert data["body"] == "b"
    assert data["data"] == {"k": "v"}
    assert data["audit"] == published["audit"]


async def test_sse_filters_topics_and_recipients(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    async with sse(api, token, topics=f"{p}.a.*") as reader:
        await wait_sse_registered(api, reader)
        expected = []
        await api.publish_id(f"{p}.a.b.c")
        expected.append(await api.publish_id(f"{p}.a.b"))
        await api.publish_id(f"{p}.a.b", recipients=["user-2"])
        expected.append(await api.publish_id(f"{p}.a.c", recipients=["user-1"]))
        assert await reader.messages_until(expected[-1]) == expected


async def test_sse_heartbeat_comments(server: Any, api: Api) -> None:
    token = await api.sub_token("user-1", [f"{new_prefix()}.>"])
    async with sse(api, token) as reader:
        await wait_sse_registered(api, reader)
        with contextlib.suppress(TimeoutError):
            await reader.next_event(timeout=3.5)  # heartbeats are comments, not events
        assert ": heartbeat" in reader.comments


async def test_sse_resume_with_last_event_id(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    async with sse(api, token) as reader:
        await wait_sse_registered(api, reader)
        m1 = await api.publish_id(f"{p}.x", title="m1")
        assert (await reader.next_message())["id"] == m1

    m2 = await api.publish_id(f"{p}.x", title="m2")
    await api.publish_id(f"{p}.x", title="not mine", recipients=["user-2"])
    m3 = await api.publish_id(f"{p}.x", title="m3")

    async with sse(api, token, headers={"Last-Event-ID": m1}) as reader:
        assert await reader.messages_until(m3) == [m2, m3]
        m4 = await api.publish_id(f"{p}.x", title="m4")
        assert await reader.messages_until(m4) == [m4]

    async with sse(api, token, since=m2) as reader:  # the query works too
        assert await reader.messages_until(m4) == [m3, m4]


async def test_sse_resume_unknown_cursor_is_400(server: Any, api: Api) -> None:
    token = await api.sub_token("user-1", [f"{new_prefix()}.>"])
    response = await api.client.get(
        "/v1/stream/sse",
        headers={
            "Authorization": f"Bearer {token}",
            "Last-Event-ID": default_generator().new_str(),
        },
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == PROBLEM_PREFIX + "invalid-cursor"


async def test_sse_with_ticket_works_once(server: Any, api: Api) -> None:
    p = new_prefix()
    token = await api.sub_token("user-1", [f"{p}.>"])
    ticket = await api.ticket(token)
    async with sse(api, ticket=ticket) as reader:
        await wait_sse_registered(api, reader)
        message_id = await api.publish_id(f"{p}.x")
        assert (await reader.next_message())["id"] == message_id
    response = await api.client.get("/v1/stream/sse", params={"ticket": ticket})
    assert response.status_code == 401, response.text


@pytest.mark.parametrize("kind", ["missing", "garbage", "access", "foreign", "ticket"])
async def test_sse_bad_credentials_are_401_problem(server: Any, api: Api, kind: str) -> None:
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    if kind == "garbage":
        headers["Authorization"] = "Bearer not-a-jwt"
    elif kind == "access":
        headers["Authorization"] = f"Bearer {api.access}"
    elif kind == "foreign":
        headers["Authorization"] = f"Bearer {foreign_key_token(server, ['orders.>'])}"
    elif kind == "ticket":
        params["ticket"] = "no-such-ticket"
    response = await api.client.get("/v1/stream/sse", headers=headers, params=params)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"] == PROBLEM_PREFIX + "invalid-token"
    assert problem["status"] == 401


async def test_sse_topics_outside_token_are_403(server: Any, api: Api) -> None:
    token = await api.sub_token("user-1", ["orders.>"])
    response = await api.client.get(
        "/v1/stream/sse",
        params={"topics": "billing.>"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 403, response.text
    assert response.json()["type"] == PROBLEM_PREFIX + "forbidden"
