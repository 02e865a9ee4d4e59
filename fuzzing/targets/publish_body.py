"""Publish bodies and the other JSON bodies of the messaging API.

Input: ``mode byte`` then a request body:

* mode 0: ``POST /v1/messages`` (decode, :func:`validate_publish`, :func:`content_of`);
* mode 1: ``POST /v1/messages:batch`` (the envelope, then each message on its own);
* mode 2: ``POST /v1/subscriber-tokens`` (decode, each topic pattern parsed);
* mode 3: ``POST /v1/recipients/{id}/devices`` (decode, the public key parsed).

Allowed refusal: ``BadRequest`` (every decode failure is one).
"""

from __future__ import annotations

from fuzzing._input import mode
from herald.core.messages import (
    DeviceRequest,
    PublishBatch,
    PublishRequest,
    SubscriberTokenRequest,
    content_of,
    decode_json,
    validate_publish,
)
from herald.core.topics import TopicPattern
from herald.crypto.e2e import parse_public_key
from herald.errors import BadRequest

REFUSALS = (BadRequest,)


def _publish(raw: bytes) -> None:
    content_of(validate_publish(decode_json(raw, PublishRequest)))


def _batch(raw: bytes) -> None:
    batch = decode_json(raw, PublishBatch)
    for message in batch.messages:
        try:
            _publish(bytes(message))
        except BadRequest:
            continue


def _subscriber_token(raw: bytes) -> None:
    for topic in decode_json(raw, SubscriberTokenRequest).topics:
        TopicPattern.parse(topic)


def _device(raw: bytes) -> None:
    parse_public_key(decode_json(raw, DeviceRequest).public_key)


_MODES = (_publish, _batch, _subscriber_token, _device)


def test_one_input(data: bytes) -> None:
    """Decode and validate one request body."""
    selected, rest = mode(data, len(_MODES))
    try:
        _MODES[selected](rest)
    except BadRequest:
        return
