"""A crash between message commit and audit append cannot leave a message without its entry.

Herald writes the message, its deliveries and its ``message.published`` audit entry (with
the Merkle tree nodes it completes) in one database transaction. This test kills
``herald serve`` with SIGKILL while publishes are in flight, several times, restarts it,
and checks that

* every message that got a 202 exists, with the audit index and leaf hash of its 202, and
  the entry at that index is ``message.published`` of ``message:<id>``;
* the audit log is gap-free, and in SQLite every ``messages.seq`` has the audit entry of the
  same index and leaf hash, and every ``message.published`` entry has its message;
* the stored tree nodes are those of the stored leaves, and every checkpoint signed before
  or after the crashes is the root of a prefix of the log.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from herald.audit.merkle import leaf_hash, root_hash
from herald.audit.note import NoteVerifier, open_checkpoint

if TYPE_CHECKING:  # the conftest's types, for readers and type checkers only
    from tests.api.conftest import Node, NodeFactory

WAIT = 10.0  # seconds: the bound of every single HTTP wait in this module
ROUNDS = 3  # kill/restart cycles
WORKERS = 24  # publishes in flight at once
PUBLISH_PHASE = 30.0  # seconds: bound of one round's publishing (it normally takes < 2 s)


@pytest.fixture
def node(node_factory: NodeFactory) -> Node:
    """A started server with a global operator, signing a checkpoint every second."""
    node = node_factory(start=False, HERALD_AUDIT_CHECKPOINT_SECONDS="1")
    node.add_operator("root")
    node.start()
    return node


@dataclass
class Round:
    accepted: list[dict[str, Any]] = field(default_factory=list)  # 202 bodies
    unanswered: int = 0  # publishes in flight when the server died


async def publish_until_killed(node: Node, token: str, kill_after: int) -> Round:
    """Publish from WORKERS tasks; SIGKILL the server once ``kill_after`` were accepted."""
    result = Round()
    killed = asyncio.Event()

    async def worker(client: httpx.AsyncClient, w: int) -> None:
        n = 0
        while not killed.is_set():
            n += 1
            message: dict[str, Any] = {"topic": f"crash.w{w}", "title": f"{w}-{n}"}
            if n % 2:
                message["recipients"] = [f"user-{w}"]  # deliveries share the transaction
            try:
                response = await client.post(
                    "/v1/messages",
                    json=message,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Idempotency-Key": str(uuid.uuid4()),
                    },
                )
            except httpx.TransportError:
                assert killed.is_set(), "a publish failed before the server was killed"
                result.unanswered += 1
                return
            assert response.status_code == 202, response.text
            result.accepted.append(response.json())
            if len(result.accepted) >= kill_after and not killed.is_set():
                # Synchronously, from the event loop: every other worker's request is
                # somewhere between the socket and the database commit right now.
                killed.set()
                node.kill()

    limits = httpx.Limits(max_connections=WORKERS)
    async with node.async_client(limits=limits) as client, asyncio.timeout(PUBLISH_PHASE):
        await asyncio.gather(*(worker(client, w) for w in range(WORKERS)))
    assert killed.is_set()
    return result


def test_sigkill_mid_publish_leaves_no_message_without_its_entry(node: Node) -> None:
    rng = random.Random()
    accepted: list[dict[str, Any]] = []
    unanswered = 0
    for _ in range(ROUNDS):
        token = node.token(node.demo)
        outcome = asyncio.run(publish_until_killed(node, token, rng.randint(40, 160)))
        accepted += outcome.accepted
        unanswered += outcome.unanswered
        node.start()  # recovers from the crash: SQLite rolls back the unfinished transaction
    # The kills hit publishes in flight (not an idle server).
    assert unanswered >= ROUNDS
    ids = [body["id"] for body in accepted]
    assert len(set(ids)) == len(ids)

    check_through_the_api(node, accepted)
    leaves = check_the_database(node, accepted)
    check_the_tree_and_checkpoints(node, leaves)
    node.stop()


def check_through_the_api(node: Node, accepted: list[dict[str, Any]]) -> None:
    """Every 202 survived, with its audit reference and its entry where the 202 said."""
    token = node.token(node.demo)
    admin = node.operator_token()
    with node.client() as client:
        for body in accepted:
            response = client.get(f"/v1/messages/{body['id']}", headers=_auth(token))
            assert response.status_code == 200, response.text
            stored = response.json()
            assert stored["audit"] == body["audit"]
            if stored["recipients"]:
                assert stored["deliveries"], body["id"]

        first = client.get("/v1/audit/entries", params={"to": 0}, headers=_auth(admin))
        assert first.status_code == 200, first.text
        size = first.json()["size"]
        entries: list[dict[str, Any]] = []
        while len(entries) < size:
            page = client.get(
                "/v1/audit/entries", params={"from": len(entries)}, headers=_auth(admin)
            )
            assert page.status_code == 200, page.text
            assert page.json()["entries"], "the entries stopped before the log size"
            entries += page.json()["entries"]
    assert [e["index"] for e in entries] == list(range(len(entries)))  # gap-free
    for body in accepted:
        index = body["audit"]["index"]
        entry = json.loads(entries[index]["entry"])
        assert entry["object"] == f"message:{body['id']}"
        assert entry["action"] == "message.published"
        assert entries[index]["leaf_hash"] == body["audit"]["leaf_hash"]


def check_the_database(node: Node, accepted: list[dict[str, Any]]) -> list[bytes]:
    """Messages and entries agree row by row in SQLite; returns the leaf hashes in order."""
    with node.db() as db:
        audit = {
            idx: (entry, leaf)
            for idx, entry, leaf in db.execute("SELECT idx, entry, leaf_hash FROM audit_entries")
        }
        messages = {
            seq: (mid, leaf)
            for mid, seq, leaf in db.execute("SELECT id, seq, leaf_hash FROM messages")
        }
        (recipients_without_deliveries,) = db.execute(
            "SELECT count(*) FROM messages m WHERE m.recipients != '[]' AND NOT EXISTS "
            "(SELECT 1 FROM deliveries d WHERE d.message_id = m.id)"
        ).fetchone()
    assert sorted(audit) == list(range(len(audit)))  # gap-free
    for idx, (entry, leaf) in audit.items():
        assert leaf_hash(entry) == leaf, idx
        assert json.loads(entry)["index"] == idx
    for seq, (message_id, leaf) in messages.items():  # no message without its entry
        assert seq in audit, f"message {message_id} (seq {seq}) has no audit entry"
        assert audit[seq][1] == leaf, f"message {message_id}: another leaf hash than its entry"
        assert json.loads(audit[seq][0])["object"] == f"message:{message_id}"
    published = {
        idx: json.loads(entry)["object"]
        for idx, (entry, _) in audit.items()
        if json.loads(entry)["action"] == "message.published"
    }
    # ... and no publication entry without its message.
    assert published == {seq: f"message:{mid}" for seq, (mid, _) in messages.items()}
    assert {body["audit"]["index"] for body in accepted} <= set(messages)
    assert recipients_without_deliveries == 0
    return [audit[i][1] for i in range(len(audit))]


def check_the_tree_and_checkpoints(node: Node, leaves: list[bytes]) -> None:
    """The stored tree is the tree of the stored leaves; every checkpoint is of a prefix."""
    with node.db() as db:
        nodes = {
            (level, idx): digest
            for level, idx, digest in db.execute("SELECT level, idx, hash FROM audit_nodes")
        }
    n = len(leaves)
    assert len(nodes) == 2 * n - n.bit_count()
    for (level, idx), digest in nodes.items():
        assert digest == root_hash(leaves[idx << level : (idx + 1) << level]), (level, idx)
    # Every checkpoint signed, before and after the crashes, is the root of a prefix.
    key = NoteVerifier.from_key(_audit_key(node))
    witnessed = sorted(node.witness_dir.glob("*.checkpoint"))
    assert witnessed
    for item in witnessed:
        checkpoint = open_checkpoint(key, item.read_text(encoding="utf-8"))
        assert checkpoint.root == root_hash(leaves[: checkpoint.size]), checkpoint.size
    # A checkpoint signed after the restart covers everything published before it.
    admin = node.operator_token()
    deadline = time.monotonic() + WAIT
    while True:
        with node.client() as client:
            response = client.get("/v1/audit/checkpoint", headers=_auth(admin))
        assert response.status_code == 200, response.text
        checkpoint = open_checkpoint(key, response.json()["note"])
        if checkpoint.size >= n:
            break
        assert time.monotonic() < deadline, "no checkpoint after the restart"
        time.sleep(0.2)
    # Only the operator's sign-in above was logged since the database was read.
    assert checkpoint.root == root_hash([*leaves, *_leaves_from(node, admin, n, checkpoint.size)])


def _leaves_from(node: Node, token: str, start: int, end: int) -> list[bytes]:
    with node.client() as client:
        response = client.get(
            "/v1/audit/entries", params={"from": start, "to": end}, headers=_auth(token)
        )
    assert response.status_code == 200, response.text
    entries = response.json()["entries"]
    assert [e["index"] for e in entries] == list(range(start, end))
    return [bytes.fromhex(e["leaf_hash"]) for e in entries]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _audit_key(node: Node) -> str:
    with node.client() as client:
        response = client.get("/.well-known/herald-audit-key")
    assert response.status_code == 200, response.text
    return response.text.strip()
