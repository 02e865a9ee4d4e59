"""Request signatures: app signing keys and the verification of signed requests.

DESIGN §4 steps 3–4: the RFC 9421 signature is checked with the app's key named by
``keyid`` (which must belong to the authenticated app), ``created`` must be inside the
replay window, ``Content-Digest`` must match the exact body received — and only after all
of that is the nonce claimed, so nobody can burn another app's nonces.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from herald.core.signatures import (
    ParsedSignature,
    check_content_digest,
    check_freshness,
    parse_signature,
    signature_base,
)
from herald.errors import (
    ApiError,
    BadRequest,
    KeyRevoked,
    KeyUnknown,
    NotFound,
    ReplayedRequest,
    SignatureInvalid,
)
from herald.service import audit
from herald.service.runtime import Runtime, utcnow
from herald.state.nonces import nonce_key
from herald.storage.base import AppKeyRecord

__all__ = [
    "ALG_ED25519",
    "ALG_HMAC",
    "NewKey",
    "SignedRequest",
    "add_ed25519_key",
    "add_hmac_key",
    "generate_ed25519_key",
    "key_view",
    "list_keys",
    "revoke_key",
    "verify_request",
]

ALG_ED25519 = "ed25519"
ALG_HMAC = "hmac-sha256"
_HMAC_FIELD = "hmac_secret"


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What the verifier needs of an HTTP request (transport-independent)."""

    method: str
    path: str  # raw path as received, percent-encoding preserved
    query: str  # raw query string without "?"
    headers: Mapping[str, str]  # lower-case names, repeated fields already combined
    body: bytes


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just added; ``secret`` (HMAC) or ``private_pem`` (generated Ed25519) shown once."""

    record: AppKeyRecord
    secret: str | None = None
    private_pem: bytes | None = None


def _new_keyid() -> str:
    return "hk_" + secrets.token_hex(8)


def _required(req: SignedRequest) -> set[str]:
    # RFC 9421 §7.2.x: cover what a proxy or attacker could change to alter the meaning.
    required = {"@method", "@target-uri", "content-digest"}
    if "content-type" in req.headers:
        required.add("content-type")
    if "authorization" in req.headers:
        required.add("authorization")
    return required


def _component_values(rt: Runtime, req: SignedRequest) -> dict[str, str]:
    base = rt.settings.base_url
    # @target-uri comes from the configured public URL, so the check holds behind a
    # TLS-terminating proxy that rewrites scheme and host (RFC 9421 §2.2.2).
    target = base + req.path + (f"?{req.query}" if req.query else "")
    return {
        "@method": req.method.upper(),
        "@target-uri": target,
        "@authority": urlsplit(base).netloc.lower(),
        "@scheme": urlsplit(base).scheme,
        "@path": req.path,
        "@query": "?" + req.query,
        "@request-target": req.path + (f"?{req.query}" if req.query else ""),
    }


#: Loaded Ed25519 public keys by their raw bytes (loading one costs ~10 µs a request).
_ed25519_key = functools.lru_cache(maxsize=1024)(Ed25519PublicKey.from_public_bytes)


async def _verify_crypto(rt: Runtime, key: AppKeyRecord, sig: ParsedSignature, base: bytes) -> None:
    if key.algorithm == ALG_ED25519:
        try:
            _ed25519_key(key.public_key).verify(sig.signature, base)
        except (InvalidSignature, ValueError):
            raise SignatureInvalid("the signature does not verify") from None
        return
    secret = await rt.keyring.open(key.tenant_id, key.keyid, _HMAC_FIELD, key.secret)
    expected = hmac.new(secret, base, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, sig.signature):
        raise SignatureInvalid("the signature does not verify")


async def verify_request(
    rt: Runtime, req: SignedRequest, *, tenant_id: str, app_id: str
) -> ParsedSignature:
    """Verify the request's signature for ``app_id`` and claim its nonce.

    Raises:
        ApiError: one of the typed signature refusals (also recorded in the audit log).
    """
    try:
        sig = parse_signature(req.headers.get("signature-input"), req.headers.get("signature"))
        missing = _required(req) - set(sig.components)
        if missing:
            raise SignatureInvalid(f"the signature must cover {', '.join(sorted(missing))}")
        check_freshness(
            sig,
            now=time.time(),
            window=rt.settings.replay_window,
            not_before=rt.nonce_not_before,
        )
        key = await rt.live.app_key(sig.keyid) if len(sig.keyid) <= 64 else None
        if key is None or key.app_id != app_id or key.tenant_id != tenant_id:
            raise KeyUnknown("the keyid names no signing key of this app")
        if key.revoked_at is not None:
            raise KeyRevoked("this signing key was revoked")
        if key.algorithm != sig.alg:
            # RFC 9421 §7.3.6: alg must match the key's algorithm; it never selects it.
            raise SignatureInvalid("alg does not match the key's algorithm")
        check_content_digest(req.headers.get("content-digest"), req.body)
        values = _component_values(rt, req)
        base = signature_base(
            sig.components, lambda name: values.get(name, req.headers.get(name)), sig.params
        )
        await _verify_crypto(rt, key, sig, base)
        window = rt.settings.replay_window
        key_name = nonce_key(tenant_id, sig.keyid, sig.nonce)
        if not await rt.nonces.claim(key_name, 2 * window, created=sig.created):
            raise ReplayedRequest("this request was already received (nonce reused)")
    except ApiError as exc:
        rt.metrics.record_auth_failure(exc.slug.replace("-", "_"))
        await _audit_refusal(rt, tenant_id, app_id, exc, req)
        raise
    return sig


async def _audit_refusal(
    rt: Runtime, tenant_id: str, app_id: str, exc: ApiError, req: SignedRequest
) -> None:
    await audit.record(
        rt,
        tenant=tenant_id,
        actor=f"app:{app_id}",
        action="request.refused",
        obj=f"route:{req.method.upper()} {req.path[:128]}",
        reason=exc.slug,
    )


# -- key management -----------------------------------------------------------------------
def generate_ed25519_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair: ``(private_pem_pkcs8, raw_public_key)``."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return pem, raw


def parse_ed25519_public_key(pem: bytes) -> bytes:
    """The raw 32 bytes of a PEM ``PUBLIC KEY`` that must be Ed25519."""
    try:
        key = serialization.load_pem_public_key(pem)
    except UnsupportedAlgorithm:
        # A well-formed key of a type cryptography does not know (an unknown algorithm OID).
        raise BadRequest("the public key must be Ed25519") from None
    except (ValueError, TypeError):
        raise BadRequest("not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadRequest("the public key must be Ed25519")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_view(record: AppKeyRecord) -> dict[str, Any]:
    """What the admin API and the CLI show of an app's signing key (never its secret)."""
    return {
        "keyid": record.keyid,
        "client_id": record.app_id,
        "algorithm": record.algorithm,
        "created_at": record.created_at.isoformat(),
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
    }


async def _audit_key(rt: Runtime, record: AppKeyRecord, action: str, actor: str) -> None:
    await audit.record(
        rt,
        tenant=record.tenant_id,
        actor=actor,
        action=action,
        obj=f"app-key:{record.keyid}",
        app=record.app_id,
        algorithm=record.algorithm,
    )


async def _app(rt: Runtime, app_id: str) -> tuple[str, str]:
    app = await rt.store.get_app(app_id)
    if app is None:
        raise NotFound(f"no app {app_id!r}")
    return app.id, app.tenant_id


async def add_ed25519_key(
    rt: Runtime, app_id: str, public_raw: bytes, *, actor: str = "operator"
) -> NewKey:
    """Register an Ed25519 public key for an app."""
    app, tenant = await _app(rt, app_id)
    record = AppKeyRecord(
        keyid=_new_keyid(),
        app_id=app,
        tenant_id=tenant,
        algorithm=ALG_ED25519,
        public_key=public_raw,
        secret=b"",
        created_at=utcnow(),
        revoked_at=None,
    )
    await rt.store.add_app_key(record)
    await _audit_key(rt, record, "app-key.created", actor)
    return NewKey(record)


async def add_hmac_key(rt: Runtime, app_id: str, *, actor: str = "operator") -> NewKey:
    """Create an HMAC-SHA256 key; its base64 secret is returned once, stored sealed."""
    app, tenant = await _app(rt, app_id)
    keyid = _new_keyid()
    secret = secrets.token_bytes(32)
    sealed = await rt.keyring.seal(tenant, keyid, _HMAC_FIELD, secret)
    record = AppKeyRecord(
        keyid=keyid,
        app_id=app,
        tenant_id=tenant,
        algorithm=ALG_HMAC,
        public_key=b"",
        secret=sealed,
        created_at=utcnow(),
        revoked_at=None,
    )
    await rt.store.add_app_key(record)
    await _audit_key(rt, record, "app-key.created", actor)
    return NewKey(record, secret=base64.b64encode(secret).decode("ascii"))


async def list_keys(rt: Runtime, app_id: str) -> list[AppKeyRecord]:
    """Every key of an app, revoked ones included."""
    await _app(rt, app_id)
    return await rt.store.list_app_keys(app_id)


async def revoke_key(
    rt: Runtime, app_id: str, keyid: str, *, actor: str = "operator"
) -> AppKeyRecord:
    """Revoke one key of an app (requests signed with it are refused from now on).

    Nodes cache keys for :data:`herald.state.live.CACHE_TTL` (1 s): other nodes refuse
    the key within that second, this one at once.
    """
    await _app(rt, app_id)
    record = await rt.store.revoke_app_key(app_id, keyid, utcnow())
    if record is None:
        raise NotFound(f"no key {keyid!r} of app {app_id!r}")
    rt.live.forget(keyid=keyid)  # other nodes stop within the cache's second
    await _audit_key(rt, record, "app-key.revoked", actor)
    return record
