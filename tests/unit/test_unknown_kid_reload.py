"""Refetch on an unknown ``kid``: a node re-reads the token-signing keys when a token names a
key it does not know, at most once per ``limits.UNKNOWN_KID_RELOAD_INTERVAL``.

Two runtimes share one real SQLite database in a temporary data dir (two nodes); node A
stores a new token key (as a rotation elsewhere would) and signs with it; node B, which has
not reloaded, verifies. Node B's throttle runs on an injected monotonic clock, and its
reloads are counted by ``Runtime.unknown_kid_reloads``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from herald import limits
from herald.config import load_settings
from herald.core.scopes import ScopeSet
from herald.crypto.signing import PURPOSE_TOKEN, new_signing_key
from herald.errors import InvalidToken
from herald.service import identity
from herald.service.runtime import Runtime, utcnow

ISSUER = "https://127.0.0.1:8443"  # the base URL of the default host and port


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[Runtime, Runtime, Clock]]:
    """Node A and node B on one database; B's unknown-kid throttle on a fake clock."""
    settings = load_settings(
        data_dir=tmp_path / "data",
        master_key=base64.b64encode(os.urandom(32)).decode(),
    )
    (tmp_path / "data").mkdir()
    node_a = await Runtime.open(settings)
    await identity.ensure_signing_keys(node_a)
    node_b = await Runtime.open(settings, migrate=False)
    clock = Clock()
    node_b.clock = clock
    try:
        yield node_a, node_b, clock
    finally:
        await node_b.close()
        await node_a.close()


async def rotate_in(node: Runtime) -> str:
    """Store a new, active token key (a rotation made elsewhere) and load it on ``node``."""
    record, _ = await new_signing_key(node.provider, PURPOSE_TOKEN, utcnow())
    await node.store.add_signing_key(record)
    await node.reload_token_keys()
    return record.kid


def issue(node: Runtime) -> str:
    token, _ = node.token_service().issue_access(
        tenant_id="t", client_id="c", scopes=ScopeSet.parse("publish:>"), ttl=600
    )
    return token


def stranger(kid: str) -> str:
    """A token naming ``kid``, signed by a key nobody stores."""
    now = int(utcnow().timestamp())
    claims = {
        "iss": ISSUER,
        "aud": ISSUER,
        "sub": "c",
        "client_id": "c",
        "tenant": "t",
        "scope": "publish:>",
        "jti": secrets.token_hex(8),
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    headers = {"kid": kid, "typ": "at+jwt"}
    return jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers=headers)


async def test_a_key_rotated_in_elsewhere_verifies_after_one_reload(
    nodes: tuple[Runtime, Runtime, Clock],
) -> None:
    node_a, node_b, _ = nodes
    kid = await rotate_in(node_a)
    token = issue(node_a)
    assert jwt.get_unverified_header(token)["kid"] == kid
    assert kid not in node_b.token_service().kids
    with pytest.raises(InvalidToken):  # the plain verifier does not know the key yet
        node_b.token_service().verify_access(token)

    claims = await node_b.verify_access(token)
    assert (claims.tenant_id, claims.client_id) == ("t", "c")
    assert node_b.unknown_kid_reloads == 1
    assert kid in node_b.token_service().kids
    await node_b.verify_access(token)  # known now: no further reload
    assert node_b.unknown_kid_reloads == 1


async def test_a_known_kid_with_a_bad_signature_causes_no_reload(
    nodes: tuple[Runtime, Runtime, Clock],
) -> None:
    _, node_b, _ = nodes
    (known,) = node_b.token_service().kids
    for token in (stranger(known), "not-a-token", issue(node_b) + "x"):
        with pytest.raises(InvalidToken):
            await node_b.verify_access(token)
    assert node_b.unknown_kid_reloads == 0


async def test_a_flood_of_unknown_kids_reloads_at_most_once_per_interval(
    nodes: tuple[Runtime, Runtime, Clock],
) -> None:
    _, node_b, clock = nodes
    for _ in range(50):
        with pytest.raises(InvalidToken):
            await node_b.verify_access(stranger("k-" + secrets.token_hex(8)))
    assert node_b.unknown_kid_reloads == 1

    clock.now += limits.UNKNOWN_KID_RELOAD_INTERVAL - 0.001  # still within the interval
    with pytest.raises(InvalidToken):
        await node_b.verify_subscriber(stranger("k-late"))
    assert node_b.unknown_kid_reloads == 1

    clock.now += 0.001  # the interval has passed: one more reload, then quiet again
    for _ in range(10):
        with pytest.raises(InvalidToken):
            await node_b.verify_access(stranger("k-" + secrets.token_hex(8)))
    assert node_b.unknown_kid_reloads == 2


async def test_concurrent_unknown_kids_share_one_reload(
    nodes: tuple[Runtime, Runtime, Clock],
) -> None:
    node_a, node_b, _ = nodes
    kid = await rotate_in(node_a)
    good = [issue(node_a) for _ in range(10)]
    bad = [stranger("k-" + secrets.token_hex(8)) for _ in range(10)]
    results = await asyncio.gather(
        *(node_b.verify_access(t) for pair in zip(good, bad, strict=True) for t in pair),
        return_exceptions=True,
    )
    assert node_b.unknown_kid_reloads == 1
    verified = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, InvalidToken)]
    assert len(verified) == len(good)
    assert len(refused) == len(bad)
    assert kid in node_b.token_service().kids


async def test_a_key_created_after_the_interval_started_waits_for_the_next_interval(
    nodes: tuple[Runtime, Runtime, Clock],
) -> None:
    node_a, node_b, clock = nodes
    with pytest.raises(InvalidToken):  # spends this interval's reload
        await node_b.verify_access(stranger("k-first"))
    await rotate_in(node_a)
    token = issue(node_a)
    with pytest.raises(InvalidToken):
        await node_b.verify_access(token)
    assert node_b.unknown_kid_reloads == 1
    clock.now += limits.UNKNOWN_KID_RELOAD_INTERVAL
    assert (await node_b.verify_access(token)).client_id == "c"
    assert node_b.unknown_kid_reloads == 2
