"""Signed webhooks out: Standard Webhooks 1.0 over the SSRF-guarded egress client.

An endpoint is ``{"url": "https://…", "secret": "whsec_…", "secrets": ["whsec_…"],
"ed25519_private_key": "<base64 32-byte seed>"}`` with at least one signing key. Every
attempt POSTs the delivery's JSON event with the three Standard Webhooks headers:

- ``webhook-id``: the delivery id, stable across retries, so receivers can de-duplicate;
- ``webhook-timestamp``: integer Unix seconds of *this* attempt, so receivers can refuse
  replays outside their tolerance (300 s is the common choice);
- ``webhook-signature``: space-separated ``v1,<base64 HMAC-SHA256>`` — one per HMAC secret,
  the current ``secret`` first, then each previous one in ``secrets`` (rotation overlap) — and
  ``v1a,<base64 Ed25519>``, all over the bytes ``f"{id}.{timestamp}.{body}"``.

Outcomes (Standard Webhooks "retry schedule" advice): 2xx delivered; 410 failed and the
endpoint disabled; 3xx failed (redirects are never followed); 408, 429 and 5xx retried,
honouring ``Retry-After`` up to a day; other 4xx failed; an unreachable or slow receiver is
retried; a destination the SSRF guard refuses is failed. Reasons never carry the body, a
secret or the URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets as _secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from herald.channels import _http, egress
from herald.channels._http import RETRY_AFTER_MAX
from herald.channels.base import DeliveryJob, Failed, Outcome
from herald.errors import BadRequest

__all__ = [
    "ED25519_SEED_BYTES",
    "PREVIOUS_SECRETS_MAX",
    "RETRY_AFTER_MAX",
    "SECRET_MAX_BYTES",
    "SECRET_MIN_BYTES",
    "SECRET_PREFIX",
    "URL_MAX",
    "USER_AGENT",
    "WebhookChannel",
    "ed25519_public_key",
    "new_ed25519_key",
    "new_secret",
    "sign",
    "sign_v1",
    "sign_v1a",
    "signed_content",
]

#: Prefix of Standard Webhooks HMAC secrets; the rest is standard base64.
SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - a format prefix, not a secret
#: Standard Webhooks: secrets are 24 to 64 random bytes (192 to 512 bits).
SECRET_MIN_BYTES: Final = 24
SECRET_MAX_BYTES: Final = 64
#: Bytes :func:`new_secret` draws from the CSPRNG.
NEW_SECRET_BYTES: Final = 32
#: Previous secrets kept for a rotation overlap; each adds a signature to every request.
PREVIOUS_SECRETS_MAX: Final = 4
#: An Ed25519 private key is its 32-byte seed (RFC 8032 §5.1.5).
ED25519_SEED_BYTES: Final = 32
#: Longest webhook URL accepted (the de-facto limit of browsers and proxies).
URL_MAX: Final = 2048
USER_AGENT: Final = "Herald-Webhooks/1"

_FIELDS: Final = frozenset({"url", "secret", "secrets", "ed25519_private_key"})
_ENCODER = msgspec.json.Encoder()


# -- signing (Standard Webhooks 1.0 "Signature scheme") -------------------------------------


def signed_content(msg_id: str, timestamp: int, body: bytes | str) -> bytes:
    """The bytes every signature covers: ``f"{msg_id}.{timestamp}.{body}"``."""
    raw = body.encode() if isinstance(body, str) else body
    return f"{msg_id}.{int(timestamp)}.".encode() + raw


def sign_v1(secret: str | bytes, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """One ``v1,<base64 HMAC-SHA256>`` signature; ``secret`` is ``whsec_…`` or raw bytes."""
    key = secret if isinstance(secret, bytes) else _decode_secret(secret)
    mac = hmac.new(key, signed_content(msg_id, timestamp, body), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def sign_v1a(private_key: Ed25519PrivateKey, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """One ``v1a,<base64 Ed25519 signature>`` signature."""
    signature = private_key.sign(signed_content(msg_id, timestamp, body))
    return "v1a," + base64.b64encode(signature).decode("ascii")


def sign(
    secret_or_key: str | bytes | Ed25519PrivateKey,
    msg_id: str,
    timestamp: int,
    body: bytes | str,
) -> str:
    """Sign with an HMAC secret (``whsec_…`` or raw bytes: ``v1``) or an Ed25519 key (``v1a``).

    Raises:
        ValueError: ``secret_or_key`` is a string that is not a valid ``whsec_`` secret.
    """
    if isinstance(secret_or_key, Ed25519PrivateKey):
        return sign_v1a(secret_or_key, msg_id, timestamp, body)
    return sign_v1(secret_or_key, msg_id, timestamp, body)


def new_secret() -> str:
    """A fresh ``whsec_`` secret of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(NEW_SECRET_BYTES)).decode()


def new_ed25519_key() -> str:
    """A fresh Ed25519 private key, as the base64 seed ``ed25519_private_key`` expects."""
    return base64.b64encode(_secrets.token_bytes(ED25519_SEED_BYTES)).decode()


def ed25519_public_key(private_key: str) -> str:
    """The base64 raw public key receivers verify ``v1a`` signatures with.

    Raises:
        ValueError: ``private_key`` is not the base64 of a 32-byte seed.
    """
    seed = _b64decode(private_key)
    if seed is None or len(seed) != ED25519_SEED_BYTES:
        raise ValueError("not a base64 Ed25519 seed of 32 bytes")
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    return base64.b64encode(public).decode()


def _b64decode(text: str) -> bytes | None:
    """Strict standard base64, padding optional; None when malformed (no detail: no oracle)."""
    if not text.isascii():
        return None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _decode_secret(secret: str) -> bytes:
    raw = (
        _b64decode(secret.removeprefix(SECRET_PREFIX)) if secret.startswith(SECRET_PREFIX) else None
    )
    if raw is None or not SECRET_MIN_BYTES <= len(raw) <= SECRET_MAX_BYTES:
        raise ValueError(
            f"not a {SECRET_PREFIX} secret of {SECRET_MIN_BYTES}-{SECRET_MAX_BYTES} bytes"
        )
    return raw


# -- endpoint validation --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Keys:
    hmac: tuple[bytes, ...]
    ed25519: Ed25519PrivateKey | None


def _check_secret(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"webhook {field} must be a string")
    try:
        return _decode_secret(value)
    except ValueError:
        raise BadRequest(
            f"webhook {field} must be '{SECRET_PREFIX}' followed by the base64 of "
            f"{SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} random bytes"
        ) from None


def _parse_keys(endpoint: Mapping[str, Any]) -> tuple[dict[str, Any], _Keys]:
    normal: dict[str, Any] = {}
    macs: list[bytes] = []
    if endpoint.get("secret") is not None:
        macs.append(_check_secret(endpoint["secret"], "secret"))
        normal["secret"] = SECRET_PREFIX + base64.b64encode(macs[0]).decode()
    previous = endpoint.get("secrets")
    if previous is not None:
        if not isinstance(previous, list | tuple):
            raise BadRequest("webhook secrets must be a list of previous secrets")
        if len(previous) > PREVIOUS_SECRETS_MAX:
            raise BadRequest(f"webhook secrets holds at most {PREVIOUS_SECRETS_MAX} secrets")
        kept: list[str] = []
        for item in previous:
            raw = _check_secret(item, "secrets entry")
            if raw not in macs:  # a duplicate adds nothing but header bytes
                macs.append(raw)
                kept.append(SECRET_PREFIX + base64.b64encode(raw).decode())
        if kept:
            normal["secrets"] = kept
    signer: Ed25519PrivateKey | None = None
    seed_text = endpoint.get("ed25519_private_key")
    if seed_text is not None:
        seed = _b64decode(seed_text) if isinstance(seed_text, str) else None
        if seed is None or len(seed) != ED25519_SEED_BYTES:
            raise BadRequest(
                "webhook ed25519_private_key must be the base64 of a 32-byte Ed25519 seed"
            )
        signer = Ed25519PrivateKey.from_private_bytes(seed)
        normal["ed25519_private_key"] = base64.b64encode(seed).decode()
    if not macs and signer is None:
        raise BadRequest(
            "a webhook endpoint needs a signing key: secret, secrets or ed25519_private_key"
        )
    return normal, _Keys(tuple(macs), signer)


def _check_url(value: Any, policy: egress.EgressPolicy) -> str:
    # Messages never echo the URL: its path or query may carry a token.
    if not isinstance(value, str) or not value:
        raise BadRequest("webhook url is required")
    if len(value) > URL_MAX:
        raise BadRequest(f"webhook url is longer than {URL_MAX} characters")
    if not value.isascii() or any(c.isspace() or not c.isprintable() for c in value):
        raise BadRequest("webhook url must be ASCII without spaces (punycode and %-encode)")
    # Scheme, credentials, port, host syntax, ambiguous and blocked IP literals: the egress
    # guard's own offline check, so that save time and send time agree.
    url = egress.validate_url(value, policy)
    parts = urlsplit(url)
    # DESIGN §7: HTTPS only, unless the destination is an allow-listed literal address. A
    # host *name* would need DNS to tell, and validation stays offline.
    if parts.scheme == "http" and not _allowed_literal(parts.hostname or "", policy):
        raise egress.EgressRefused("webhook url must use https")
    return url


def _allowed_literal(host: str, policy: egress.EgressPolicy) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return policy.allows(address)


# -- the channel ----------------------------------------------------------------------------


class WebhookChannel:
    """Standard Webhooks delivery through the SSRF-guarded :mod:`~herald.channels.egress`.

    Args:
        policy: The egress policy: allowed private networks, CA bundle, timeouts, caps.
        clock: Unix time source for ``webhook-timestamp`` (injectable for tests).
    """

    name: ClassVar[str] = "webhook"
    secret_fields: ClassVar[tuple[str, ...]] = ("secret", "secrets", "ed25519_private_key")
    concurrency: ClassVar[int] = 32

    new_secret = staticmethod(new_secret)

    def __init__(
        self, policy: egress.EgressPolicy, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._policy = policy
        self._clock = clock

    def validate(self, endpoint: Mapping[str, Any]) -> dict[str, Any]:
        """Check and normalise an endpoint (offline: DNS is checked at delivery).

        Raises:
            BadRequest: Unknown fields, a malformed or non-https URL, a malformed key, or
                no signing key at all. Messages never contain a secret or the URL.
        """
        if not isinstance(endpoint, Mapping):
            raise BadRequest("a webhook endpoint must be an object")
        unknown = sorted(str(key)[:64] for key in endpoint if key not in _FIELDS)
        if unknown:
            raise BadRequest(
                "unknown webhook endpoint fields: " + ", ".join(unknown[:5]),
                extra={"allowed": sorted(_FIELDS)},
            )
        url = _check_url(endpoint.get("url"), self._policy)
        keys, _ = _parse_keys(endpoint)
        return {"url": url, **keys}

    def signature_header(
        self, endpoint: Mapping[str, Any], msg_id: str, ts: int, body: bytes
    ) -> str:
        """The ``webhook-signature`` value: each ``v1`` secret, newest first, then ``v1a``."""
        _, keys = _parse_keys(endpoint)
        parts = [sign_v1(key, msg_id, ts, body) for key in keys.hmac]
        if keys.ed25519 is not None:
            parts.append(sign_v1a(keys.ed25519, msg_id, ts, body))
        return " ".join(parts)

    async def deliver(self, job: DeliveryJob) -> Outcome:
        """POST one signed attempt and map the answer to an outcome."""
        try:
            endpoint = self.validate(job.endpoint)  # the policy may have changed since saving
        except egress.EgressRefused:
            return Failed(_http.REFUSED_REASON)
        except BadRequest as exc:
            return Failed(f"invalid webhook endpoint: {exc.detail}")
        body = _ENCODER.encode(job.payload())
        timestamp = int(self._clock())
        headers = {
            "webhook-id": job.delivery_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self.signature_header(endpoint, job.delivery_id, timestamp, body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        sent = await _http.send(
            self._policy,
            endpoint["url"],
            content=body,
            headers=headers,
            unreachable="receiver unreachable",
        )
        if not isinstance(sent, egress.EgressResponse):
            return sent
        # Standard Webhooks: 410 Gone means "stop sending here"; the rest is the common map.
        outcome = _http.status_outcome(
            sent.status, sent.headers, peer="receiver", clock=self._clock
        )
        return outcome or Failed(f"receiver refused the delivery (HTTP {sent.status})")
