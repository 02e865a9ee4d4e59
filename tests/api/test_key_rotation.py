"""Token-signing key rotation with pre-publication (``herald keys rotate-signing``) against a
real ``herald serve`` on loopback TLS, checked with two independent JOSE libraries.

One node with ``HERALD_KEY_RELOAD_INTERVAL=0.5`` and ``HERALD_JWKS_MAX_AGE=0``, so the
shortest allowed pre-publication is 1 s; the rotation pre-publishes for 3 s:

1. before rotation an access token (kid A) verifies with PyJWT's ``PyJWKClient`` on the live
   ``/.well-known/jwks.json`` and with joserfc on the same JWKS;
2. right after rotation the JWKS lists A and the new key B while new tokens are still signed
   with A; a rotation with a pre-publication below the minimum fails in one line and changes
   nothing;
3. once B is active new tokens carry kid B and verify independently (a verifier that cached
   the JWKS during pre-publication knows B without refetching; one that cached it before
   rotation refetches on the unknown kid), while the old token A still works on the API and
   still verifies, A stays in the JWKS, and the rotation is audited;
4. a token naming an unknown kid, a known kid with a foreign key, or ``alg: none`` is still
   refused.

Waits are bounded polls; nothing asserts on timing.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jwt as jrfc_jwt
from joserfc.errors import InvalidKeyIdError, SecurityWarning
from joserfc.jwk import KeySet

from herald import limits
from herald.crypto.signing import PURPOSE_TOKEN

if TYPE_CHECKING:  # the conftest's types, for readers and type checkers only
    from tests.api.conftest import Node, NodeFactory

RELOAD_INTERVAL = 0.5  # HERALD_KEY_RELOAD_INTERVAL of the node: minimum pre-publication 1 s
PREPUBLISH = 3.0  # seconds the new key is published before it signs
WAIT = 10.0  # seconds: the bound of every poll in this module
PROBLEM = "urn:herald:problem:"


# -- JOSE helpers -------------------------------------------------------------------------------
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def header_of(token: str) -> dict[str, Any]:
    return dict(jwt.get_unverified_header(token))


def kid_of(token: str) -> str:
    return str(header_of(token)["kid"])


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def forged(header: dict[str, Any], claims: dict[str, Any], private: Ed25519PrivateKey) -> str:
    signing_input = b64url_json(header) + "." + b64url_json(claims)
    return signing_input + "." + b64url(private.sign(signing_input.encode("ascii")))


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return b64url_json(header) + "." + b64url_json(claims) + "."


# -- independent verifiers ----------------------------------------------------------------------
def jwks_client(node: Node, cooldown: float = 30) -> jwt.PyJWKClient:
    """PyJWT's JWKS client on the node's live JWKS, trusting the node's CA; it caches the
    JWKS for 300 s and refetches on an unknown kid at most once per ``cooldown`` seconds."""
    return jwt.PyJWKClient(
        node.url + "/.well-known/jwks.json",
        ssl_context=node.ssl_context(),
        cooldown_duration=cooldown,
    )


def verify_pyjwt(node: Node, client: jwt.PyJWKClient, token: str) -> dict[str, Any]:
    """Verify ``token`` with PyJWT and the key ``client`` finds for its kid."""
    key = client.get_signing_key_from_jwt(token)
    return dict(
        jwt.decode(
            token,
            key.key,
            algorithms=["EdDSA"],
            audience=node.url,
            issuer=node.url,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
        )
    )


def verify_joserfc(node: Node, jwks: dict[str, Any], token: str) -> dict[str, Any]:
    """Verify ``token`` with joserfc against ``jwks`` (a JWK Set as served)."""
    key_set = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    with warnings.catch_warnings():
        # joserfc flags the "EdDSA" name as deprecated by RFC 9864 (in favour of "Ed25519");
        # RFC 9068 and Herald's JWKS use "EdDSA", which is what is tested here.
        warnings.simplefilter("ignore", SecurityWarning)
        decoded = jrfc_jwt.decode(token, key_set, algorithms=["EdDSA"])
    assert decoded.header["kid"] == kid_of(token)
    registry = jrfc_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": node.url},
        aud={"essential": True, "value": node.url},
        exp={"essential": True},
        sub={"essential": True},
    )
    registry.validate(decoded.claims)
    return dict(decoded.claims)


# -- node helpers -------------------------------------------------------------------------------
def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_uuid7() -> str:
    """A well-formed UUIDv7 (RFC 9562 §5.7) that names no stored message."""
    value = (
        (int(time.time() * 1000) << 80)
        | (0x7 << 76)
        | (secrets.randbits(12) << 64)
        | (0b10 << 62)
        | secrets.randbits(62)
    )
    return str(uuid.UUID(int=value))


def probe(node: Node, token: str) -> httpx.Response:
    """A read of a message that does not exist: 404 for a live token, 401 for a refused one."""
    with node.client() as client:
        return client.get(f"/v1/messages/{new_uuid7()}", headers=bearer(token))


def assert_live(node: Node, token: str) -> None:
    response = probe(node, token)
    assert response.status_code == 404, response.text


def assert_refused(node: Node, token: str) -> None:
    response = probe(node, token)
    assert response.status_code == 401, response.text
    assert response.json()["type"] == PROBLEM + "invalid-token"


def fetch_jwks(node: Node) -> dict[str, Any]:
    with node.client() as client:
        response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "max-age=0"  # HERALD_JWKS_MAX_AGE
    jwks: dict[str, Any] = response.json()
    return jwks


def kids(jwks: dict[str, Any]) -> set[str]:
    return {str(key["kid"]) for key in jwks["keys"]}


def poll(what: str, check: Callable[[], Any]) -> Any:
    """``check()`` until it returns something truthy (bounded by ``WAIT``); that value."""
    deadline = time.monotonic() + WAIT
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT:g} s: {what}")
        time.sleep(0.1)


def token_keys(node: Node) -> list[tuple[str, str | None, str | None]]:
    """``(kid, activates_at, retired_at)`` of every stored token-signing key."""
    with node.db() as conn:
        rows = conn.execute(
            "SELECT kid, activates_at, retired_at FROM signing_keys WHERE purpose = ? ORDER BY kid",
            (PURPOSE_TOKEN,),
        ).fetchall()
    return [(str(kid), activates, retired) for kid, activates, retired in rows]


# -- the test -----------------------------------------------------------------------------------
@pytest.fixture
def node(node_factory: NodeFactory) -> Node:
    """A started node that re-reads its keys every 0.5 s and lets the JWKS be cached 0 s."""
    return node_factory(
        name="keyrot",
        HERALD_KEY_RELOAD_INTERVAL=str(RELOAD_INTERVAL),
        HERALD_JWKS_MAX_AGE="0",
    )


def test_signing_key_rotation_with_prepublication(node: Node) -> None:
    # -- 1. before rotation: kid A, verified independently ----------------------------------
    old_token = node.token()
    kid_a = kid_of(old_token)
    jwks_before = fetch_jwks(node)
    assert kids(jwks_before) == {kid_a}
    for key in jwks_before["keys"]:
        published = {name: key[name] for name in ("kty", "crv", "use", "alg")}
        assert published == {"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA"}
        assert "d" not in key  # never the private half
    # Cached before rotation; refetches on an unknown kid (no cooldown: the JWKS max-age is 0).
    early_client = jwks_client(node, cooldown=0)
    claims_a = verify_pyjwt(node, early_client, old_token)
    assert claims_a["client_id"] == node.demo.client_id
    assert verify_joserfc(node, jwks_before, old_token) == claims_a
    audit_start = node.audit_actions()[-1][0] + 1  # the index of the next audit entry

    # -- 2. rotate with a 3 s pre-publication -----------------------------------------------
    started = datetime.now().astimezone()
    rotated = node.cli("keys", "rotate-signing", "--prepublish", f"{PREPUBLISH:g}")
    finished = datetime.now().astimezone()
    kid_b = str(rotated["kid"])
    assert kid_b != kid_a
    activates = datetime.fromisoformat(rotated["activates_at"])
    slack = timedelta(seconds=0.01)
    assert started + timedelta(seconds=PREPUBLISH) - slack <= activates
    assert activates <= finished + timedelta(seconds=PREPUBLISH) + slack
    assert [r["kid"] for r in rotated["retiring"]] == [kid_a]
    # A verifies (and is published) until the last token it can sign has expired.
    longest = max(limits.ACCESS_TOKEN_TTL_MAX, limits.SUBSCRIBER_TOKEN_TTL_MAX)
    retires = datetime.fromisoformat(rotated["retiring"][0]["retires_at"])
    assert retires == activates + timedelta(seconds=longest + limits.JWT_LEEWAY)

    # The node publishes B at its next key reload, before B signs anything.
    def jwks_with_b() -> dict[str, Any] | None:
        jwks = fetch_jwks(node)
        return jwks if kid_b in kids(jwks) else None

    jwks_prepub = poll("B in the JWKS", jwks_with_b)
    assert kids(jwks_prepub) == {kid_a, kid_b}
    pre_token = node.token()
    assert kid_of(pre_token) == kid_a, (
        "signed with the pre-published key before its activation",
        claims_of(pre_token)["iat"],
        rotated["activates_at"],
    )
    verify_pyjwt(node, early_client, pre_token)
    # A verifier that caches the JWKS now (refreshes only after 300 s, forced refetches only
    # after a 30 s cooldown) will know B before it sees a token signed with it.
    prepub_client = jwks_client(node)
    assert {k.key_id for k in prepub_client.get_signing_keys()} == {kid_a, kid_b}

    # Below the minimum (2 × 0.5 s reload interval, max-age 0): one line, non-zero, no change.
    stored = token_keys(node)
    audit_count = len(node.audit_actions())
    refused = node.run("keys", "rotate-signing", "--prepublish", "0.1", "--json", check=False)
    assert refused.returncode != 0
    assert refused.stdout == ""
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "pre-publication" in lines[0], lines[0]
    assert "at least 1 s" in lines[0], lines[0]
    assert token_keys(node) == stored
    assert len(node.audit_actions()) == audit_count
    time.sleep(2 * RELOAD_INTERVAL)  # a key reload later the JWKS is still A and B
    assert kids(fetch_jwks(node)) == {kid_a, kid_b}

    # -- 3. after activation: B signs, A still verifies -------------------------------------
    def token_of_b() -> str | None:
        token = node.token()
        return token if kid_of(token) == kid_b else None

    new_token = poll("a token signed with B", token_of_b)
    assert claims_of(new_token)["iat"] >= int(activates.timestamp())
    assert_live(node, new_token)
    claims_b = verify_pyjwt(node, early_client, new_token)  # refetched on the unknown kid B
    assert verify_pyjwt(node, prepub_client, new_token) == claims_b  # known from pre-publication
    jwks_after = fetch_jwks(node)
    assert kids(jwks_after) == {kid_a, kid_b}
    assert verify_joserfc(node, jwks_after, new_token) == claims_b
    with pytest.raises(InvalidKeyIdError):  # the pre-rotation JWKS does not know B
        verify_joserfc(node, jwks_before, new_token)

    assert_live(node, old_token)  # the old token still works on the API
    assert verify_pyjwt(node, early_client, old_token) == claims_a
    assert verify_pyjwt(node, prepub_client, old_token) == claims_a
    assert verify_joserfc(node, jwks_after, old_token) == claims_a

    rotations = [d for _, a, d in node.audit_actions(audit_start) if a == "key.rotated"]
    assert len(rotations) == 1, rotations
    assert rotations[0]["purpose"] == PURPOSE_TOKEN
    assert rotations[0]["retires"] == [kid_a]
    assert datetime.fromisoformat(str(rotations[0]["activates_at"])) == activates

    # -- 4. still refused after rotation ----------------------------------------------------
    now = int(time.time())
    claims = {**claims_b, "iat": now, "nbf": now, "exp": now + 300, "jti": new_uuid7()}
    stranger = Ed25519PrivateKey.generate()
    header = header_of(new_token)
    assert_refused(node, forged({**header, "kid": "k-" + secrets.token_hex(8)}, claims, stranger))
    assert_refused(node, forged({**header, "kid": kid_a}, claims, stranger))
    assert_refused(node, forged(header, claims, stranger))
    assert_refused(node, unsigned({**header, "alg": "none"}, claims))
    assert_refused(node, unsigned({"alg": "none", "typ": header["typ"]}, claims))
    assert_live(node, new_token)  # the control


def test_a_node_that_has_not_reloaded_yet_refetches_on_the_unknown_kid(
    node: Node, node_factory: NodeFactory
) -> None:
    # Node B shares node A's data dir (SQLite) but would re-read the keys only hourly: a
    # token signed with a key rotated in since then names a kid B does not know, so B
    # reloads the keys once (limits.UNKNOWN_KID_RELOAD_INTERVAL) and then verifies it.
    # One cluster: one public URL (the issuer), whichever node answers.
    lagging = node_factory.peer(node, HERALD_KEY_RELOAD_INTERVAL="3600", HERALD_PUBLIC_URL=node.url)
    old_token = node.token()
    assert_live(lagging, old_token)
    rotated = node.cli("keys", "rotate-signing", "--prepublish", "1")
    kid_b = str(rotated["kid"])

    def token_of_b() -> str | None:
        token = node.token()
        return token if kid_of(token) == kid_b else None

    new_token = poll("a token signed with the new key", token_of_b)
    assert kid_b not in kids(fetch_jwks(lagging))  # B has not reloaded on its own
    assert_live(lagging, new_token)
    assert kid_b in kids(fetch_jwks(lagging))
    assert_live(lagging, old_token)
    # An unknown kid is still refused after the reload, with the same opaque problem.
    now = int(time.time())
    claims = {**claims_of(new_token), "iat": now, "nbf": now, "exp": now + 300}
    header = {**header_of(new_token), "kid": "k-" + secrets.token_hex(8)}
    assert_refused(lagging, forged(header, claims, Ed25519PrivateKey.generate()))
