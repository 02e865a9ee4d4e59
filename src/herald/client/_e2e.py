"""End-to-end mode in the SDK: device keys, sealing a message per device, opening frames.

A recipient's device generates an X25519 key pair (:meth:`DeviceKey.generate`), registers
the public half (:func:`register_device_with_token`, with the recipient's subscriber token,
or :meth:`AsyncPublisher.register_device` from the app) and keeps the private half, e.g. in
the platform's key store. The publisher seals each message to every device of every
recipient (:meth:`AsyncPublisher.publish_e2e`); the subscriber opens the payload meant for
its own device (``AsyncSubscriber(..., device_key=key)``). Herald forwards the payloads and
cannot read them. The recipe itself is :mod:`herald.crypto.e2e`.

Trust note: when ``publish_e2e`` fetches the device list from the server, a compromised
server could add a key of its own to that list. Pass ``devices=`` with keys checked out of
band (for example fingerprints compared on the devices) when that matters.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from herald.client._errors import HeraldClientError, problem_from_http
from herald.client._transport import connection_failed, make_async_client
from herald.core.ids import default_generator
from herald.crypto.e2e import (
    MAX_PLAINTEXT,
    SUITE_ID,
    b64url_decode,
    b64url_encode,
    decode_plaintext,
    encode_plaintext,
    is_valid_public_key,
    open_for_device,
    parse_public_key,
    seal_for_device,
)
from herald.errors import BadRequest, DecryptionFailed

if TYPE_CHECKING:
    from herald.client._subscriber import StreamMessage

__all__ = [
    "DeviceKey",
    "Devices",
    "E2EDecryptionError",
    "build_e2e_message",
    "devices_path",
    "new_message_id",
    "open_e2e_frame",
    "parse_device_list",
    "register_device_with_token",
]

#: Devices to seal to: for each recipient, ``(device_id, 32-byte X25519 public key)`` pairs.
Devices = Mapping[str, Sequence[tuple[str, bytes]]]

# One generator per process: ids from it strictly increase (RFC 9562 §6.2).
_ids = default_generator()


@dataclass(frozen=True, slots=True)
class DeviceKey:
    """A recipient device's end-to-end key: its id on the server and its X25519 private key.

    Example::

        key = DeviceKey.generate()  # device_id is None until registered
        device = await register_device_with_token(url, token, "user-42", key.public_key_raw)
        key = key.with_device_id(device["device_id"])
        raw = key.private_key.private_bytes_raw()  # persist it in the device's key store

    Attributes:
        device_id: The id the server gave the device at registration (``None`` before).
        private_key: The device's private key; it never leaves the device.
    """

    device_id: str | None
    private_key: X25519PrivateKey = dataclasses.field(repr=False)

    @classmethod
    def generate(cls) -> Self:
        """Create a key with a new random private key and no device id yet."""
        return cls(device_id=None, private_key=X25519PrivateKey.generate())

    @property
    def public_key_raw(self) -> bytes:
        """The 32 raw bytes of the public key, as registered with the server."""
        return self.private_key.public_key().public_bytes_raw()

    def with_device_id(self, device_id: str) -> Self:
        """Return the same key with the device id the server assigned at registration."""
        return dataclasses.replace(self, device_id=device_id)


class E2EDecryptionError(HeraldClientError):
    """An end-to-end message arrived that this device cannot open.

    Either the message holds no payload for this device (it was registered after the
    message was sealed, or the publisher did not know it) or the payload does not open
    (wrong key, tampered or moved); deliberately, the error does not say which. The stream
    stays usable: the next ``__anext__`` continues with the next message, and the message
    counts as received for resuming (it is not re-sent) but is not acknowledged.

    Attributes:
        message_id: The id of the message that could not be opened.
        message: The message as received, content still sealed (``raw`` has the payloads).
    """

    def __init__(self, message: StreamMessage) -> None:
        self.message_id = message.id
        self.message = message
        super().__init__(f"cannot open end-to-end message {message.id} with this device's key")


def new_message_id() -> str:
    """Return a new UUIDv7 message id from the process-wide generator."""
    return _ids.new_str()


def devices_path(recipient: str) -> str:
    """The API path of a recipient's devices."""
    return f"/v1/recipients/{quote(recipient, safe='')}/devices"


def parse_device_list(body: Mapping[str, Any], recipient: str) -> list[tuple[str, bytes]]:
    """Read ``{"devices": [...]}`` into ``(device_id, public_key_raw)`` pairs.

    Args:
        body: The answer of ``GET /v1/recipients/{recipient}/devices``.
        recipient: The recipient, for error messages.

    Returns:
        The recipient's devices in server order.

    Raises:
        HeraldClientError: The body is malformed or holds an invalid public key.
    """
    devices = body.get("devices")
    if not isinstance(devices, list):
        raise HeraldClientError("the server answered an unexpected body")
    out: list[tuple[str, bytes]] = []
    for device in devices:
        device_id = device.get("device_id") if isinstance(device, dict) else None
        public_key = device.get("public_key") if isinstance(device, dict) else None
        if not isinstance(device_id, str) or not device_id or not isinstance(public_key, str):
            raise HeraldClientError("the server answered an unexpected body")
        try:
            out.append((device_id, parse_public_key(public_key)))
        except BadRequest as exc:
            raise HeraldClientError(
                f"the server sent an invalid public key for device {device_id!r} of "
                f"recipient {recipient!r}"
            ) from exc
    return out


def build_e2e_message(
    *,
    message_id: str,
    topic: str,
    recipients: Sequence[str],
    devices: Devices,
    title: str | None,
    body: str | None,
    data: Mapping[str, Any] | None,
    priority: str | None,
    ttl: int | None,
) -> dict[str, Any]:
    """Seal the content to every device and build the ``POST /v1/messages`` body.

    Args:
        message_id: The client-generated UUIDv7 id; it is bound into every payload.
        topic: The topic.
        recipients: The recipients, each with at least one device in ``devices``.
        devices: The devices to seal to, by recipient.
        title: The title (sealed).
        body: The body text (sealed).
        data: The JSON data object (sealed).
        priority: The priority (in clear: the server schedules by it).
        ttl: The time to live in seconds (in clear).

    Returns:
        The message object, with ``e2e`` payloads and no ``title``, ``body`` or ``data``.

    Raises:
        HeraldClientError: No recipients, a recipient without devices, a device listed
            twice, ``devices`` naming a recipient not in ``recipients``, an invalid public
            key, or content larger than ``MAX_PLAINTEXT`` once serialised.
    """
    if not recipients:
        raise HeraldClientError("an end-to-end message needs at least one recipient")
    if len(set(recipients)) != len(recipients):
        raise HeraldClientError("recipients must not repeat")
    strangers = sorted(set(devices) - set(recipients))
    if strangers:
        raise HeraldClientError(f"devices given for recipients not in recipients: {strangers}")
    plaintext = encode_plaintext(title, body, data)
    if len(plaintext) > MAX_PLAINTEXT:
        raise HeraldClientError(
            f"end-to-end content is {len(plaintext)} bytes as JSON; the limit is {MAX_PLAINTEXT}"
        )
    payloads: list[dict[str, str]] = []
    seen: set[str] = set()  # device ids are unique server-wide: one payload per device
    for recipient in recipients:
        recipient_devices = devices.get(recipient) or ()
        if not recipient_devices:
            raise HeraldClientError(
                f"recipient {recipient!r} has no registered device: it could not read the message"
            )
        for device_id, public_key in recipient_devices:
            if device_id in seen:
                raise HeraldClientError(f"device {device_id!r} is listed twice")
            seen.add(device_id)
            if not is_valid_public_key(public_key):
                raise HeraldClientError(
                    f"device {device_id!r} of recipient {recipient!r} has an invalid public key"
                )
            enc, ct = seal_for_device(
                public_key,
                plaintext,
                message_id=message_id,
                recipient=recipient,
                device_id=device_id,
            )
            payloads.append(
                {
                    "recipient": recipient,
                    "device_id": device_id,
                    "enc": b64url_encode(enc),
                    "ct": b64url_encode(ct),
                }
            )
    message: dict[str, Any] = {"id": message_id, "topic": topic, "recipients": list(recipients)}
    if priority is not None:
        message["priority"] = priority
    if ttl is not None:
        message["ttl"] = ttl
    message["e2e"] = {"suite": SUITE_ID, "payloads": payloads}
    return message


def open_e2e_frame(
    frame: Mapping[str, Any], message_id: str, key: DeviceKey
) -> tuple[str | None, str | None, dict[str, Any] | None]:
    """Open this device's payload of a delivered message frame.

    Args:
        frame: The ``message`` frame; its ``e2e`` member holds every payload.
        message_id: The frame's message id.
        key: This device's key (registered: ``device_id`` set).

    Returns:
        ``(title, body, data)`` from the plaintext.

    Raises:
        DecryptionFailed: No payload for this device, an unknown suite, a malformed payload,
            or one that does not open; never says which.
    """
    e2e = frame.get("e2e")
    if not isinstance(e2e, dict) or e2e.get("suite") != SUITE_ID:
        raise DecryptionFailed()
    payloads = e2e.get("payloads")
    if not isinstance(payloads, list) or key.device_id is None:
        raise DecryptionFailed()
    # The subscriber does not know its recipient id: the payload names it, and since it is
    # bound into the HPKE info, a payload relabelled with another recipient does not open.
    mine = next(
        (p for p in payloads if isinstance(p, dict) and p.get("device_id") == key.device_id),
        None,
    )
    if mine is None:
        raise DecryptionFailed()
    recipient, enc_text, ct_text = mine.get("recipient"), mine.get("enc"), mine.get("ct")
    if not (isinstance(recipient, str) and isinstance(enc_text, str) and isinstance(ct_text, str)):
        raise DecryptionFailed()
    try:
        enc, ct = b64url_decode(enc_text), b64url_decode(ct_text)
    except BadRequest:
        raise DecryptionFailed() from None
    plaintext = open_for_device(
        key.private_key,
        enc,
        ct,
        message_id=message_id,
        recipient=recipient,
        device_id=key.device_id,
    )
    return decode_plaintext(plaintext)


async def register_device_with_token(
    base_url: str,
    subscriber_token: str,
    recipient: str,
    public_key_raw: bytes,
    *,
    ca: str | Path | None = None,
    label: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Any]:
    """Register a device's public key with the recipient's own subscriber token.

    This is how a device enrols itself (``POST /v1/recipients/{recipient}/devices``); the
    request is not signed, the subscriber token is its credential. It is not retried: a
    repeat after a lost answer could register the key twice. Blocking code can call it
    through ``asyncio.run(register_device_with_token(...))``.

    Args:
        base_url: The server's base URL, e.g. ``https://127.0.0.1:8443``.
        subscriber_token: A subscriber token issued for ``recipient``.
        recipient: The recipient the device belongs to.
        public_key_raw: The device's 32-byte X25519 public key (``DeviceKey.public_key_raw``).
        ca: A CA file to trust instead of the system store.
        label: A human label for the device (e.g. ``"Ada's phone"``).
        transport: An ``httpx`` transport to use instead of the network (tests).

    Returns:
        ``{"device_id", "recipient", "public_key", "created_at"}``; keep ``device_id``
        with the private key (:meth:`DeviceKey.with_device_id`).

    Raises:
        HeraldClientError: ``public_key_raw`` is not a valid X25519 public key.
        ProblemError: The server refused the registration.
        ConnectionFailed: The server could not be reached.
    """
    if not is_valid_public_key(public_key_raw):
        raise HeraldClientError("public_key_raw is not a valid 32-byte X25519 public key")
    payload: dict[str, str] = {"public_key": b64url_encode(public_key_raw)}
    if label is not None:
        payload["label"] = label
    base = base_url.rstrip("/")
    headers = {
        "Authorization": f"Bearer {subscriber_token}",
        "Accept": "application/json, application/problem+json",
        "Content-Type": "application/json",
    }
    async with make_async_client(base, ca=ca, transport=transport) as client:
        try:
            response = await client.post(
                devices_path(recipient),
                content=json.dumps(payload, separators=(",", ":")).encode(),
                headers=headers,
            )
        except httpx.TransportError as exc:
            raise connection_failed(base, exc) from exc
    if not response.is_success:
        raise problem_from_http(
            response.status_code,
            response.headers.get("content-type"),
            response.content,
            response.reason_phrase,
        )
    try:
        body = response.json()
    except ValueError as exc:
        raise HeraldClientError("the server answered a body that is not JSON") from exc
    if not isinstance(body, dict) or not isinstance(body.get("device_id"), str):
        raise HeraldClientError("the server answered an unexpected body")
    return body
