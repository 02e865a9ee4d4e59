"""RFC 9421 request signing for clients (the SDK signs every state-changing request).

Usable on its own with any HTTP client that builds ``httpx.Request`` objects::

    from herald.client import RequestSigner

    signer = RequestSigner.from_key_file("hk_0123…", ".herald/keys/hk_0123….pem")
    request = client.build_request("POST", url, content=body, headers=headers)
    response = await client.send(signer.sign(request))

Each call of :meth:`RequestSigner.sign` adds ``Content-Digest`` (RFC 9530, sha-256 of the
exact body bytes), ``Signature-Input`` and ``Signature`` with a fresh ``created`` and a
192-bit random ``nonce`` — so a retry is a new signature, never a replay.

The same Ed25519 key can stand in for the client secret: :meth:`RequestSigner.client_assertion`
makes an RFC 7523 ``private_key_jwt`` client assertion (a 60 s EdDSA JWT with a fresh
192-bit ``jti``) for the token and revocation endpoints.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from herald.client._errors import HeraldClientError
from herald.core.signatures import content_digest, signature_base, signature_params

__all__ = ["CLIENT_ASSERTION_LIFETIME", "RequestSigner", "sign_request"]

#: The label of Herald's signatures in ``Signature-Input``/``Signature``.
LABEL = "herald"
#: Seconds a client assertion is valid (its ``exp`` after ``iat``): it is used at once.
CLIENT_ASSERTION_LIFETIME = 60


class RequestSigner:
    """Signs requests with one app key: Ed25519 (preferred) or an HMAC-SHA256 secret."""

    def __init__(
        self,
        keyid: str,
        key: Ed25519PrivateKey | bytes,
        *,
        clock: Callable[[], float] = time.time,
        new_nonce: Callable[[], str] = lambda: secrets.token_urlsafe(24),
    ) -> None:
        if isinstance(key, bytes) and len(key) < 16:
            raise HeraldClientError("an HMAC signing secret must be at least 16 bytes")
        self.keyid = keyid
        self._key = key
        self._clock = clock
        self._new_nonce = new_nonce

    @property
    def alg(self) -> str:
        """The RFC 9421 algorithm name of the key."""
        return "hmac-sha256" if isinstance(self._key, bytes) else "ed25519"

    @classmethod
    def from_key_file(cls, keyid: str, path: str | Path) -> RequestSigner:
        """Load an Ed25519 private key (PKCS#8 PEM, as ``herald init`` writes it)."""
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise HeraldClientError(
                f"cannot load the signing key {path}: {type(exc).__name__}"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise HeraldClientError(f"{path} is not an Ed25519 private key")
        return cls(keyid, key)

    @classmethod
    def from_hmac_secret(cls, keyid: str, secret_b64: str) -> RequestSigner:
        """An HMAC key from the base64 secret ``herald app key add --hmac`` printed."""
        try:
            secret = base64.b64decode(secret_b64, validate=True)
        except (binascii.Error, ValueError):
            raise HeraldClientError("the HMAC secret is not valid base64") from None
        return cls(keyid, secret)

    @property
    def can_assert(self) -> bool:
        """Whether the key can sign client assertions (Ed25519 keys only, never HMAC)."""
        return isinstance(self._key, Ed25519PrivateKey)

    def client_assertion(self, client_id: str, audience: str) -> str:
        """An RFC 7523 client assertion (``private_key_jwt``) for ``client_id``.

        Args:
            client_id: The app's client id (``iss`` and ``sub``).
            audience: The server's issuer identifier (its base URL), as ``aud``.

        Returns:
            A compact JWS signed EdDSA with ``kid`` = this key's id, valid for
            :data:`CLIENT_ASSERTION_LIFETIME` seconds, with a fresh 192-bit ``jti``.

        Raises:
            HeraldClientError: the key is an HMAC secret (Herald offers no client_secret_jwt).
        """
        if not isinstance(self._key, Ed25519PrivateKey):
            raise HeraldClientError("client assertions need an Ed25519 signing key, not HMAC")
        now = int(self._clock())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "iat": now,
            "exp": now + CLIENT_ASSERTION_LIFETIME,
            "jti": secrets.token_urlsafe(24),
        }
        # PyJWT names Ed25519 "EdDSA" (RFC 8037); Herald accepts that and RFC 9864's name.
        return jwt.encode(claims, self._key, algorithm="EdDSA", headers={"kid": self.keyid})

    def sign(self, request: httpx.Request) -> httpx.Request:
        """Add ``Content-Digest``, ``Signature-Input`` and ``Signature`` to ``request``."""
        body = request.read()
        request.headers["Content-Digest"] = content_digest(body)
        components = ["@method", "@target-uri", "content-digest"]
        for name in ("content-type", "authorization"):
            if name in request.headers:
                components.append(name)
        params = signature_params(
            components,
            created=int(self._clock()),
            nonce=self._new_nonce(),
            keyid=self.keyid,
            alg=self.alg,
        )
        values = {"@method": request.method.upper(), "@target-uri": str(request.url)}
        base = signature_base(
            components, lambda name: values.get(name, request.headers.get(name)), params
        )
        if isinstance(self._key, bytes):
            signature = hmac.new(self._key, base, hashlib.sha256).digest()
        else:
            signature = self._key.sign(base)
        request.headers["Signature-Input"] = f"{LABEL}={params}"
        request.headers["Signature"] = f"{LABEL}=:{base64.b64encode(signature).decode('ascii')}:"
        return request


def sign_request(request: httpx.Request, signer: RequestSigner) -> httpx.Request:
    """Sign ``request`` in place with ``signer`` and return it (for your own HTTP client)."""
    return signer.sign(request)
