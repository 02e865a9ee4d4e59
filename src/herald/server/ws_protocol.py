"""uvicorn's sans-I/O WebSocket protocol, plus a raw writer for frames framed once for many.

Fan-out writes the same message to every subscriber. Through ASGI, each copy goes through
Starlette's and uvicorn's ``send`` machinery and ``websockets``' framing again, per socket
(about a fifth of the server's CPU per delivery; docs/performance.md). Server frames are
unmasked (RFC 6455 §5.1), so one frame's bytes serve every connection: this protocol
exposes, as the ASGI scope extension :data:`RAW_WRITER`, a :class:`RawWriter` that writes
already-framed bytes straight to the connection's transport. The app falls back to
``websocket.send_text`` when the extension is absent (other servers).

The writer is only offered when the handshake negotiated no extension: a frame built
without permessage-deflate would be invalid on a compressed connection (RFC 7692 §6 needs
RSV1 and compressed payloads). Everything else (handshake, ping/pong, close, keepalive,
``websocket.send`` for the app's other frames) stays uvicorn's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

__all__ = ["RAW_WRITER", "HeraldWebSocketProtocol", "RawWriter", "raw_writer"]

#: The ASGI scope extension's key: ``scope["extensions"][RAW_WRITER]["writer"]`` is a
#: :class:`RawWriter` (ASGI extensions are dicts).
RAW_WRITER: Final = "herald.ws.raw"


class RawWriter:
    """Writes complete, unmasked server frames to one WebSocket connection.

    Each :meth:`write` is one whole frame and one ``transport.write``, on the event loop's
    thread, so frames never interleave with the ones uvicorn writes (pongs, close).
    """

    __slots__ = ("_protocol",)

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol

    @property
    def open(self) -> bool:
        """Whether data frames may still be written: accepted, and no close sent or seen.

        The sans-I/O state leaves OPEN as soon as a close frame is sent (by the app,
        uvicorn's shutdown or keepalive timeout) or received (RFC 6455 §5.5.1: no data
        frame after a Close).
        """
        protocol = self._protocol
        # State OPEN implies the handshake was accepted (not refused, no HTTP response).
        return (
            protocol.conn.state is State.OPEN
            and not protocol.close_sent
            and not protocol.disconnected
            and not protocol.transport.is_closing()
        )

    @property
    def paused(self) -> bool:
        """Whether the transport's buffer is above its high-water mark (wait for :meth:`drain`)."""
        return not self._protocol.writable.is_set()

    @property
    def buffered(self) -> int:
        """Bytes waiting in the transport's write buffer."""
        return self._protocol.transport.get_write_buffer_size()

    def write(self, frame: bytes) -> None:
        """Write one complete frame; ``ClientDisconnected`` (an ``OSError``) when closed."""
        if not self.open:
            raise ClientDisconnected
        self._protocol.transport.write(frame)

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its low-water mark (or it is lost).

        The transport calls ``pause_writing``/``resume_writing`` on the protocol; a lost
        connection wakes the waiter too, and raises here.
        """
        await self._protocol.writable.wait()
        if self._protocol.disconnected:
            raise ClientDisconnected


class HeraldWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol that also offers :data:`RAW_WRITER`."""

    def handle_connect(self, event: Request) -> None:
        """Accept or refuse the handshake as uvicorn does; then offer the raw writer.

        The ASGI task is only created here, so the scope can still be completed before
        the app sees it.
        """
        super().handle_connect(event)
        if self.response.status_code == 101 and not self.conn.extensions:
            self.scope["extensions"][RAW_WRITER] = {"writer": RawWriter(self)}


def raw_writer(scope: Mapping[str, Any]) -> RawWriter | None:
    """The connection's :class:`RawWriter`, or None when the server offers none."""
    extensions = scope.get("extensions")
    extension = extensions.get(RAW_WRITER) if isinstance(extensions, Mapping) else None
    writer = extension.get("writer") if isinstance(extension, Mapping) else None
    return writer if isinstance(writer, RawWriter) else None
