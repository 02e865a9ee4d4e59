"""WebSocket client frames and the stream's query parameters.

Input: ``mode byte`` then:

* mode 0: a client text frame, decoded by the server's ``_FRAME_DECODER``; an ``ack``'s id
  goes through :func:`parse_message_id`, a ``subscribe``'s topics through
  :func:`resolve_patterns` against a subscriber token's grant;
* mode 1: ``topics NUL since``: the stream's query parameters, as the connection handler
  reads them.

Allowed refusals: msgspec's ``DecodeError``/``ValidationError`` (the stream answers an
``error`` frame) and ``ApiError`` (``BadRequest``, ``Forbidden``: answered or closed).
"""

from __future__ import annotations

import msgspec

from fuzzing._input import fields, mode, text
from herald.core.ids import parse_message_id
from herald.core.topics import TopicPattern
from herald.crypto.tokens import SubscriberClaims
from herald.errors import ApiError
from herald.server.streams import _FRAME_DECODER, Ack
from herald.service.streams import resolve_patterns

REFUSALS = (msgspec.DecodeError, msgspec.ValidationError, ApiError)

CLAIMS = SubscriberClaims(
    tenant_id="t_1",
    client_id="app_1",
    recipient="user-1",
    patterns=(TopicPattern.parse("orders.>"), TopicPattern.parse("alerts.*.high")),
    jti="jti",
    expires_at=1_800_000_000,
)


def _frame(raw: bytes) -> None:
    frame = _FRAME_DECODER.decode(text(raw))
    if isinstance(frame, Ack):
        parse_message_id(frame.id)
    else:
        resolve_patterns(CLAIMS, frame.topics)


def _query(raw: bytes) -> None:
    topics, since = (text(part) for part in fields(raw, 2))
    resolve_patterns(CLAIMS, topics)
    if since:
        parse_message_id(since)


def test_one_input(data: bytes) -> None:
    """Decode and act on one client frame, or one set of query parameters."""
    selected, rest = mode(data, 2)
    try:
        if selected == 0:
            _frame(rest)
        else:
            _query(rest)
    except REFUSALS:
        return
