"""Verifiable delivery receipts against a real ``herald serve`` (DESIGN §6, SDK receipts).

A subscriber receives a message over the WebSocket stream and proves, with the audit key it
pinned beforehand, that the message is in the signed audit log. Forged messages (another
id, index or leaf hash) and a wrong pinned key are refused with ``ReceiptInvalid``.

The module runs its own server that signs a checkpoint every second, so that receipts do
not wait for the session server's ten-second checkpoints.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from herald.audit.merkle import leaf_hash
from herald.audit.note import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    sign_checkpoint,
)
from herald.client import (
    AsyncPublisher,
    AsyncSubscriber,
    HeraldClientError,
    Publisher,
    PublishResult,
    Receipt,
    ReceiptInvalid,
    StreamMessage,
    Subscriber,
)
from herald.client._receipts import verify_receipt

if TYPE_CHECKING:  # the conftest's types, for readers and type checkers only
    from tests.api.conftest import App, NodeFactory

WAIT = 10.0  # seconds: the bound of every single wait in this module


@dataclass
class Node:
    """What a subscribing app knows of the module's server (a ``node_factory`` node)."""

    url: str
    ca: Path
    demo: App
    audit_key: str  # pinned once, when the "app" is set up


@pytest.fixture(scope="module")
def node(module_node_factory: NodeFactory) -> Node:
    started = module_node_factory(name="receipts", HERALD_AUDIT_CHECKPOINT_SECONDS="1")
    with started.client() as client:
        key = client.get("/.well-known/herald-audit-key")
    assert key.status_code == 200, key.text
    return Node(started.url, started.ca, started.demo, key.text.strip())


def flip_bit(hex_hash: str) -> str:
    raw = bytearray(bytes.fromhex(hex_hash))
    raw[-1] ^= 1
    return raw.hex()


def new_prefix() -> str:
    return "r" + uuid.uuid4().hex


def publisher(node: Node) -> AsyncPublisher:
    app = node.demo
    return AsyncPublisher(node.url, app.client_id, app.client_secret, ca=node.ca, signer=app.signer)


async def receive_one(
    node: Node, pub: AsyncPublisher, prefix: str, **fields: str
) -> tuple[AsyncSubscriber, StreamMessage, PublishResult]:
    """Open a stream for ``prefix`` and return it with one message received on it."""
    grant = await pub.subscriber_token("receipt-user", [f"{prefix}.>"])
    # Resume from a known message: the first live message is then race-free.
    cursor = await pub.publish(f"{prefix}.cursor", title="cursor")
    sub = AsyncSubscriber(node.url, grant["token"], ca=node.ca, since=cursor.id, reconnect=False)
    await sub.__aenter__()
    sent = await pub.publish(f"{prefix}.x", recipients=["receipt-user"], **fields)
    async with asyncio.timeout(WAIT):
        message = await anext(sub)
    assert message.id == sent.id
    return sub, message, sent


async def test_received_message_has_a_verifiable_receipt(node: Node) -> None:
    async with publisher(node) as pub:
        sub, message, sent = await receive_one(node, pub, new_prefix(), title="receipt me")
        async with sub:
            assert message.audit_index == sent.audit_index
            assert message.leaf_hash == sent.leaf_hash
            started = time.monotonic()
            receipt = await sub.verify_receipt(message, audit_key=node.audit_key)
            assert time.monotonic() - started < WAIT  # checkpoints come every second

    assert isinstance(receipt, Receipt)
    assert receipt.index == message.audit_index
    assert receipt.leaf_hash == message.leaf_hash
    assert receipt.checkpoint_size > receipt.index
    # The receipt stands on its own: its note verifies offline with the pinned key.
    checkpoint = open_checkpoint(NoteVerifier.from_key(node.audit_key), receipt.note)
    assert (checkpoint.size, checkpoint.root) == (receipt.checkpoint_size, receipt.root)
    # A second verification reuses the subscriber's HTTP client and agrees.
    async with publisher(node) as pub:
        sub, again, _ = await receive_one(node, pub, new_prefix())
        async with sub:
            first = await sub.verify_receipt(again, audit_key=node.audit_key)
            second = await sub.verify_receipt(again, audit_key=node.audit_key + "\n")
    assert first.index == second.index == again.audit_index


async def test_forged_messages_are_refused(node: Node) -> None:
    async with publisher(node) as pub:
        prefix = new_prefix()
        sub, message, _ = await receive_one(node, pub, prefix)
        other = await pub.publish(f"{prefix}.x", title="another message")
        async with sub:
            assert message.audit_index is not None
            assert message.leaf_hash is not None
            key = node.audit_key
            not_hashed = "does not hash to the message's leaf hash"
            not_this = "is not the publication of message"
            # what is forged → (the forged message, why it must be refused)
            forgeries = {
                "another id": (dataclasses.replace(message, id=str(uuid.uuid4())), not_this),
                "another message's id": (dataclasses.replace(message, id=other.id), not_this),
                "the next index": (
                    dataclasses.replace(message, audit_index=message.audit_index + 1),
                    not_hashed,
                ),
                "the previous index": (
                    dataclasses.replace(message, audit_index=message.audit_index - 1),
                    not_hashed,
                ),
                "another leaf hash": (
                    dataclasses.replace(message, leaf_hash="00" * 32),
                    not_hashed,
                ),
                "a leaf hash with one bit flipped": (
                    dataclasses.replace(message, leaf_hash=flip_bit(message.leaf_hash)),
                    not_hashed,
                ),
                # A real reference of another message, claimed for this one.
                "another message's index and leaf hash": (
                    dataclasses.replace(
                        message, audit_index=other.audit_index, leaf_hash=other.leaf_hash
                    ),
                    not_this,
                ),
                "no audit reference": (
                    dataclasses.replace(message, audit_index=None),
                    "no audit index",
                ),
                "a negative index": (
                    dataclasses.replace(message, audit_index=-1),
                    "no audit index",
                ),
                "a malformed leaf hash": (
                    dataclasses.replace(message, leaf_hash="zz" * 32),
                    "not hex",
                ),
            }
            for forged, reason in forgeries.values():
                with pytest.raises(ReceiptInvalid, match=re.escape(reason)):
                    await sub.verify_receipt(forged, audit_key=key, wait=WAIT)
            # An index beyond the log: no checkpoint will ever cover it; bounded by wait.
            started = time.monotonic()
            with pytest.raises(ReceiptInvalid, match="no signed checkpoint covers"):
                await sub.verify_receipt(
                    dataclasses.replace(message, audit_index=10**9), audit_key=key, wait=1.0
                )
            assert time.monotonic() - started < 1.0 + WAIT
            # The genuine message still verifies after all that.
            assert (await sub.verify_receipt(message, audit_key=key)).index == message.audit_index


async def test_entry_is_the_message_commitment(node: Node) -> None:
    """What the receipt checks, done by hand: leaf hash of the served entry text."""
    async with publisher(node) as pub:
        sub, message, _ = await receive_one(node, pub, new_prefix())
        async with sub:
            receipt = await sub.verify_receipt(message, audit_key=node.audit_key)
        token = (await pub.subscriber_token("receipt-user", ["x.>"]))["token"]
    async with httpx.AsyncClient(
        base_url=node.url,
        verify=ssl.create_default_context(cafile=str(node.ca)),
        timeout=WAIT,
    ) as client:
        response = await client.get(
            "/v1/audit/entries",
            params={"from": receipt.index, "to": receipt.index + 1},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200, response.text
    (item,) = response.json()["entries"]
    assert leaf_hash(item["entry"].encode()).hex() == receipt.leaf_hash
    entry = json.loads(item["entry"])
    assert entry["object"] == f"message:{message.id}"
    assert entry["action"] == "message.published"


async def test_wrong_pinned_key_is_refused(node: Node) -> None:
    origin = node.audit_key.split("+", 1)[0]
    impostor = NoteSigner(origin, Ed25519PrivateKey.generate()).verifier_key()
    renamed = NoteSigner("another-log", Ed25519PrivateKey.generate()).verifier_key()
    async with publisher(node) as pub:
        sub, message, _ = await receive_one(node, pub, new_prefix())
        async with sub:
            for key in (impostor, renamed, "not a key", "", node.audit_key[:-4] + "AAA="):
                with pytest.raises(ReceiptInvalid):
                    await sub.verify_receipt(message, audit_key=key, wait=2.0)
            # The right key still works on the same stream.
            await sub.verify_receipt(message, audit_key=node.audit_key)
        with pytest.raises(HeraldClientError, match="closed"):
            await sub.verify_receipt(message, audit_key=node.audit_key)


def test_blocking_subscriber_verifies_receipts(node: Node) -> None:
    app = node.demo
    prefix = new_prefix()
    with Publisher(
        node.url, app.client_id, app.client_secret, ca=node.ca, signer=app.signer
    ) as pub:
        grant = pub.subscriber_token("receipt-user", [f"{prefix}.>"])
        cursor = pub.publish(f"{prefix}.cursor", title="cursor")
        with Subscriber(
            node.url, grant["token"], ca=node.ca, since=cursor.id, reconnect=False
        ) as sub:
            sent = pub.publish(f"{prefix}.x", title="blocking")
            message = next(sub)
            assert message.id == sent.id
            receipt = sub.verify_receipt(message, audit_key=node.audit_key)
            assert receipt.index == sent.audit_index
            with pytest.raises(ReceiptInvalid):
                sub.verify_receipt(
                    dataclasses.replace(message, id=str(uuid.uuid4())), audit_key=node.audit_key
                )


# -- a lying server ---------------------------------------------------------------------------

Tamper = Callable[[str, dict[str, Any]], "dict[str, Any] | httpx.Response"]


class TamperingTransport(httpx.AsyncBaseTransport):
    """Forwards to the real server and lets a test rewrite the JSON answers of one path."""

    def __init__(self, node: Node, path: str, tamper: Tamper) -> None:
        self._inner = httpx.AsyncHTTPTransport(
            verify=ssl.create_default_context(cafile=str(node.ca))
        )
        self._path = path
        self._tamper = tamper

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        content = await response.aread()
        if request.url.path != self._path or response.status_code != 200:
            return httpx.Response(response.status_code, headers=response.headers, content=content)
        changed = self._tamper(request.url.path, json.loads(content))
        if isinstance(changed, httpx.Response):
            return changed
        return httpx.Response(200, json=changed)

    async def aclose(self) -> None:
        await self._inner.aclose()


def forged_entry(message: StreamMessage) -> str:
    """An entry for ``message`` that the server made up and never logged."""
    return json.dumps(
        {
            "action": "message.published",
            "actor": "app:ghost",
            "details": {},
            "index": message.audit_index,
            "object": f"message:{message.id}",
            "tenant": "ghost",
            "time": "2020-01-01T00:00:00Z",
        },
        separators=(",", ":"),
        sort_keys=True,
    )


async def test_a_lying_server_cannot_pass_a_receipt(node: Node) -> None:
    impostor = NoteSigner(node.audit_key.split("+", 1)[0], Ed25519PrivateKey.generate())

    def proof(change: Callable[[list[str]], list[str]]) -> Tamper:
        return lambda _, body: {**body, "proof": change(body["proof"])}

    def impostor_checkpoint(_: str, body: dict[str, Any]) -> dict[str, Any]:
        forged = Checkpoint(impostor.name, body["size"] + 10, b"\x07" * 32)
        note = sign_checkpoint(impostor, forged)
        return {
            **body,
            "size": forged.size,
            "root": base64.b64encode(forged.root).decode(),
            "note": note,
        }

    def edited_note(_: str, body: dict[str, Any]) -> dict[str, Any]:
        text, _, signatures = body["note"].partition("\n\n")
        origin, size, root = text.split("\n")[:3]
        note = f"{origin}\n{int(size) + 1}\n{root}\n\n{signatures}"
        return {**body, "size": int(size) + 1, "note": note}

    async with publisher(node) as pub:
        sub, message, _ = await receive_one(node, pub, new_prefix())
        await sub.close()
        token = (await pub.subscriber_token("receipt-user", ["x.>"]))["token"]
    assert message.leaf_hash is not None
    ghost = forged_entry(message)
    ghost_message = dataclasses.replace(message, leaf_hash=leaf_hash(ghost.encode()).hex())

    def fabricated(_: str, body: dict[str, Any]) -> dict[str, Any]:
        item = {"index": message.audit_index, "entry": ghost, "leaf_hash": ghost_message.leaf_hash}
        return {**body, "entries": [item]}

    def swapped_object(_: str, body: dict[str, Any]) -> dict[str, Any]:
        (item,) = body["entries"]
        entry = json.loads(item["entry"])
        entry["object"] = "message:" + str(uuid.uuid4())
        text = json.dumps(entry, separators=(",", ":"), sort_keys=True)
        return {**body, "entries": [{**item, "entry": text}]}

    cases: list[tuple[str, Tamper, StreamMessage, str]] = [
        (
            "/v1/audit/proof/inclusion",
            proof(lambda p: [flip_bit(p[0]), *p[1:]]),
            message,
            "inclusion proof does not verify",
        ),
        (
            "/v1/audit/proof/inclusion",
            proof(lambda p: p[:-1]),
            message,
            "inclusion proof does not verify",
        ),
        (
            "/v1/audit/proof/inclusion",
            proof(lambda p: [*p, "00" * 32]),
            message,
            "inclusion proof does not verify",
        ),
        ("/v1/audit/proof/inclusion", proof(lambda _: ["zz"]), message, "not hex"),
        (
            "/v1/audit/proof/inclusion",
            lambda _, __: httpx.Response(500, text="boom"),
            message,
            "500",
        ),
        (
            "/v1/audit/checkpoint",
            lambda _, b: {**b, "root": base64.b64encode(b"\x01" * 32).decode()},
            message,
            "differs from its signed note",
        ),
        (
            "/v1/audit/checkpoint",
            impostor_checkpoint,
            message,
            "not signed by the pinned audit key",
        ),
        ("/v1/audit/checkpoint", edited_note, message, "not signed by the pinned audit key"),
        ("/v1/audit/entries", lambda _, b: {**b, "entries": []}, message, "no entry"),
        ("/v1/audit/entries", swapped_object, message, "does not hash"),
        # The platform delivers a message it did not log, with a made-up entry whose hash
        # it put in the frame: the entry checks pass, the signed tree does not contain it.
        ("/v1/audit/entries", fabricated, ghost_message, "inclusion proof does not verify"),
    ]
    for path, tamper, delivered, reason in cases:
        transport = TamperingTransport(node, path, tamper)
        async with httpx.AsyncClient(
            base_url=node.url, transport=transport, timeout=WAIT
        ) as client:
            with pytest.raises(ReceiptInvalid, match=re.escape(reason)):
                await verify_receipt(client, token, delivered, audit_key=node.audit_key, wait=2.0)
    # The same path without tampering verifies: the failures above are the tampering's.
    transport = TamperingTransport(node, "/none", lambda _, b: b)
    async with httpx.AsyncClient(base_url=node.url, transport=transport, timeout=WAIT) as client:
        receipt = await verify_receipt(client, token, message, audit_key=node.audit_key)
    assert receipt.index == message.audit_index
