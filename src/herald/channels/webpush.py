"""Web Push out: RFC 8030 delivery, RFC 8291 ``aes128gcm`` encryption, RFC 8292 VAPID.

An endpoint is a browser's push subscription, exactly as ``PushSubscription.toJSON()``
gives it::

    {"subscription": {"endpoint": "https://push.example/…",
                      "expirationTime": null,
                      "keys": {"p256dh": "<base64url P-256 point>", "auth": "<base64url>"}}}

The whole subscription is a capability (whoever holds it can push to that browser), so it
is the channel's one secret field. :meth:`WebPushChannel.validate` checks it strictly
instead of trusting pywebpush (REFERENCES "pywebpush"): an ``https`` endpoint that passes the
egress guard's offline rules, ``p256dh`` an *uncompressed* point on P-256 (65 bytes,
checked by ``cryptography``), ``auth`` exactly 16 bytes, and no unknown fields.

Every attempt POSTs one request to the push service (RFC 8030 §5):

- the body is the delivery's JSON event (:meth:`DeliveryJob.payload`) encrypted with RFC
  8291 ``aes128gcm`` for the subscription, with a fresh ephemeral ECDH key and a random
  16-byte salt each time, as one 4096-byte record;
- ``Authorization: vapid t=<JWT>, k=<public key>`` (RFC 8292): an ES256 JWT built here with
  PyJWT (not py-vapid), ``aud`` the origin of the push endpoint, ``exp`` 12 hours ahead
  (the RFC allows 24), ``sub`` the operator contact (``mailto:`` or ``https:``);
- ``TTL``: the seconds the message has left (its TTL minus its age, never negative), which
  RFC 8030 requires; pywebpush's default of 0 would drop every message to a sleeping
  device;
- ``Urgency``: ``low``, ``normal`` or ``high`` from the priority (``urgent`` is ``high``);
- ``Topic``: 22 base64url characters derived from the message id, so that a retry of the
  same message replaces, rather than duplicates, a copy still queued at the push service;
- ``Content-Encoding: aes128gcm`` and ``Content-Type: application/octet-stream``.

**Payload size.** One ``aes128gcm`` record of 4096 bytes holds at most
:data:`MAX_PLAINTEXT` = 3,993 bytes of plaintext (4096 minus the 86-byte header, the 16-byte
tag and the 1-byte delimiter), which is what push services accept. A larger event is shrunk
in this order: ``data`` is dropped (set to ``null``), then ``body`` is cut and ends in "…",
then ``title`` likewise. The service worker can fetch the full message by its ``id``.

Outcomes: 200, 201, 202 (any 2xx) delivered; 404 and 410 failed with the endpoint disabled
(the subscription expired or was unsubscribed: RFC 8030 §7.3 says to remove it); 413 failed
(payload too large); 408, 429 and 5xx retried, honouring ``Retry-After`` up to a day; 400,
401 and 403 failed (a VAPID or payload problem that a retry will not fix), as are other 4xx
and redirects (never followed); an unreachable push service is retried; a destination the
SSRF guard refuses is failed. Reasons never carry the endpoint, the keys or the payload.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Final, cast
from urllib.parse import urlsplit

import http_ece  # type: ignore[import-untyped]
import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from herald.channels import _http, egress
from herald.channels._http import RETRY_AFTER_MAX
from herald.channels.base import DeliveryJob, Failed, Outcome
from herald.errors import BadRequest

__all__ = [
    "AUTH_SECRET_BYTES",
    "MAX_PLAINTEXT",
    "P256_POINT_BYTES",
    "RECORD_SIZE",
    "RETRY_AFTER_MAX",
    "URGENCY",
    "URL_MAX",
    "USER_AGENT",
    "VAPID_JWT_LIFETIME",
    "WebPushChannel",
    "encrypt",
    "fit_payload",
    "generate_vapid_key",
    "load_vapid_key",
    "push_topic",
    "remaining_ttl",
    "vapid_authorization",
    "vapid_jwt",
    "vapid_pem",
    "vapid_public_key_b64url",
]

#: RFC 8291 §4: push messages are one record of at most 4096 bytes.
RECORD_SIZE: Final = 4096
#: An RFC 8188 header with a 65-byte key id: salt 16 + rs 4 + idlen 1 + keyid 65.
_HEADER_BYTES: Final = 16 + 4 + 1 + 65
#: RFC 8291 §4: 4096 − 86 (header) − 16 (AEAD tag) − 1 (padding delimiter) = 3,993.
MAX_PLAINTEXT: Final = RECORD_SIZE - _HEADER_BYTES - 16 - 1
#: An uncompressed P-256 point: 0x04 ‖ X ‖ Y.
P256_POINT_BYTES: Final = 65
#: RFC 8291 §3.2: the authentication secret is 16 bytes.
AUTH_SECRET_BYTES: Final = 16
#: RFC 8188 salts are 16 bytes.
_SALT_BYTES: Final = 16
#: ``exp`` of the VAPID JWT, seconds ahead (RFC 8292 §2: at most 24 hours).
VAPID_JWT_LIFETIME: Final = 12 * 3600
#: RFC 8030 §5.4 ``Topic``: at most 32 characters of the base64url alphabet.
_TOPIC_MAX: Final = 32
#: Priority → RFC 8030 §5.3 ``Urgency``.
URGENCY: Final[Mapping[str, str]] = {
    "low": "low",
    "normal": "normal",
    "high": "high",
    "urgent": "high",
}
#: Longest push endpoint accepted (the de-facto limit of browsers and proxies).
URL_MAX: Final = 2048
USER_AGENT: Final = "Herald-WebPush/1"

_FIELDS: Final = frozenset({"subscription"})
_SUBSCRIPTION_FIELDS: Final = frozenset({"endpoint", "expirationTime", "keys"})
_KEY_FIELDS: Final = frozenset({"p256dh", "auth"})
#: RFC 8030 §7.3: 404 and 410 mean the subscription expired or was removed.
_GONE: Final = frozenset({404, 410})
_ENCODER = msgspec.json.Encoder()
_ELLIPSIS: Final = "…"
_B64URL_ALPHABET: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
)


# -- base64url ------------------------------------------------------------------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes | None:
    """Strict, canonical base64url, padding optional; None when malformed (no oracle)."""
    stripped = text.rstrip("=")
    padding = len(text) - len(stripped)
    if (
        not stripped
        or not set(stripped) <= _B64URL_ALPHABET
        or len(stripped) % 4 == 1
        or (padding and len(text) % 4)
    ):
        return None
    try:
        raw = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if _b64url(raw) == stripped else None  # unused bits must be zero


# -- VAPID keys (RFC 8292) ------------------------------------------------------------------


def _check_p256_private(key: object) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("a VAPID key must be an EC private key on P-256 (ES256)")
    if key.curve.name != ec.SECP256R1.name:
        raise ValueError("a VAPID key must be on P-256 (ES256)")
    return key


def generate_vapid_key() -> ec.EllipticCurvePrivateKey:
    """A fresh VAPID signing key (ECDSA on P-256)."""
    return ec.generate_private_key(ec.SECP256R1())


def _point(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def vapid_public_key_b64url(key: ec.EllipticCurvePrivateKey) -> str:
    """The uncompressed public key, base64url: browsers' ``applicationServerKey``.

    It is also the ``k`` parameter of the ``vapid`` Authorization header.

    Raises:
        TypeError: ``key`` is not an EC private key.
        ValueError: ``key`` is not on P-256.
    """
    return _b64url(_point(_check_p256_private(key).public_key()))


def load_vapid_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """Load an unencrypted PEM (PKCS #8 or SEC 1) VAPID private key.

    Raises:
        ValueError: not an unencrypted PEM private key, or not an EC key on P-256.
    """
    try:
        return _check_p256_private(serialization.load_pem_private_key(pem, password=None))
    except TypeError:
        raise ValueError("not an unencrypted PEM EC private key on P-256") from None


def vapid_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """``key`` as unencrypted PKCS #8 PEM (what :func:`load_vapid_key` reads).

    Raises:
        TypeError: ``key`` is not an EC private key.
        ValueError: ``key`` is not on P-256.
    """
    return _check_p256_private(key).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _check_subject(subject: object) -> str:
    if (
        not isinstance(subject, str)
        or not subject.isascii()
        or any(c.isspace() or not c.isprintable() for c in subject)
        or len(subject) > URL_MAX
    ):
        raise ValueError("the VAPID subject must be a mailto: or https: URI without spaces")
    if subject.startswith("mailto:") and "@" in subject:
        return subject
    if subject.startswith("https://") and urlsplit(subject).hostname:
        return subject
    raise ValueError("the VAPID subject must be a mailto: or https: URI")


def _origin(url: str) -> str:
    """The RFC 6454 origin of a normalised URL (default port already removed)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def vapid_jwt(key: ec.EllipticCurvePrivateKey, endpoint: str, subject: str, *, now: float) -> str:
    """The ES256 VAPID JWT for ``endpoint`` (RFC 8292 §2).

    Claims: ``aud`` the origin of ``endpoint``, ``exp`` :data:`VAPID_JWT_LIFETIME` seconds
    after ``now``, ``sub`` the operator contact.
    """
    claims = {
        "aud": _origin(endpoint),
        "exp": int(now) + VAPID_JWT_LIFETIME,
        "sub": subject,
    }
    return jwt.encode(claims, key, algorithm="ES256", headers={"typ": "JWT"})


def vapid_authorization(
    key: ec.EllipticCurvePrivateKey, endpoint: str, subject: str, *, now: float
) -> str:
    """The ``Authorization`` value: ``vapid t=<JWT>, k=<base64url public key>``."""
    token = vapid_jwt(key, endpoint, subject, now=now)
    return f"vapid t={token}, k={vapid_public_key_b64url(key)}"


# -- RFC 8291 encryption ---------------------------------------------------------------------


def encrypt(
    plaintext: bytes,
    p256dh: bytes,
    auth: bytes,
    *,
    sender_key: ec.EllipticCurvePrivateKey | None = None,
    salt: bytes | None = None,
) -> bytes:
    """The RFC 8291 ``aes128gcm`` message (header and one record) for a subscription.

    Args:
        plaintext: 1 to :data:`MAX_PLAINTEXT` bytes.
        p256dh: The subscription's uncompressed P-256 public key.
        auth: The subscription's 16-byte authentication secret.
        sender_key: The ephemeral ECDH key; fresh when None (only tests pass one).
        salt: The 16-byte salt; random when None (only tests pass one).

    Raises:
        ValueError: the plaintext is empty or too large, or a key or salt has a wrong size.
    """
    if not 1 <= len(plaintext) <= MAX_PLAINTEXT:
        raise ValueError(f"a push payload holds 1 to {MAX_PLAINTEXT} bytes")
    if len(p256dh) != P256_POINT_BYTES or len(auth) != AUTH_SECRET_BYTES:
        raise ValueError("p256dh must be 65 bytes and auth 16 bytes")
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    if len(salt) != _SALT_BYTES:
        raise ValueError("the salt must be 16 bytes")
    ephemeral = ec.generate_private_key(ec.SECP256R1()) if sender_key is None else sender_key
    message = http_ece.encrypt(
        plaintext,
        salt=salt,
        private_key=ephemeral,
        dh=p256dh,
        auth_secret=auth,
        rs=RECORD_SIZE,
        version="aes128gcm",
    )
    return cast("bytes", message)


# -- the payload ----------------------------------------------------------------------------


def _json_size(text: str) -> int:
    return len(_ENCODER.encode(text)) - 2  # minus the quotes


def _fit(text: str, limit: int) -> str:
    """``text``, or its longest prefix plus "…" whose JSON size is within ``limit``."""
    if _json_size(text) <= limit:
        return text
    if _json_size(_ELLIPSIS) > limit:
        return ""
    low, high = 0, len(text)
    while low < high:  # binary search: the size is monotonic in the prefix length
        middle = (low + high + 1) // 2
        if _json_size(text[:middle] + _ELLIPSIS) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low] + _ELLIPSIS


def _shrink(event: dict[str, Any], field: str, limit: int) -> bytes:
    """Cut ``event[field]`` so that the encoded event fits ``limit`` (when it can)."""
    text = event.get(field)
    if not isinstance(text, str) or not text:
        return _ENCODER.encode(event)
    event[field] = ""
    room = limit - len(_ENCODER.encode(event))
    event[field] = _fit(text, room) if room >= 0 else ""
    return _ENCODER.encode(event)


def fit_payload(event: Mapping[str, Any], limit: int = MAX_PLAINTEXT) -> bytes | None:
    """The compact JSON of ``event`` within ``limit`` bytes, or None when it cannot fit.

    Too large an event loses ``data`` first, then the end of ``body``, then of ``title``
    (each cut text ends in "…").
    """
    shaped = dict(event)
    encoded = _ENCODER.encode(shaped)
    if len(encoded) <= limit:
        return encoded
    if shaped.get("data") is not None:
        shaped["data"] = None
        encoded = _ENCODER.encode(shaped)
    for field in ("body", "title"):
        if len(encoded) <= limit:
            return encoded
        encoded = _shrink(shaped, field, limit)
    return encoded if len(encoded) <= limit else None


# -- headers --------------------------------------------------------------------------------


def remaining_ttl(job: DeliveryJob, now: float) -> int:
    """Seconds the message has left: its TTL minus its age, at least 0 (RFC 8030 ``TTL``).

    An unreadable ``created_at``, or one in the future, counts as age 0.
    """
    try:
        created = datetime.fromisoformat(job.created_at)
    except (TypeError, ValueError):
        return max(0, job.ttl)
    if created.tzinfo is None:
        return max(0, job.ttl)
    age = max(0.0, now - created.timestamp())
    return max(0, job.ttl - math.ceil(age))


def push_topic(message_id: str) -> str:
    """The RFC 8030 ``Topic`` for a message: base64url, at most 32 characters.

    A UUID message id gives its 16 bytes in base64url (22 characters); any other id gives
    the first 24 bytes of its SHA-256 (32 characters).
    """
    try:
        raw = uuid.UUID(message_id).bytes
    except (TypeError, ValueError):
        raw = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).digest()[:24]
    return _b64url(raw)[:_TOPIC_MAX]


# -- endpoint validation --------------------------------------------------------------------


def _unknown(fields: Mapping[Any, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(str(key)[:64] for key in fields if key not in allowed)
    if unknown:
        raise BadRequest(
            f"unknown {where} fields: " + ", ".join(unknown[:5]),
            extra={"allowed": sorted(allowed)},
        )


def _check_endpoint_url(value: Any, policy: egress.EgressPolicy) -> str:
    # Messages never echo the URL: the endpoint path is the subscription's capability.
    if not isinstance(value, str) or not value:
        raise BadRequest("web push subscription endpoint is required")
    if len(value) > URL_MAX:
        raise BadRequest(f"web push subscription endpoint is longer than {URL_MAX} characters")
    if not value.isascii() or any(c.isspace() or not c.isprintable() for c in value):
        raise BadRequest("web push subscription endpoint must be ASCII without spaces")
    try:
        scheme = urlsplit(value).scheme
    except ValueError:  # e.g. an unclosed "[" of an IPv6 literal
        raise egress.EgressRefused("not a valid URL") from None
    if scheme.lower() != "https":
        # RFC 8030 §8: push services are reached over HTTPS only, allow-listed or not.
        raise egress.EgressRefused("web push subscription endpoint must use https")
    return egress.validate_url(value, policy)


def _check_p256dh(value: Any) -> bytes:
    raw = _b64url_decode(value) if isinstance(value, str) else None
    if raw is None or len(raw) != P256_POINT_BYTES or raw[0] != 0x04:
        raise BadRequest(
            "web push subscription keys.p256dh must be the base64url of an uncompressed "
            "P-256 point (65 bytes)"
        )
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise BadRequest("web push subscription keys.p256dh is not a point on P-256") from None
    return raw


def _check_auth(value: Any) -> bytes:
    raw = _b64url_decode(value) if isinstance(value, str) else None
    if raw is None or len(raw) != AUTH_SECRET_BYTES:
        raise BadRequest(
            f"web push subscription keys.auth must be the base64url of {AUTH_SECRET_BYTES} bytes"
        )
    return raw


def _check_expiration(value: Any) -> int | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise BadRequest("web push subscription expirationTime must be null or epoch ms")
    return int(value)


@dataclass(frozen=True, slots=True)
class _Subscription:
    endpoint: str
    p256dh: bytes
    auth: bytes
    expiration: int | None

    def normal(self) -> dict[str, Any]:
        return {
            "subscription": {
                "endpoint": self.endpoint,
                "expirationTime": self.expiration,
                "keys": {"p256dh": _b64url(self.p256dh), "auth": _b64url(self.auth)},
            }
        }


# -- the channel ----------------------------------------------------------------------------


class WebPushChannel:
    """Web Push delivery (RFC 8030/8291/8292) through the SSRF-guarded egress client.

    Args:
        policy: The egress policy: allowed private networks, CA bundle, timeouts, caps.
        vapid_private_key: The operator's VAPID signing key (P-256); its public half is the
            ``applicationServerKey`` browsers subscribe with.
        subject: The VAPID ``sub``: a ``mailto:`` or ``https:`` contact for push services.
        clock: Unix time source for ``TTL`` and the JWT ``exp`` (injectable for tests).

    Raises:
        TypeError: the key is not an EC private key.
        ValueError: the key is not on P-256, or the subject is not a ``mailto:`` or
            ``https:`` URI.
    """

    name: ClassVar[str] = "webpush"
    secret_fields: ClassVar[tuple[str, ...]] = ("subscription",)
    concurrency: ClassVar[int] = 32

    def __init__(
        self,
        policy: egress.EgressPolicy,
        vapid_private_key: ec.EllipticCurvePrivateKey,
        *,
        subject: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        self._key = _check_p256_private(vapid_private_key)
        self._subject = _check_subject(subject)
        self._clock = clock

    @property
    def application_server_key(self) -> str:
        """The base64url VAPID public key browsers pass to ``pushManager.subscribe``."""
        return vapid_public_key_b64url(self._key)

    def validate(self, endpoint: Mapping[str, Any]) -> dict[str, Any]:
        """Check and normalise a subscription (offline: DNS is checked at delivery).

        Raises:
            BadRequest: Unknown fields, a non-https or refused endpoint URL, a ``p256dh``
                that is not an uncompressed P-256 point, or an ``auth`` that is not 16
                bytes. Messages never contain the endpoint URL or a key.
        """
        return self._parse(endpoint).normal()

    def _parse(self, endpoint: Mapping[str, Any]) -> _Subscription:
        if not isinstance(endpoint, Mapping):
            raise BadRequest("a web push endpoint must be an object")
        _unknown(endpoint, _FIELDS, "web push endpoint")
        subscription = endpoint.get("subscription")
        if not isinstance(subscription, Mapping):
            raise BadRequest("a web push endpoint needs a subscription object")
        _unknown(subscription, _SUBSCRIPTION_FIELDS, "web push subscription")
        url = _check_endpoint_url(subscription.get("endpoint"), self._policy)
        keys = subscription.get("keys")
        if not isinstance(keys, Mapping):
            raise BadRequest("web push subscription keys must be an object with p256dh and auth")
        _unknown(keys, _KEY_FIELDS, "web push subscription keys")
        return _Subscription(
            endpoint=url,
            p256dh=_check_p256dh(keys.get("p256dh")),
            auth=_check_auth(keys.get("auth")),
            expiration=_check_expiration(subscription.get("expirationTime")),
        )

    def headers(self, job: DeliveryJob, endpoint_url: str) -> dict[str, str]:
        """The RFC 8030/8292 request headers of one attempt (without the body)."""
        now = self._clock()
        return {
            "authorization": vapid_authorization(self._key, endpoint_url, self._subject, now=now),
            "ttl": str(remaining_ttl(job, now)),
            "urgency": URGENCY.get(job.priority, "normal"),
            "topic": push_topic(job.message_id),
            "content-encoding": "aes128gcm",
            "content-type": "application/octet-stream",
            "user-agent": USER_AGENT,
        }

    async def deliver(self, job: DeliveryJob) -> Outcome:
        """Encrypt, sign and POST one push message; map the answer to an outcome."""
        try:
            subscription = self._parse(job.endpoint)  # the policy may have changed since saving
        except egress.EgressRefused:
            return Failed(_http.REFUSED_REASON)
        except BadRequest as exc:
            return Failed(f"invalid web push subscription: {exc.detail}")
        plaintext = fit_payload(job.payload())
        if plaintext is None:
            return Failed(f"the push payload cannot fit in {MAX_PLAINTEXT} bytes")
        body = encrypt(plaintext, subscription.p256dh, subscription.auth)
        url = subscription.endpoint
        sent = await _http.send(
            self._policy,
            url,
            content=body,
            headers=self.headers(job, url),
            unreachable="push service unreachable",
        )
        if not isinstance(sent, egress.EgressResponse):
            return sent
        outcome = _http.status_outcome(
            sent.status,
            sent.headers,
            peer="push service",
            clock=self._clock,
            gone=_GONE,
            what="subscription",
        )
        return outcome or Failed(_refusal(sent.status))


def _refusal(status: int) -> str:
    """Why a push service's permanent refusal (a 4xx, or an odd status) failed the delivery."""
    if status == 413:
        return "push service refused the payload as too large (HTTP 413)"
    if status in {400, 401, 403}:  # a retry will not fix the signature or the payload
        return f"push service refused the VAPID signature or payload (HTTP {status})"
    return f"push service refused the delivery (HTTP {status})"
