"""End-to-end mode through a real server: the plaintext never reaches Herald.

A device registers its X25519 key with its subscriber token, the publisher seals per device
(HPKE), the device opens what the stream delivers. The server's database, WAL, log and
process memory are then searched for the plaintext marker; a tampered payload is refused
on the device.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from herald.client import (
    AsyncPublisher,
    AsyncSubscriber,
    DeviceKey,
    E2EDecryptionError,
    register_device_with_token,
)
from herald.crypto.e2e import b64url_encode

if TYPE_CHECKING:  # the conftest's types, for readers and type checkers only
    from tests.api.conftest import Node, NodeFactory

WAIT = 15.0


@pytest.fixture(scope="module")
def node(module_node_factory: NodeFactory) -> Node:
    return module_node_factory(name="e2e")


def _publisher(node: Node) -> AsyncPublisher:
    app = node.demo
    return AsyncPublisher(
        node.url, app.client_id, app.client_secret, ca=node.init["ca_cert"], signer=app.signer
    )


def _memory_contains(pid: int, needle: bytes) -> bool:
    """Search every readable mapping of a live process (we run as root in tests)."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    with Path(f"/proc/{pid}/mem").open("rb", 0) as mem:
        for line in maps:
            match = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
            if not match or "r" not in match.group(3):
                continue
            start, end = int(match.group(1), 16), int(match.group(2), 16)
            if end - start > 1 << 30:
                continue
            try:
                mem.seek(start)
                chunk = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            if needle in chunk:
                return True
    return False


def _can_read_memory(pid: int) -> bool:
    try:
        with Path(f"/proc/{pid}/mem").open("rb", 0):
            return True
    except OSError:
        return False


async def test_e2e_round_trip_never_exposes_plaintext(node: Node) -> None:
    init, data_dir, process = node.init, node.data_dir, node.process
    assert process is not None
    marker = "E2E-MARKER-" + secrets.token_hex(8)
    async with _publisher(node) as pub:
        grant = await pub.subscriber_token("alice", ["chat.>"])
        key = DeviceKey.generate()
        device = await register_device_with_token(
            init["url"], grant["token"], "alice", key.public_key_raw, ca=init["ca_cert"]
        )
        key = key.with_device_id(device["device_id"])
        async with AsyncSubscriber(
            init["url"], grant["token"], ca=init["ca_cert"], device_key=key
        ) as stream:
            await asyncio.sleep(0.3)
            sent = await pub.publish_e2e(
                "chat.room", recipients=["alice"], title=marker, body=marker, data={"k": marker}
            )
            got = await asyncio.wait_for(stream.__anext__(), WAIT)
        stored = await pub.get_message(sent.id)
    assert got.id == sent.id
    assert (got.title, got.body, got.data) == (marker, marker, {"k": marker})
    assert got.e2e
    # What Herald holds is opaque: no title/body/data, only per-device ciphertexts.
    assert stored["title"] is None
    assert stored["e2e"]["payloads"][0]["device_id"] == device["device_id"]
    needle = marker.encode()
    for path in data_dir.glob("herald.db*"):
        assert needle not in path.read_bytes(), path
    assert needle not in (data_dir / "serve.log").read_bytes()
    if _can_read_memory(process.pid):
        assert not _memory_contains(process.pid, needle)


async def test_tampered_payload_is_refused_on_the_device(node: Node) -> None:
    init = node.init
    async with _publisher(node) as pub:
        grant = await pub.subscriber_token("bob", ["chat.>"])
        key = DeviceKey.generate()
        device = await register_device_with_token(
            init["url"], grant["token"], "bob", key.public_key_raw, ca=init["ca_cert"]
        )
        key = key.with_device_id(device["device_id"])
        other = DeviceKey.generate()  # a key the payload was NOT sealed for
        async with AsyncSubscriber(
            init["url"], grant["token"], ca=init["ca_cert"], device_key=key
        ) as stream:
            await asyncio.sleep(0.3)
            # Seal for another key but address the payload to bob's device id: the server
            # cannot tell (it cannot read payloads); the device must refuse it.
            await pub.publish_e2e(
                "chat.room",
                recipients=["bob"],
                title="forged",
                devices={"bob": [(device["device_id"], other.public_key_raw)]},
            )
            ok = await pub.publish_e2e("chat.room", recipients=["bob"], title="genuine")
            with pytest.raises(E2EDecryptionError):
                await asyncio.wait_for(stream.__anext__(), WAIT)
            # The stream goes on with the next message.
            good = await asyncio.wait_for(stream.__anext__(), WAIT)
    assert good.id == ok.id
    assert good.title == "genuine"


async def test_devices_api_refusals(node: Node) -> None:
    async with _publisher(node) as pub:
        carol = (await pub.subscriber_token("carol", ["chat.>"]))["token"]
        access = await pub.token()
    async with node.async_client(sign=False) as client:
        good = {"public_key": b64url_encode(DeviceKey.generate().public_key_raw)}
        # A subscriber token registers devices of its own recipient only.
        other = await client.post(
            "/v1/recipients/dave/devices", json=good, headers={"Authorization": f"Bearer {carol}"}
        )
        assert other.status_code == 403
        for bad in ("AAAA", "!" * 43, b64url_encode(bytes(32))):  # short, not b64url, zero
            response = await client.post(
                "/v1/recipients/carol/devices",
                json={"public_key": bad},
                headers={"Authorization": f"Bearer {carol}"},
            )
            assert response.status_code == 400, (bad, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
        # An access token without the admin scope may not register for a recipient.
        unsigned = await client.post(
            "/v1/recipients/carol/devices", json=good, headers={"Authorization": f"Bearer {access}"}
        )
        assert unsigned.status_code == 403
        listed = await client.get(
            "/v1/recipients/carol/devices", headers={"Authorization": f"Bearer {access}"}
        )
        assert listed.status_code == 200
        assert listed.json() == {"devices": []}
        anonymous = await client.get("/v1/recipients/carol/devices")
        assert anonymous.status_code == 401


def test_process_memory_scanner_finds_what_is_there() -> None:
    # The scanner itself must be able to fail: a child process holding a marker is found.
    marker = "SCANNER-SELFTEST-" + secrets.token_hex(6)
    child = subprocess.Popen(
        ["python3", "-c", f"import time; s = {marker!r} * 2; time.sleep(30)"],
    )
    try:
        deadline = 50
        while deadline and not _can_read_memory(child.pid):
            deadline -= 1
        if not _can_read_memory(child.pid):
            pytest.skip("this environment does not allow reading process memory")
        found = False
        for _ in range(50):
            if _memory_contains(child.pid, marker.encode()):
                found = True
                break
            asyncio.run(asyncio.sleep(0.1))
        assert found
    finally:
        child.kill()
        child.wait()
