"""Key management against a real server (DESIGN §5, docs/encryption.md, herald/service/keys.py).

- data-key rotation and re-encryption: new writes use the new version, an interrupted
  re-encryption resumes, nothing is lost or altered, and it is safe while the server serves;
- KEK rotation while serving: every wrapped key moves to the new KEK without touching a
  message row, and the running, then a restarted, server keep working;
- crypto-shredding: a tenant's content becomes unreadable (410) while its rows stay, other
  tenants are untouched, and the audit log still recomputes.

Each test starts its own server (own data dir and port) with ``HERALD_KEY_CACHE_TTL=1`` so
that the node notices rotations and shredding done by the CLI within about a second, and
stops it whatever happens. Waits are bounded; nothing asserts on timing.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from herald.config import load_settings
from herald.crypto.providers import KekRouter
from herald.errors import DecryptionFailed, Gone
from herald.service import messages as message_service
from herald.service.keys import reencrypt
from herald.service.runtime import Runtime

if TYPE_CHECKING:  # the conftest's types, for readers and type checkers only
    from tests.api.conftest import Node, NodeFactory

WAIT = 10.0  # seconds: the bound of every single HTTP wait in this module
KEY_CACHE_TTL = 1.0  # seconds (HERALD_KEY_CACHE_TTL of the test servers)
PROBLEM = "urn:herald:problem:"


@pytest.fixture
def node(node_factory: NodeFactory) -> Node:
    """A started server with a 1-second key cache (stopped after the test)."""
    return node_factory(HERALD_KEY_CACHE_TTL=str(KEY_CACHE_TTL))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["type"] == PROBLEM + slug, problem
    return problem


def wait_for_key_cache() -> None:
    """Let the node's cached data keys expire, so its next key use reloads them."""
    time.sleep(KEY_CACHE_TTL + 0.5)


# -- content helpers ----------------------------------------------------------------------------
Content = dict[str, Any]  # title, body, data as published


def content(topic: str, n: int, tag: str = "") -> dict[str, Any]:
    return {
        "topic": topic,
        "title": f"title {tag}{n} ✓",
        "body": f"body {tag}{n} " + "x" * (n % 7),
        "data": {"n": n, "tag": tag, "nested": {"list": [n, str(n)]}},
    }


def publish(client: httpx.Client, token: str, message: dict[str, Any]) -> str:
    response = client.post("/v1/messages", json=message, headers=bearer(token))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def publish_many(
    node: Node, token: str, topic: str, count: int, tag: str, *, expected: dict[str, Content]
) -> list[str]:
    ids = []
    with node.client() as client:
        for n in range(count):
            message = content(topic, n, tag)
            message_id = publish(client, token, message)
            expected[message_id] = {k: message[k] for k in ("title", "body", "data")}
            ids.append(message_id)
    return ids


def assert_reads_back(node: Node, token: str, expected: dict[str, Content]) -> None:
    """Every message reads back through the API exactly as published."""
    with node.client() as client:
        for message_id, published in expected.items():
            response = client.get(f"/v1/messages/{message_id}", headers=bearer(token))
            assert response.status_code == 200, (message_id, response.text)
            view = response.json()
            got = {k: view[k] for k in ("title", "body", "data")}
            assert got == published, message_id


def key_versions(node: Node, tenant: str) -> dict[str, int]:
    """Message id → data-key version of its stored content (bytes 1..4, big-endian)."""
    with node.db() as conn:
        rows = conn.execute(
            "SELECT id, content FROM messages WHERE tenant_id = ?", (tenant,)
        ).fetchall()
    versions = {}
    for message_id, blob in rows:
        assert blob[0] == 1, "format version"
        versions[message_id] = int.from_bytes(blob[1:5], "big")
    return versions


def count_by_version(versions: dict[str, int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for version in versions.values():
        counts[version] = counts.get(version, 0) + 1
    return counts


def in_process_settings(node: Node) -> Any:
    port = int(node.url.rsplit(":", 1)[1])
    return load_settings(data_dir=node.data_dir, port=port, key_cache_ttl=KEY_CACHE_TTL)


# -- data-key rotation and re-encryption ------------------------------------------------------
async def test_rotation_and_interrupted_reencryption_keep_every_message(node: Node) -> None:
    tenant = node.demo.tenant
    token = node.token()
    topic = f"keys.rot.{secrets.token_hex(4)}"
    expected: dict[str, Content] = {}
    publish_many(node, token, topic, 30, "old-", expected=expected)
    assert count_by_version(key_versions(node, tenant)) == {1: 30}

    rotated = node.cli("keys", "rotate", "--tenant", tenant)
    assert rotated == {"tenant": tenant, "version": 2}
    wait_for_key_cache()  # the node switches to version 2 on its next key use
    publish_many(node, token, topic, 10, "new-", expected=expected)
    assert count_by_version(key_versions(node, tenant)) == {1: 30, 2: 10}

    # Interrupted: two batches of 7, in this process, on the same data dir.
    rt = await Runtime.open(in_process_settings(node))
    try:
        partial = await reencrypt(rt, tenant, batch=7, stop_after=2)
    finally:
        await rt.close()
    assert (partial.target, partial.scanned, partial.changed, partial.total) == (2, 14, 14, 40)
    counts = count_by_version(key_versions(node, tenant))
    assert counts == {1: 16, 2: 24}, counts
    assert_reads_back(node, token, expected)  # a half-done job changes nothing visible

    # Resumed with the CLI: it continues after the saved cursor.
    resumed = node.cli("keys", "reencrypt", "--tenant", tenant)
    assert resumed["version"] == 2
    assert resumed["total"] == 40
    assert resumed["scanned"] == 40 - 14
    assert resumed["reencrypted"] == 16
    versions = key_versions(node, tenant)
    assert count_by_version(versions) == {2: 40}
    assert set(versions) == set(expected)  # none lost, none added
    assert_reads_back(node, token, expected)


def test_reencryption_is_safe_while_serving(node: Node) -> None:
    tenant = node.demo.tenant
    token = node.token()
    topic = f"keys.online.{secrets.token_hex(4)}"
    expected: dict[str, Content] = {}
    publish_many(node, token, topic, 40, "before-", expected=expected)
    assert node.cli("keys", "rotate", "--tenant", tenant)["version"] == 2

    # A publisher keeps going for ~2 s (and at most 300 messages) while the CLI re-encrypts.
    published: dict[str, Content] = {}
    errors: list[BaseException] = []
    done = threading.Event()
    started = threading.Event()

    def keep_publishing() -> None:
        try:
            with node.client() as client:
                start = time.monotonic()
                n = 0
                while n < 300 and time.monotonic() < start + 30:
                    if n > 0 and done.is_set() and time.monotonic() >= start + 2:
                        break
                    message = content(topic, n, "during-")
                    message_id = publish(client, token, message)
                    published[message_id] = {k: message[k] for k in ("title", "body", "data")}
                    started.set()
                    n += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=keep_publishing, name="publisher")
    thread.start()
    try:
        assert started.wait(WAIT)
        result = node.cli("keys", "reencrypt", "--tenant", tenant, "--batch", "5")
    finally:
        done.set()
        thread.join(60)
    assert not thread.is_alive()
    assert errors == []
    assert published, "the publisher published nothing"
    assert result["version"] == 2
    assert result["reencrypted"] >= 40  # every row written before the rotation moved

    expected.update(published)
    versions = key_versions(node, tenant)
    assert set(versions) == set(expected)
    assert all(versions[i] == 2 for i in list(expected)[:40])
    assert_reads_back(node, token, expected)

    # Rows the node sealed with version 1 after the job passed them move on a second run.
    wait_for_key_cache()
    node.cli("keys", "reencrypt", "--tenant", tenant)
    assert count_by_version(key_versions(node, tenant)) == {2: len(expected)}
    assert_reads_back(node, token, expected)


# -- KEK rotation ---------------------------------------------------------------------------------
def message_rows(node: Node, ids: list[str] | None = None) -> dict[str, tuple[Any, ...]]:
    """Every column of the message rows (of ``ids`` when given)."""
    with node.db() as conn:
        rows = conn.execute("SELECT * FROM messages ORDER BY seq").fetchall()
    table = {row[0]: tuple(row) for row in rows}
    return table if ids is None else {i: table[i] for i in ids}


def content_hash(node: Node, ids: list[str]) -> str:
    digest = hashlib.sha256()
    with node.db() as conn:
        for message_id in ids:
            (blob,) = conn.execute(
                "SELECT content FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            digest.update(len(blob).to_bytes(4, "big") + blob)
    return digest.hexdigest()


def wrapped_kek_ids(node: Node) -> set[str]:
    """The KEK ids named by every stored wrapped key (tenant data keys and signing keys)."""
    with node.db() as conn:
        blobs = [r[0] for r in conn.execute("SELECT wrapped_key FROM tenant_keys")]
        blobs += [r[0] for r in conn.execute("SELECT wrapped_private_key FROM signing_keys")]
    assert blobs
    return {KekRouter.kek_of(blob) for blob in blobs}


def test_kek_rotation_while_serving(node: Node) -> None:
    master = node.data_dir / "master.key"
    previous = node.data_dir / "master.key.previous"
    token = node.token()
    topic = f"keys.kek.{secrets.token_hex(4)}"
    expected: dict[str, Content] = {}
    old_ids = publish_many(node, token, topic, 10, "old-", expected=expected)
    rows_before = message_rows(node, old_ids)
    hash_before = content_hash(node, old_ids)
    keks_before = wrapped_kek_ids(node)
    assert len(keks_before) == 1
    master_before = master.read_bytes()

    rotated = node.cli("keys", "rotate-kek")
    assert rotated["rewrapped"] >= 3  # the tenant key and the token and audit signing keys
    assert rotated["previous_destroyed"] is False
    assert previous.exists()
    assert previous.read_bytes() == master_before
    assert master.read_bytes() != master_before
    assert not (node.data_dir / "master.key.next").exists()
    keks_after = wrapped_kek_ids(node)
    assert len(keks_after) == 1
    assert keks_after != keks_before  # every wrapped key names the new KEK
    assert content_hash(node, old_ids) == hash_before

    # The running node unwraps under the new KEK once its cached keys expire.
    wait_for_key_cache()
    assert_reads_back(node, token, expected)
    expected_new: dict[str, Content] = {}
    publish_many(node, node.token(), topic, 5, "during-", expected=expected_new)
    assert_reads_back(node, token, expected_new)

    finished = node.cli("keys", "rotate-kek", "--finish")
    assert finished["previous_destroyed"] is True
    assert not previous.exists()
    assert wrapped_kek_ids(node) == keks_after
    wait_for_key_cache()
    assert_reads_back(node, token, expected | expected_new)
    publish_many(node, node.token(), topic, 5, "after-", expected=expected_new)

    # No message row changed during the whole KEK rotation.
    assert content_hash(node, old_ids) == hash_before
    assert message_rows(node, old_ids) == rows_before

    node.restart()
    token = node.token()
    assert_reads_back(node, token, expected | expected_new)
    publish_many(node, token, topic, 3, "restarted-", expected=expected_new)
    assert_reads_back(node, token, expected_new)
    assert content_hash(node, old_ids) == hash_before


# -- crypto-shredding -------------------------------------------------------------------------
def shred_tenant_cli(node: Node, tenant: str, stdin: str) -> subprocess.CompletedProcess[str]:
    """``herald tenant shred TENANT`` without ``--yes``, answering ``stdin``."""
    return node.run("tenant", "shred", tenant, check=False, stdin=stdin)


def tenant_state(node: Node, tenant: str) -> tuple[Any, ...]:
    with node.db() as conn:
        keys = conn.execute(
            "SELECT version, wrapped_key FROM tenant_keys WHERE tenant_id = ? ORDER BY version",
            (tenant,),
        ).fetchall()
        (shredded_at,) = conn.execute(
            "SELECT shredded_at FROM tenants WHERE id = ?", (tenant,)
        ).fetchone()
        apps = conn.execute(
            "SELECT id, disabled FROM apps WHERE tenant_id = ? ORDER BY id", (tenant,)
        ).fetchall()
        (messages,) = conn.execute(
            "SELECT count(*) FROM messages WHERE tenant_id = ?", (tenant,)
        ).fetchone()
    return tuple(keys), shredded_at, tuple(apps), messages


async def test_crypto_shredding(node: Node) -> None:
    t1 = node.demo.tenant
    t1_app = node.demo
    marker = f"ShredMark{secrets.token_hex(8)}"
    t2 = node.cli("tenant", "create", f"second-{secrets.token_hex(4)}")["tenant"]
    t2_app = node.add_app("second", "publish:>", "messages:read", tenant=t2)
    topic = f"keys.shred.{secrets.token_hex(4)}"
    t1_token = node.token(t1_app)  # obtained BEFORE shredding: the app gets disabled
    t2_token = node.token(t2_app)
    t1_expected: dict[str, Content] = {}
    t2_expected: dict[str, Content] = {}
    publish_many(node, t1_token, topic, 5, marker, expected=t1_expected)
    publish_many(node, t2_token, topic, 5, marker, expected=t2_expected)
    assert_reads_back(node, t1_token, t1_expected)
    assert_reads_back(node, t2_token, t2_expected)

    # Without --yes, answering "n": refused, and nothing changes.
    before = tenant_state(node, t1)
    assert before[0], "tenant 1 has data keys"
    assert before[1] is None
    refused = shred_tenant_cli(node, t1, "n\n")
    assert refused.returncode != 0
    assert tenant_state(node, t1) == before
    assert_reads_back(node, t1_token, t1_expected)

    shredded = node.cli("tenant", "shred", t1, "--yes")
    assert shredded == {"tenant": t1, "shredded": True}
    keys_after, shredded_at, apps_after, messages_after = tenant_state(node, t1)
    assert keys_after == ()  # the data keys are gone …
    assert shredded_at is not None
    assert messages_after == before[3]  # … the rows are not
    assert apps_after
    assert all(disabled for _, disabled in apps_after)
    with node.db() as conn:
        still_there = {
            r[0] for r in conn.execute("SELECT id FROM messages WHERE tenant_id = ?", (t1,))
        }
    assert set(t1_expected) <= still_there

    # Decrypting is impossible, even in-process with the master key.
    rt = await Runtime.open(in_process_settings(node))
    try:
        assert await rt.store.tenant_keys(t1) == []
        for message_id in t1_expected:
            record = await rt.store.get_message(t1, message_id)
            assert record is not None
            with pytest.raises(DecryptionFailed):
                await rt.keyring.open(t1, record.id, "content", record.content)
            with pytest.raises(Gone):
                await message_service.open_content(rt, record)
        assert len(await rt.store.tenant_keys(t2)) >= 1
    finally:
        await rt.close()

    # Through the API: 410 for the content, also on the node that still cached the keys.
    with node.client() as client:
        for message_id in t1_expected:
            response = client.get(f"/v1/messages/{message_id}", headers=bearer(t1_token))
            assert_problem(response, 410, "content-shredded")
        history = client.get(f"/v1/topics/{topic}/messages", headers=bearer(t1_token))
        assert_problem(history, 410, "content-shredded")
    wait_for_key_cache()
    with node.client() as client:
        response = client.get(f"/v1/messages/{next(iter(t1_expected))}", headers=bearer(t1_token))
        assert_problem(response, 410, "content-shredded")
    assert_problem(node.token_response(t1_app), 401, "invalid-client")
    # A token issued before the shredding cannot store new content either.
    with node.client() as client:
        response = client.post("/v1/messages", json=content(topic, 99), headers=bearer(t1_token))
    assert_problem(response, 410, "content-shredded")
    assert tenant_state(node, t1)[3] == before[3]

    # Tenant 2 is unaffected: reads, history, new tokens and publishes work.
    assert_reads_back(node, t2_token, t2_expected)
    publish_many(node, node.token(t2_app), topic, 2, "after-", expected=t2_expected)
    assert_reads_back(node, t2_token, t2_expected)
    with node.client() as client:
        history = client.get(f"/v1/topics/{topic}/messages", headers=bearer(t2_token))
    assert history.status_code == 200, history.text
    assert [m["id"] for m in history.json()["messages"]] == list(t2_expected)

    # The audit log still recomputes: leaf hashes, gap-free indices, no content.
    with node.db() as conn:
        entries = conn.execute(
            "SELECT idx, entry, leaf_hash FROM audit_entries ORDER BY idx"
        ).fetchall()
        message_leaves = {
            seq: (leaf, blob)
            for seq, leaf, blob in conn.execute("SELECT seq, leaf_hash, content FROM messages")
        }
    assert [idx for idx, _, _ in entries] == list(range(len(entries)))
    actions = []
    for idx, entry, leaf_hash in entries:
        assert hashlib.sha256(b"\x00" + bytes(entry)).digest() == bytes(leaf_hash), idx
        assert marker.encode() not in bytes(entry), idx
        assert marker.encode("utf-16-le") not in bytes(entry), idx
        decoded = json.loads(entry)
        assert decoded["index"] == idx
        actions.append((decoded.get("action"), decoded.get("tenant")))
        if idx in message_leaves:
            # A message's row points at its entry, whose commitment is the stored ciphertext.
            leaf, blob = message_leaves[idx]
            assert bytes(leaf) == bytes(leaf_hash), idx
            details = decoded["details"]
            assert details["content_sha256"] == hashlib.sha256(bytes(blob)).hexdigest()
    assert ("tenant.shredded", t1) in actions
    assert sum(1 for a in actions if a == ("message.published", t1)) == len(t1_expected)
    assert set(message_leaves) <= {idx for idx, _, _ in entries}
