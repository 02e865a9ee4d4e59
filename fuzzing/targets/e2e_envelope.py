"""End-to-end (HPKE, RFC 9180) payloads: what a device opens and what the server checks.

Input: ``mode byte`` then:

* mode 0: ``enc NUL ct NUL message id NUL recipient NUL device id`` opened by a device key
  (:func:`open_for_device`), then :func:`decode_plaintext` on whatever opened;
* mode 1: a plaintext for :func:`decode_plaintext`;
* mode 2: a device public key as it travels on the wire (:func:`parse_public_key`);
* mode 3: a delivered ``message`` frame (JSON) opened by the SDK (:func:`open_e2e_frame`),
  and a device list answer read by :func:`parse_device_list`.

Allowed refusals: ``DecryptionFailed`` (opening), ``BadRequest`` (wire key encodings),
``HeraldClientError`` (the SDK's answer to a malformed device list); a frame that is not
JSON is dropped first, as the SDK's ``json.loads`` does (``ValueError``).
"""

from __future__ import annotations

import contextlib
import json

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fuzzing._input import fields, mode, text
from herald.client._e2e import DeviceKey, open_e2e_frame, parse_device_list
from herald.client._errors import HeraldClientError
from herald.crypto.e2e import decode_plaintext, open_for_device, parse_public_key
from herald.errors import BadRequest, DecryptionFailed

REFUSALS = (DecryptionFailed, BadRequest, HeraldClientError)

MESSAGE_ID = "01890a5d-ac96-774b-bcce-b302099a8057"
DEVICE = X25519PrivateKey.from_private_bytes(bytes(range(3, 35)))
DEVICE_KEY = DeviceKey(device_id="dev_1", private_key=DEVICE)


def _open(rest: bytes) -> None:
    enc, ct, message_id, recipient, device_id = fields(rest, 5)
    plaintext = open_for_device(
        DEVICE,
        enc,
        ct,
        message_id=text(message_id),
        recipient=text(recipient),
        device_id=text(device_id),
    )
    decode_plaintext(plaintext)


def _frame(rest: bytes) -> None:
    try:
        document = json.loads(rest)  # as the SDK's _handle_frame reads a frame
    except ValueError:
        return
    if not isinstance(document, dict):
        return
    with contextlib.suppress(DecryptionFailed):
        open_e2e_frame(document, MESSAGE_ID, DEVICE_KEY)
    parse_device_list(document, "user-1")


def test_one_input(data: bytes) -> None:
    """Open, decode or parse one end-to-end input."""
    selected, rest = mode(data, 4)
    try:
        if selected == 0:
            _open(rest)
        elif selected == 1:
            decode_plaintext(rest)
        elif selected == 2:
            parse_public_key(text(rest))
        else:
            _frame(rest)
    except REFUSALS:
        return
