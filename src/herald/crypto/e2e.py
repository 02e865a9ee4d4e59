"""End-to-end payloads: HPKE (RFC 9180) sealing of a message to each recipient device.

In end-to-end mode the publishing SDK seals a message's content separately for every
registered device of every recipient; Herald stores and forwards the opaque payloads and
cannot read them (DESIGN §5). This module is the pure recipe both sides share: the SDK
seals and opens with it, the server only validates shapes and keys with it.

Suite :data:`SUITE_ID` is RFC 9180 base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256
and AES-128-GCM (RFC 9180 §7.1-7.3 ids 0x0020, 0x0001, 0x0001). ``enc`` is the 32-byte
encapsulated ephemeral key, ``ct`` the AES-GCM ciphertext with its 16-byte tag.

Context binding: ``cryptography``'s HPKE API is single-shot and has no public AAD, so the
context is bound through HPKE's ``info`` (:func:`e2e_info`): the message id, the recipient
and the device id. A payload copied to another message, recipient or device does not open.

What base mode does not give (RFC 9180 §9.1, §9.7.3): it does not authenticate the sender
(anyone holding a device's public key can seal to it; authenticity of the publisher comes
from Herald's signed, authenticated API and the audit log) and it has no replay protection
of its own (a payload only opens under its own message id, and the SDK de-duplicates ids).

The plaintext sealed per device is the JSON object ``{"title": ..., "body": ..., "data":
...}`` exactly as :func:`encode_plaintext` writes it.

Every way opening can fail — wrong key, tampered or truncated ``enc`` or ``ct``, other
message, recipient or device, malformed plaintext — raises the same
:class:`~herald.errors.DecryptionFailed` with no reason attached (no oracle).

Randomness: the ephemeral key pair is drawn by ``cryptography``'s own CSPRNG inside
``Suite.encrypt`` (its HPKE API takes no RNG), the one exception in ``herald.crypto`` to
injected randomness; the RFC 9180 known-answer tests therefore use an independent
implementation with a fixed ephemeral key.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any, Final

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from herald.errors import BadRequest, DecryptionFailed

__all__ = [
    "ENC_LEN",
    "INFO_PREFIX",
    "MAX_CIPHERTEXT",
    "MAX_PLAINTEXT",
    "PUBLIC_KEY_LEN",
    "SUITE_ID",
    "TAG_LEN",
    "b64url_decode",
    "b64url_encode",
    "decode_plaintext",
    "e2e_info",
    "encode_plaintext",
    "is_valid_public_key",
    "open_for_device",
    "parse_public_key",
    "seal_for_device",
]

#: The one suite of end-to-end mode, as named on the wire (``e2e.suite``).
SUITE_ID: Final = "hpke-base-x25519-sha256-aes128gcm"
#: Largest plaintext sealed for one device (bytes): the content of one message.
MAX_PLAINTEXT: Final = 32 * 1024
#: RFC 9180 §7.1: ``Nenc`` of DHKEM(X25519, HKDF-SHA256) is 32 bytes.
ENC_LEN: Final = 32
#: RFC 7748 §5: an X25519 public key is 32 bytes (the little-endian u-coordinate).
PUBLIC_KEY_LEN: Final = 32
#: RFC 9180 §7.3: ``Nt`` of AES-128-GCM, the tag appended to every ciphertext.
TAG_LEN: Final = 16
#: Largest ``ct`` that can hold a :data:`MAX_PLAINTEXT` plaintext.
MAX_CIPHERTEXT: Final = MAX_PLAINTEXT + TAG_LEN
#: Domain separation and version of the ``info`` encoding of :func:`e2e_info`.
INFO_PREFIX: Final = b"herald-e2e/v1"

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
_INFO_PART_MAX = 0xFFFF  # a part's length must fit its 2-byte length prefix
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*", re.ASCII)
_P25519 = 2**255 - 19
# u-coordinates of the points of small order on Curve25519 and its twist (the list
# libsodium refuses): Diffie-Hellman with them gives a shared secret independent of the
# private key (all zero), so such a "public key" would make every payload readable.
_SMALL_ORDER_U = frozenset(
    {
        0,
        1,
        _P25519 - 1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    }
)


# -- encodings -------------------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    """Encode bytes as unpadded base64url (RFC 4648 §5, RFC 7515 §2).

    Args:
        data: The bytes to encode.

    Returns:
        ASCII text over ``A-Z a-z 0-9 - _``, without ``=`` padding.
    """
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, *, name: str = "value") -> bytes:
    """Decode strict unpadded base64url: the one canonical text of the bytes, nothing else.

    Refused: padding, whitespace, the ``+`` and ``/`` of standard base64, a length that no
    encoding has (``len % 4 == 1``) and non-zero unused trailing bits (RFC 4648 §3.5), so
    that each byte string has exactly one accepted text.

    Args:
        text: The encoded text.
        name: What the text is, for the error message (e.g. ``"public_key"``).

    Returns:
        The decoded bytes.

    Raises:
        BadRequest: ``text`` is not a string in canonical unpadded base64url.
    """
    error = BadRequest(f"{name} must be unpadded base64url")
    if not isinstance(text, str) or len(text) % 4 == 1 or _B64URL_RE.fullmatch(text) is None:
        raise error
    # Cannot fail: the alphabet and the length were checked above.
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(data) != text:  # non-zero trailing bits: another text of the same bytes
        raise error
    return data


# -- keys ------------------------------------------------------------------------------------


def is_valid_public_key(raw: bytes) -> bool:
    """Whether ``raw`` is a usable X25519 public key for end-to-end payloads.

    Accepted: exactly 32 bytes in canonical form (RFC 7748 §5: little-endian u-coordinate,
    top bit clear, u < 2^255 - 19) that is not a point of small order. Every key a correct
    X25519 implementation generates passes.

    Args:
        raw: The candidate key bytes.

    Returns:
        ``True`` when a payload can safely be sealed to it.
    """
    if not isinstance(raw, bytes | bytearray) or len(raw) != PUBLIC_KEY_LEN:
        return False
    u = int.from_bytes(raw, "little")
    return u < _P25519 and u not in _SMALL_ORDER_U


def parse_public_key(text: str) -> bytes:
    """Parse a device public key as it travels on the wire.

    Args:
        text: Unpadded base64url of the 32 raw key bytes.

    Returns:
        The 32 raw bytes.

    Raises:
        BadRequest: Not canonical base64url, not 32 bytes, not canonical, or a point of
            small order (the all-zero key among them).
    """
    raw = b64url_decode(text, name="public_key")
    if not is_valid_public_key(raw):
        raise BadRequest("public_key must be a 32-byte X25519 public key of full order")
    return raw


# -- info and plaintext ----------------------------------------------------------------------


def e2e_info(message_id: str, recipient: str, device_id: str) -> bytes:
    """Build the HPKE ``info`` that binds a payload to its message, recipient and device.

    The encoding is :data:`INFO_PREFIX` followed by each of message id, recipient and device
    id as a 2-byte big-endian length and its UTF-8 bytes. Length prefixes make it injective:
    ``("a", "bc")`` and ``("ab", "c")`` encode differently.

    Args:
        message_id: The message id (the client-generated UUIDv7).
        recipient: The recipient the payload is for.
        device_id: The recipient's device the payload is for.

    Returns:
        The ``info`` bytes for the RFC 9180 §5.1 key schedule.

    Raises:
        ValueError: A part is longer than 65,535 UTF-8 bytes or is not encodable.
    """
    out = bytearray(INFO_PREFIX)
    for part in (message_id, recipient, device_id):
        raw = part.encode("utf-8")
        if len(raw) > _INFO_PART_MAX:
            raise ValueError("e2e info part longer than 65535 bytes")
        out += len(raw).to_bytes(2, "big")
        out += raw
    return bytes(out)


def encode_plaintext(title: str | None, body: str | None, data: Mapping[str, Any] | None) -> bytes:
    """Serialise a message's content into the plaintext that is sealed per device.

    Args:
        title: The title, or ``None``.
        body: The body text, or ``None``.
        data: A JSON object (a mapping), or ``None``.

    Returns:
        The JSON ``{"title":...,"body":...,"data":...}`` in that key order, no whitespace.
    """
    content = {"title": title, "body": body, "data": None if data is None else dict(data)}
    return msgspec.json.encode(content)


def decode_plaintext(plaintext: bytes) -> tuple[str | None, str | None, dict[str, Any] | None]:
    """Parse an opened plaintext back into title, body and data.

    Members other than ``title``, ``body`` and ``data`` are ignored (later versions may add
    some); a missing member reads as ``None``.

    Args:
        plaintext: The bytes :func:`open_for_device` returned.

    Returns:
        ``(title, body, data)``.

    Raises:
        DecryptionFailed: The plaintext is not such a JSON object — the payload is unusable,
            which is reported like any other failure to open it.
    """
    try:
        content = msgspec.json.decode(plaintext)
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec raises the latter for bad UTF-8
        raise DecryptionFailed() from None
    if not isinstance(content, dict):
        raise DecryptionFailed()
    title, body, data = content.get("title"), content.get("body"), content.get("data")
    if not (
        isinstance(title, str | None)
        and isinstance(body, str | None)
        and isinstance(data, dict | None)
    ):
        raise DecryptionFailed()
    return title, body, data


# -- seal and open ---------------------------------------------------------------------------


def seal_for_device(
    public_key_raw: bytes,
    plaintext: bytes,
    *,
    message_id: str,
    recipient: str,
    device_id: str,
) -> tuple[bytes, bytes]:
    """Seal ``plaintext`` to one device (RFC 9180 §6.1 single-shot base-mode encryption).

    Args:
        public_key_raw: The device's 32-byte X25519 public key.
        plaintext: The bytes to protect, at most :data:`MAX_PLAINTEXT`.
        message_id: The id of the message the payload belongs to.
        recipient: The recipient the device belongs to.
        device_id: The device's id.

    Returns:
        ``(enc, ct)``: the 32-byte encapsulated key and the ciphertext with its tag.

    Raises:
        ValueError: The key is not a valid public key (:func:`is_valid_public_key`), the
            plaintext is too long, or an id part is too long for :func:`e2e_info`.
    """
    if not is_valid_public_key(public_key_raw):
        raise ValueError("not a valid X25519 public key for end-to-end payloads")
    if len(plaintext) > MAX_PLAINTEXT:
        raise ValueError(f"an end-to-end plaintext is at most {MAX_PLAINTEXT} bytes")
    info = e2e_info(message_id, recipient, device_id)
    public_key = X25519PublicKey.from_public_bytes(bytes(public_key_raw))
    # cryptography returns enc || ct (RFC 9180 §5.1.1 SetupBaseS, then Seal with aad "").
    sealed = _SUITE.encrypt(plaintext, public_key, info=info)
    return sealed[:ENC_LEN], sealed[ENC_LEN:]


def open_for_device(
    private_key: X25519PrivateKey,
    enc: bytes,
    ct: bytes,
    *,
    message_id: str,
    recipient: str,
    device_id: str,
) -> bytes:
    """Open a payload sealed by :func:`seal_for_device` (RFC 9180 §6.1 single-shot open).

    Args:
        private_key: The device's X25519 private key.
        enc: The 32-byte encapsulated key.
        ct: The ciphertext with its tag.
        message_id: The id of the message the payload arrived with.
        recipient: The recipient named by the payload.
        device_id: This device's id.

    Returns:
        The plaintext.

    Raises:
        DecryptionFailed: For every failure; never says which.
    """
    if len(enc) != ENC_LEN or not TAG_LEN <= len(ct) <= MAX_CIPHERTEXT:
        raise DecryptionFailed()
    try:
        info = e2e_info(message_id, recipient, device_id)
        return _SUITE.decrypt(bytes(enc) + bytes(ct), private_key, info=info)
    except (InvalidTag, ValueError, TypeError, OverflowError):
        # `from None`: the cause must not travel with the error (no oracle, no detail).
        raise DecryptionFailed() from None
