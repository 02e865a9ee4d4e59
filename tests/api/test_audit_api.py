"""The audit API against a real ``herald serve`` (DESIGN §6): checkpoints, entries, proofs.

Proofs are checked with verifiers written here from RFC 9162 §2.1.3.2 and §2.1.4.2 and
with a reference implementation of the RFC's recursive definitions (§2.1.1, §2.1.3.1,
§2.1.4.1) over every leaf, never with ``herald.audit.merkle``: a bug shared by the server
and its own verifier would otherwise pass unnoticed.

The module runs its own server (two tenants, an admin app, a global operator) that signs a
checkpoint every second, so that several checkpoints are seen within a test.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from herald.audit.merkle import root_hash
from herald.audit.note import Checkpoint, NoteVerifier, open_checkpoint

if TYPE_CHECKING:  # the conftest's types, for readers and type checkers only
    from tests.api.conftest import App, Node, NodeFactory

WAIT = 10.0  # seconds: the bound of every single wait in this module
PROBLEM = "urn:herald:problem:"
CONCURRENT_PUBLISHES = 200
LIMITS = httpx.Limits(max_connections=CONCURRENT_PUBLISHES)


# -- RFC 9162, written from the RFC's text ---------------------------------------------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def rfc_leaf_hash(entry: bytes) -> bytes:
    """§2.1.1: MTH({d(0)}) = SHA-256(0x00 || d(0))."""
    return sha256(b"\x00" + entry)


def rfc_node(left: bytes, right: bytes) -> bytes:
    """§2.1.1: SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))."""
    return sha256(b"\x01" + left + right)


def largest_power_of_two_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class Reference:
    """The RFC's recursive definitions over a list of leaf hashes (slow, obviously right)."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = list(leaves)
        self.mth: Callable[[int, int], bytes] = cache(self._mth)

    def _mth(self, lo: int, hi: int) -> bytes:
        """§2.1.1 MTH(D[lo:hi])."""
        n = hi - lo
        if n == 0:
            return sha256(b"")
        if n == 1:
            return self.leaves[lo]
        k = largest_power_of_two_below(n)
        return rfc_node(self.mth(lo, lo + k), self.mth(lo + k, hi))

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        """§2.1.3.1 PATH(m, D[lo:hi])."""
        n = hi - lo
        if n == 1:
            return []
        k = largest_power_of_two_below(n)
        if m < k:
            return [*self.path(m, lo, lo + k), self.mth(lo + k, hi)]
        return [*self.path(m - k, lo + k, hi), self.mth(lo, lo + k)]

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        """§2.1.4.1 SUBPROOF(m, D[lo:hi], b)."""
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = largest_power_of_two_below(n)
        if m <= k:
            return [*self.subproof(m, lo, lo + k, b), self.mth(lo + k, hi)]
        return [*self.subproof(m - k, lo + k, hi, False), self.mth(lo, lo + k)]


def rfc_verify_inclusion(
    leaf_index: int, tree_size: int, leaf: bytes, inclusion_path: list[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2, step by step."""
    # 1. leaf_index must be below tree_size.
    if leaf_index >= tree_size:
        return False
    # 2. fn = leaf_index, sn = tree_size - 1.
    fn, sn = leaf_index, tree_size - 1
    # 3. r = hash.
    r = leaf
    # 4. for each p in inclusion_path:
    for p in inclusion_path:
        # a. sn == 0: fail.
        if sn == 0:
            return False
        # b. LSB(fn) set, or fn == sn:
        if fn % 2 == 1 or fn == sn:
            r = rfc_node(p, r)
            # ii. if LSB(fn) is not set, shift both until LSB(fn) is set or fn is 0.
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn //= 2
                    sn //= 2
        else:
            r = rfc_node(r, p)
        # c. shift both once.
        fn //= 2
        sn //= 2
    # 5. sn must be 0 and r the root.
    return sn == 0 and r == root


def rfc_verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, path: list[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2, step by step (for 0 < first < second)."""
    # 1. An empty path fails.
    if not path:
        return False
    path = list(path)
    # 2. first a power of two: prepend first_hash.
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    # 3.
    fn, sn = first - 1, second - 1
    # 4. while LSB(fn) is set, shift both.
    while fn % 2 == 1:
        fn //= 2
        sn //= 2
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr = rfc_node(c, fr)
            sr = rfc_node(c, sr)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn //= 2
                    sn //= 2
        else:
            sr = rfc_node(sr, c)
        fn //= 2
        sn //= 2
    # 7.
    return fr == first_hash and sr == second_hash and sn == 0


def test_rfc_verifiers_refuse_what_they_should() -> None:
    """The verifiers above are not vacuous: they check the reference and refuse tampering."""
    leaves = [rfc_leaf_hash(str(i).encode()) for i in range(14)]
    ref = Reference(leaves)
    for size in range(1, 14):
        root = ref.mth(0, size)
        for m in range(size):
            proof = ref.path(m, 0, size)
            assert rfc_verify_inclusion(m, size, leaves[m], proof, root)
            assert not rfc_verify_inclusion(m, size, leaves[(m + 1) % 13], proof, root)
            if proof:
                assert not rfc_verify_inclusion(m, size, leaves[m], proof[:-1], root)
                bad = [rfc_node(proof[0], proof[0]), *proof[1:]]
                assert not rfc_verify_inclusion(m, size, leaves[m], bad, root)
            assert not rfc_verify_inclusion(m, size + 1, leaves[m], proof, ref.mth(0, size + 1))
        for first in range(1, size):
            proof = ref.subproof(first, 0, size, True)
            assert rfc_verify_consistency(first, size, ref.mth(0, first), root, proof)
            assert not rfc_verify_consistency(first, size, root, root, proof)
            assert not rfc_verify_consistency(first, size, ref.mth(0, first), root, proof[:-1])


# -- our own server ----------------------------------------------------------------------------


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def node(module_node_factory: NodeFactory) -> Node:
    """The module's server: apps ``other`` (a second tenant) and ``admin`` (tenant "demo")."""
    node = module_node_factory(
        name="audit-api", start=False, reuse_tokens=True, HERALD_AUDIT_CHECKPOINT_SECONDS="1"
    )
    other_tenant = node.cli("tenant", "create", "other")["tenant"]
    node.add_app("other", "publish:>", "subscribe:>", "messages:read", tenant=other_tenant)
    node.add_app("admin", "admin")
    node.start()
    return node


def subscriber_token(node: Node, app: App, recipient: str) -> str:
    with node.client() as client:
        response = client.post(
            "/v1/subscriber-tokens",
            json={"recipient": recipient, "topics": [">"]},
            headers=auth(node.token(app)),
        )
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def publish(node: Node, app: App, **message: Any) -> dict[str, Any]:
    with node.client() as client:
        response = client.post("/v1/messages", json=message, headers=auth(node.token(app)))
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def get(node: Node, path: str, token: str | None, **params: Any) -> httpx.Response:
    with node.client() as client:
        return client.get(path, params=params, headers=auth(token) if token else {})


def audit_key(node: Node) -> str:
    response = get(node, "/.well-known/herald-audit-key", None)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text.strip()


def verified_checkpoint(node: Node, token: str, key: str) -> Checkpoint:
    """The latest checkpoint, its note verified with ``key``; the JSON agrees with it."""
    response = get(node, "/v1/audit/checkpoint", token)
    assert response.status_code == 200, response.text
    body = response.json()
    checkpoint = open_checkpoint(NoteVerifier.from_key(key), body["note"], origin=body["origin"])
    assert checkpoint.size == body["size"]
    assert checkpoint.root == base64.b64decode(body["root"])
    return checkpoint


def checkpoint_covering(node: Node, token: str, key: str, size: int) -> Checkpoint:
    """Wait (bounded) for a checkpoint of at least ``size`` entries."""
    deadline = time.monotonic() + WAIT
    while True:
        response = get(node, "/v1/audit/checkpoint", token)
        if response.status_code == 200:
            checkpoint = verified_checkpoint(node, token, key)
            if checkpoint.size >= size:
                return checkpoint
        assert time.monotonic() < deadline, f"no checkpoint of size >= {size} in {WAIT} s"
        time.sleep(0.2)


def all_entries(node: Node, token: str, end: int | None = None) -> list[dict[str, Any]]:
    """Every entry the token may see, below ``end`` (default: the log size), page by page."""
    found: list[dict[str, Any]] = []
    start: int | None = 0
    while start is not None and (end is None or start < end):
        params = {"from": start} if end is None else {"from": start, "to": end}
        response = get(node, "/v1/audit/entries", token, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        found.extend(body["entries"])
        start = body["next"]
    return found


def log_size(node: Node) -> int:
    admin = node.operator_token()
    response = get(node, "/v1/audit/entries", admin, **{"from": 0, "to": 0})
    assert response.status_code == 200, response.text
    return int(response.json()["size"])


def assert_problem(response: httpx.Response, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"] == PROBLEM + slug
    assert problem["status"] == status
    assert problem["detail"]


# -- checkpoints and proofs -----------------------------------------------------------------


def test_checkpoint_note_verifies_with_the_published_key(node: Node) -> None:
    publish(node, node.demo, topic="audit.checkpoint", title="so the log grows")
    key = audit_key(node)
    token = node.token(node.demo)
    checkpoint = checkpoint_covering(node, token, key, log_size(node))
    assert checkpoint.origin == key.split("+", 1)[0]
    # Every token kind reads the (tenant-neutral) checkpoint; all get the same note.
    tokens = (
        token,
        node.token(node.app("other")),
        subscriber_token(node, node.demo, "cp-user"),
    )
    notes = {get(node, "/v1/audit/checkpoint", t).json()["note"] for t in tokens}
    for note in notes:
        open_checkpoint(NoteVerifier.from_key(key), note)
    # The witness holds a copy of every checkpoint, each signed by the same key.
    witnessed = sorted(node.witness_dir.glob("*.checkpoint"))
    assert witnessed
    for item in witnessed:
        copy = open_checkpoint(NoteVerifier.from_key(key), item.read_text(encoding="utf-8"))
        assert int(item.name.split(".")[0]) == copy.size


def test_every_inclusion_proof_verifies(node: Node) -> None:
    other = node.app("other")
    for n in range(3):
        publish(node, node.demo, topic="audit.inclusion", title=f"demo {n}")
        publish(node, other, topic="audit.inclusion", title=f"other {n}")
    key = audit_key(node)
    admin = node.operator_token()
    checkpoint = checkpoint_covering(node, admin, key, log_size(node))
    entries = all_entries(node, admin, checkpoint.size)
    assert [e["index"] for e in entries] == list(range(checkpoint.size))
    leaves = [rfc_leaf_hash(e["entry"].encode("utf-8")) for e in entries]
    assert [e["leaf_hash"] for e in entries] == [leaf.hex() for leaf in leaves]
    reference = Reference(leaves)
    assert reference.mth(0, checkpoint.size) == checkpoint.root

    tenant_tokens = {
        node.demo.tenant: node.token(node.demo),
        other.tenant: node.token(other),
    }
    with node.client() as client:
        for index, entry in enumerate(entries):
            response = client.get(
                "/v1/audit/proof/inclusion",
                params={"index": index, "size": checkpoint.size},
                headers=auth(admin),
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert (body["index"], body["size"]) == (index, checkpoint.size)
            assert body["leaf_hash"] == leaves[index].hex()
            proof = [bytes.fromhex(p) for p in body["proof"]]
            assert rfc_verify_inclusion(
                index, checkpoint.size, leaves[index], proof, checkpoint.root
            )
            assert proof == reference.path(index, 0, checkpoint.size)
            # The entry's own tenant gets the same proof with its own token.
            tenant = json.loads(entry["entry"])["tenant"]
            if tenant in tenant_tokens:
                own = client.get(
                    "/v1/audit/proof/inclusion",
                    params={"index": index, "size": checkpoint.size},
                    headers=auth(tenant_tokens[tenant]),
                )
                assert own.status_code == 200, own.text
                assert own.json()["proof"] == body["proof"]
        # Without size: a proof against the current log size.
        response = client.get("/v1/audit/proof/inclusion", params={"index": 0}, headers=auth(admin))
        assert response.status_code == 200, response.text
        assert response.json()["size"] >= checkpoint.size


def test_consistency_between_every_pair_of_checkpoints(node: Node) -> None:
    key = audit_key(node)
    admin = node.operator_token()
    seen: dict[int, Checkpoint] = {}
    # Grow the log across several checkpoints (one per second) and watch them come.
    deadline = time.monotonic() + 4 * WAIT
    while len(seen) < 5:
        assert time.monotonic() < deadline, f"only {len(seen)} checkpoints seen"
        publish(node, node.demo, topic="audit.consistency", title="grow")
        checkpoint = checkpoint_covering(node, admin, key, log_size(node))
        seen[checkpoint.size] = checkpoint
    # ... and every checkpoint the witness kept, signed by the same key.
    for item in node.witness_dir.glob("*.checkpoint"):
        copy = open_checkpoint(NoteVerifier.from_key(key), item.read_text(encoding="utf-8"))
        assert seen.setdefault(copy.size, copy) == copy
    sizes = sorted(seen)
    assert len(sizes) >= 5

    leaves = [bytes.fromhex(e["leaf_hash"]) for e in all_entries(node, admin, sizes[-1])]
    reference = Reference(leaves)
    with node.client() as client:
        for i, first in enumerate(sizes):
            assert reference.mth(0, first) == seen[first].root
            for second in sizes[i + 1 :]:
                response = client.get(
                    "/v1/audit/proof/consistency",
                    params={"first": first, "second": second},
                    headers=auth(admin),
                )
                assert response.status_code == 200, response.text
                body = response.json()
                assert (body["first"], body["second"]) == (first, second)
                proof = [bytes.fromhex(p) for p in body["proof"]]
                assert rfc_verify_consistency(
                    first, second, seen[first].root, seen[second].root, proof
                ), (first, second)
                assert proof == reference.subproof(first, 0, second, True)
            # first == second: the RFC's empty proof.
            response = client.get(
                "/v1/audit/proof/consistency",
                params={"first": first, "second": first},
                headers=auth(node.token(node.app("other"))),
            )
            assert response.status_code == 200, response.text
            assert response.json()["proof"] == []


# -- entries and who sees them --------------------------------------------------------------


def tenant_of(item: dict[str, Any]) -> str | None:
    tenant = json.loads(item["entry"])["tenant"]
    assert tenant is None or isinstance(tenant, str)
    return tenant


def test_each_tenant_sees_only_its_entries_and_a_global_operator_sees_all(node: Node) -> None:
    other = node.app("other")
    mine = publish(node, node.demo, topic="audit.tenants", title="demo's")
    theirs = publish(node, other, topic="audit.tenants", title="other's")
    size = log_size(node)

    everything = all_entries(node, node.operator_token())
    assert [e["index"] for e in everything][:size] == list(range(size))
    assert {tenant_of(e) for e in everything} >= {None, node.demo.tenant, other.tenant}
    by_tenant: dict[str | None, set[int]] = {}
    for item in everything:
        by_tenant.setdefault(tenant_of(item), set()).add(item["index"])
        assert rfc_leaf_hash(item["entry"].encode()).hex() == item["leaf_hash"]

    views = {
        node.demo.tenant: [
            node.token(node.demo),
            node.token(node.app("admin")),
            subscriber_token(node, node.demo, "u-demo"),
        ],
        other.tenant: [node.token(other), subscriber_token(node, other, "u-other")],
    }
    for tenant, tokens in views.items():
        for token in tokens:
            seen = all_entries(node, token, size)
            indices = {e["index"] for e in seen}
            assert {tenant_of(e) for e in seen} == {tenant}
            assert indices == {i for i in by_tenant[tenant] if i < size}
            for other_tenant, other_indices in by_tenant.items():
                if other_tenant != tenant:
                    assert not indices & other_indices
    assert mine["audit"]["index"] in by_tenant[node.demo.tenant]
    assert theirs["audit"]["index"] in by_tenant[other.tenant]

    # A range that holds only the other tenant's entry: empty for demo, one entry for other.
    index = theirs["audit"]["index"]
    for token, expected in ((node.token(node.demo), []), (node.token(other), [index])):
        response = get(node, "/v1/audit/entries", token, **{"from": index, "to": index + 1})
        assert response.status_code == 200, response.text
        assert [e["index"] for e in response.json()["entries"]] == expected


def test_inclusion_proof_of_another_tenants_entry_is_not_found(node: Node) -> None:
    other, admin = node.app("other"), node.app("admin")
    theirs = publish(node, other, topic="audit.hidden", title="other's")["audit"]["index"]
    system = next(e["index"] for e in all_entries(node, node.operator_token()) if not tenant_of(e))
    # The demo tenant's admin app is an app of its tenant like any other: no wider view.
    demo_callers = (
        node.token(node.demo),
        node.token(admin),
        subscriber_token(node, node.demo, "u-hidden"),
    )
    for token in demo_callers:
        for index in (theirs, system):
            response = get(node, "/v1/audit/proof/inclusion", token, index=index)
            assert_problem(response, 404, "not-found")
    # ... while the entry's own tenant and a global operator get the proof.
    for token in (node.token(other), node.operator_token()):
        assert get(node, "/v1/audit/proof/inclusion", token, index=theirs).status_code == 200


def test_bad_parameters_are_400_problems(node: Node) -> None:
    admin = node.operator_token()
    size = log_size(node)
    bad = [
        ("/v1/audit/entries", {"from": "abc"}),
        ("/v1/audit/entries", {"from": "-1"}),
        ("/v1/audit/entries", {"from": "1.5"}),
        ("/v1/audit/entries", {"from": "５"}),  # a non-ASCII digit
        ("/v1/audit/entries", {"from": "10", "to": "5"}),
        ("/v1/audit/entries", {"to": "1" * 19}),
        ("/v1/audit/proof/inclusion", {}),
        ("/v1/audit/proof/inclusion", {"index": "x"}),
        ("/v1/audit/proof/inclusion", {"index": "0", "size": "0"}),
        ("/v1/audit/proof/inclusion", {"index": "1", "size": "1"}),
        ("/v1/audit/proof/inclusion", {"index": "0", "size": str(size + 10**6)}),
        ("/v1/audit/proof/inclusion", {"index": "0", "size": "-3"}),
        ("/v1/audit/proof/consistency", {}),
        ("/v1/audit/proof/consistency", {"first": "1"}),
        ("/v1/audit/proof/consistency", {"second": "1"}),
        ("/v1/audit/proof/consistency", {"first": "0", "second": "1"}),
        ("/v1/audit/proof/consistency", {"first": "3", "second": "2"}),
        ("/v1/audit/proof/consistency", {"first": "1", "second": str(size + 10**6)}),
        ("/v1/audit/proof/consistency", {"first": "1", "second": "9" * 19}),
    ]
    with node.client() as client:
        for path, params in bad:
            response = client.get(path, params=params, headers=auth(admin))
            assert response.status_code == 400, (path, params, response.text)
            assert_problem(response, 400, "invalid-request")


def test_tokens_are_required(node: Node) -> None:
    routes = [
        ("/v1/audit/checkpoint", {}),
        ("/v1/audit/entries", {"from": 0, "to": 5}),
        ("/v1/audit/proof/inclusion", {"index": 0}),
        ("/v1/audit/proof/consistency", {"first": 1, "second": 2}),
    ]
    with node.client() as client:
        for path, params in routes:
            for headers in (
                {},
                {"Authorization": "Bearer not-a-token"},
                {"Authorization": "Basic " + base64.b64encode(b"a:b").decode()},
            ):
                response = client.get(path, params=params, headers=headers)
                assert_problem(response, 401, "invalid-token")
                assert "not-a-token" not in response.text
    # The verifier key is public: it needs no token.
    assert audit_key(node)


def test_entries_never_contain_message_content(node: Node) -> None:
    marker = "MARKER" + uuid.uuid4().hex
    sent = publish(
        node,
        node.demo,
        topic="audit.content",
        title=f"title {marker}",
        body=f"body {marker}",
        data={"secret": marker, marker: 1},
        recipients=["content-user"],
    )
    token = node.operator_token()
    index = sent["audit"]["index"]
    response = get(node, "/v1/audit/entries", token, **{"from": index, "to": index + 1})
    assert response.status_code == 200, response.text
    (item,) = response.json()["entries"]
    entry = json.loads(item["entry"])
    assert entry["object"] == f"message:{sent['id']}"
    assert entry["action"] == "message.published"
    # Nothing of the content, in any encoding a careless log might use.
    needles = [marker, marker.encode().hex(), base64.b64encode(marker.encode()).decode()]
    texts = [
        get(node, "/v1/audit/entries", token, **{"from": 0, "to": log_size(node)}).text,
        get(node, "/v1/audit/entries", node.token(node.demo), **{"from": 0}).text,
    ]
    for text in texts:
        for needle in needles:
            assert needle not in text


# -- concurrency ------------------------------------------------------------------------------


async def test_concurrent_publishes_get_gap_free_indices_and_the_log_verifies(
    node: Node,
) -> None:
    token = await asyncio.to_thread(node.token, node.demo)
    other = await asyncio.to_thread(node.token, node.app("other"))

    async def publish_one(client: httpx.AsyncClient, n: int) -> dict[str, Any]:
        # Alternate tenants: two apps write the log at once.
        bearer = token if n % 2 else other
        response = await client.post(
            "/v1/messages",
            json={"topic": "audit.concurrent", "title": f"n{n}"},
            headers={**auth(bearer), "Idempotency-Key": str(uuid.uuid4())},
        )
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    async with node.async_client(limits=LIMITS) as client:
        async with asyncio.timeout(6 * WAIT):
            results = await asyncio.gather(
                *(publish_one(client, n) for n in range(CONCURRENT_PUBLISHES))
            )
    indices = sorted(r["audit"]["index"] for r in results)
    assert len(set(indices)) == CONCURRENT_PUBLISHES
    # Nothing else writes the log meanwhile: the indices are one gap-free run.
    assert indices == list(range(indices[0], indices[0] + CONCURRENT_PUBLISHES))

    key = await asyncio.to_thread(audit_key, node)
    admin = await asyncio.to_thread(node.operator_token)
    size = await asyncio.to_thread(log_size, node)
    checkpoint = await asyncio.to_thread(checkpoint_covering, node, admin, key, size)
    entries = await asyncio.to_thread(all_entries, node, admin, checkpoint.size)
    # The whole log: gap-free, each entry at its own index, each leaf hash its entry's.
    assert [e["index"] for e in entries] == list(range(checkpoint.size))
    leaves: list[bytes] = []
    for position, item in enumerate(entries):
        entry = json.loads(item["entry"])
        assert entry["index"] == position
        leaf = rfc_leaf_hash(item["entry"].encode("utf-8"))
        assert leaf.hex() == item["leaf_hash"]
        leaves.append(leaf)
    # Each 202 named its own entry, with the leaf hash it got.
    for result in results:
        index = result["audit"]["index"]
        entry = json.loads(entries[index]["entry"])
        assert entry["object"] == f"message:{result['id']}"
        assert entry["action"] == "message.published"
        assert entries[index]["leaf_hash"] == result["audit"]["leaf_hash"]
    # The log verifies: the root over all leaves is the fresh checkpoint's signed root.
    assert root_hash(leaves) == checkpoint.root
    assert Reference(leaves).mth(0, checkpoint.size) == checkpoint.root
