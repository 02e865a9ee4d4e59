"""Server signing keys (access tokens, audit checkpoints): Ed25519, versioned by ``kid``.

Private halves are stored only wrapped by the key provider's KEK (AAD binds ``kid`` and
purpose, so a wrapped key cannot be moved to another purpose). The ``kid`` is the RFC 7638
JWK thumbprint of the public key, so it is derived, never chosen, and collision-free.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from herald.crypto.aead import aad_for
from herald.crypto.keyring import KeyProvider
from herald.storage.base import SigningKeyRecord

__all__ = [
    "PURPOSE_AUDIT",
    "PURPOSE_TOKEN",
    "PURPOSE_VAPID",
    "LoadedSigningKey",
    "b64url",
    "jwk_thumbprint",
    "new_signing_key",
    "new_vapid_key",
    "signing_context",
    "unwrap_signing_key",
    "unwrap_vapid_key",
]

PURPOSE_VAPID = "vapid"
PURPOSE_TOKEN = "token"  # noqa: S105 - a key purpose, not a secret
PURPOSE_AUDIT = "audit"


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(public_raw: bytes) -> str:
    """RFC 7638 thumbprint of an Ed25519 OKP JWK (RFC 8037 §2): required members, sorted."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": b64url(public_raw)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


def signing_context(kid: str, purpose: str) -> bytes:
    """The AAD binding a wrapped signing key to its kid and purpose."""
    # The same unambiguous, length-prefixed AAD encoding as every other sealed field.
    return aad_for(
        tenant_id="", record_id=kid, field="private_key", purpose=f"signing-key/{purpose}"
    )


@dataclass(frozen=True, slots=True)
class LoadedSigningKey:
    """An unwrapped signing key, held only in memory."""

    kid: str
    purpose: str
    private_key: Ed25519PrivateKey
    public_raw: bytes
    created_at: datetime
    activates_at: datetime | None = None  # signs from then (None: from created_at)
    retired_at: datetime | None = None  # verifies and is published until then

    def active(self, now: datetime) -> bool:
        """Whether the key may sign at ``now`` (a pre-published key not yet)."""
        return self.activates_at is None or self.activates_at <= now

    def retired(self, now: datetime) -> bool:
        """Whether the key no longer verifies (nor is published) at ``now``."""
        return self.retired_at is not None and self.retired_at <= now

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half."""
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        """The public JWK (RFC 8037) with ``kid``, ``use`` and ``alg``."""
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url(self.public_raw),
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        }


async def new_signing_key(
    provider: KeyProvider, purpose: str, now: datetime
) -> tuple[SigningKeyRecord, LoadedSigningKey]:
    """Generate an Ed25519 key, returning the record to store and the loaded key."""
    private = Ed25519PrivateKey.generate()
    public_raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    private_raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    kid = jwk_thumbprint(public_raw)
    wrapped = await provider.wrap(private_raw, signing_context(kid, purpose))
    record = SigningKeyRecord(
        kid=kid,
        purpose=purpose,
        algorithm="Ed25519",
        public_key=public_raw,
        wrapped_private_key=wrapped,
        created_at=now,
    )
    return record, LoadedSigningKey(kid, purpose, private, public_raw, now)


async def unwrap_signing_key(provider: KeyProvider, record: SigningKeyRecord) -> LoadedSigningKey:
    """Unwrap a stored key; raises DecryptionFailed when the KEK or record is wrong."""
    private_raw = await provider.unwrap(
        record.wrapped_private_key, signing_context(record.kid, record.purpose)
    )
    private = Ed25519PrivateKey.from_private_bytes(private_raw)
    return LoadedSigningKey(
        record.kid,
        record.purpose,
        private,
        record.public_key,
        record.created_at,
        record.activates_at,
        record.retired_at,
    )


async def new_vapid_key(
    provider: KeyProvider, now: datetime
) -> tuple[SigningKeyRecord, ec.EllipticCurvePrivateKey]:
    """A Web Push VAPID key (RFC 8292: ECDSA P-256), wrapped like every signing key."""
    private = ec.generate_private_key(ec.SECP256R1())
    point = private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    kid = b64url(hashlib.sha256(point).digest()[:16])
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    wrapped = await provider.wrap(der, signing_context(kid, PURPOSE_VAPID))
    record = SigningKeyRecord(
        kid=kid,
        purpose=PURPOSE_VAPID,
        algorithm="ES256",
        public_key=point,
        wrapped_private_key=wrapped,
        created_at=now,
    )
    return record, private


async def unwrap_vapid_key(
    provider: KeyProvider, record: SigningKeyRecord
) -> ec.EllipticCurvePrivateKey:
    """Unwrap a stored VAPID key."""
    der = await provider.unwrap(
        record.wrapped_private_key, signing_context(record.kid, record.purpose)
    )
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("the stored VAPID key is not an EC key")
    return key
