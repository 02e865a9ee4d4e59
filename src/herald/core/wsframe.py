"""Server-to-client WebSocket frames (RFC 6455 §5.2), built once and written to many sockets.

A server never masks its frames (RFC 6455 §5.1), so one text frame's bytes are valid on
every connection that negotiated no extension (no permessage-deflate): the hub's messages
are framed once per message (and recipient, for end-to-end content) instead of once per
subscriber. Pure functions, no I/O.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["text_frame"]

#: FIN bit set, RSV1-3 clear, opcode 0x1 (text): one whole, uncompressed text message.
_FIN_TEXT: Final = 0x81
_HEADER_16: Final = struct.Struct("!BBH")
_HEADER_64: Final = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final text frame carrying ``payload`` (UTF-8 JSON, already encoded).

    RFC 6455 §5.2: the payload length is 7 bits (0–125), or 126 and a 16-bit length, or 127
    and a 64-bit length (most significant bit 0) — always the shortest form, as §5.2
    requires ("the minimal number of bytes MUST be used").
    """
    length = len(payload)
    if length < 126:
        return bytes((_FIN_TEXT, length)) + payload
    if length < 1 << 16:
        return _HEADER_16.pack(_FIN_TEXT, 126, length) + payload
    return _HEADER_64.pack(_FIN_TEXT, 127, length) + payload
