"""The raw writer of HeraldWebSocketProtocol, over uvicorn's real sans-I/O protocol.

The transport is a memory fake (bytes written, closing state, pause/resume); the handshake,
frames from the client and the ASGI app are real, so the states the writer checks are the
ones uvicorn and ``websockets`` actually reach.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.server import ServerState
from websockets.frames import Close, Frame, Opcode

from herald.core.wsframe import text_frame
from herald.server import ws_protocol
from herald.server.ws_protocol import HeraldWebSocketProtocol, RawWriter, raw_writer


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return len(self.written)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        del name  # no socket, no peer address, no TLS object
        return default


class App:
    """Accepts (unless told not to), then waits; keeps the scope it was given."""

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.scope: dict[str, Any] = {}
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.send: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope, self.send = scope, send
        assert (await receive())["type"] == "websocket.connect"
        if self.accept:
            await send({"type": "websocket.accept"})
        self.started.set()
        await self.release.wait()


def _handshake(deflate: bool = False) -> bytes:
    key = base64.b64encode(b"0123456789abcdef").decode()
    lines = [
        "GET /v1/stream HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if deflate:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _connect(
    app: App, *, deflate_server: bool = False, deflate_client: bool = False
) -> tuple[HeraldWebSocketProtocol, FakeTransport]:
    config = uvicorn.Config(app, ws_per_message_deflate=deflate_server, log_config=None)
    config.load()
    protocol = HeraldWebSocketProtocol(config, ServerState(), {})
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.data_received(_handshake(deflate_client))
    await asyncio.wait_for(app.started.wait(), 5)
    return protocol, transport


def _writer(app: App) -> RawWriter:
    writer = raw_writer(app.scope)
    assert writer is not None
    return writer


def _client_frame(frame: Frame) -> bytes:
    return frame.serialize(mask=True)


async def test_raw_frames_go_to_the_transport_as_they_are() -> None:
    app = App()
    _, transport = await _connect(app)
    writer = _writer(app)
    assert writer.open
    transport.written.clear()
    frame = text_frame(b'{"type":"message"}')
    writer.write(frame)
    writer.write(frame)
    assert bytes(transport.written) == frame * 2
    assert writer.buffered == 2 * len(frame)
    app.release.set()


async def test_no_writer_is_offered_when_compression_is_negotiated() -> None:
    app = App()
    protocol, _ = await _connect(app, deflate_server=True, deflate_client=True)
    assert protocol.conn.extensions  # permessage-deflate: raw frames would be invalid
    assert raw_writer(app.scope) is None
    assert ws_protocol.RAW_WRITER not in app.scope["extensions"]
    app.release.set()


async def test_writer_is_offered_when_compression_is_offered_but_not_negotiated() -> None:
    app = App()
    protocol, _ = await _connect(app, deflate_server=False, deflate_client=True)
    assert not protocol.conn.extensions
    assert _writer(app).open
    app.release.set()


async def test_nothing_is_written_before_the_app_accepts() -> None:
    app = App(accept=False)
    _, transport = await _connect(app)
    writer = _writer(app)
    assert not writer.open
    with pytest.raises(ClientDisconnected):
        writer.write(text_frame(b"x"))
    assert transport.written == b""
    app.release.set()


async def test_nothing_is_written_after_the_app_sent_a_close() -> None:
    app = App()
    _, transport = await _connect(app)
    writer = _writer(app)
    await app.send({"type": "websocket.close", "code": 4408, "reason": "slow consumer"})
    assert not writer.open
    written = bytes(transport.written)
    with pytest.raises(ClientDisconnected):
        writer.write(text_frame(b"late"))
    assert transport.written == written  # the close frame stays the last one
    app.release.set()


async def test_nothing_is_written_after_the_client_sent_a_close() -> None:
    app = App()
    protocol, _ = await _connect(app)
    writer = _writer(app)
    protocol.data_received(_client_frame(Frame(Opcode.CLOSE, Close(1000, "bye").serialize())))
    assert not writer.open
    with pytest.raises(ClientDisconnected):
        writer.write(text_frame(b"late"))
    app.release.set()


async def test_nothing_is_written_after_uvicorn_shuts_the_connection_down() -> None:
    app = App()
    protocol, _ = await _connect(app)
    writer = _writer(app)
    protocol.shutdown()  # 1012, written by uvicorn without the app
    assert not writer.open
    with pytest.raises(ClientDisconnected):
        writer.write(text_frame(b"late"))
    app.release.set()


async def test_pings_are_still_answered_between_raw_frames() -> None:
    app = App()
    protocol, transport = await _connect(app)
    writer = _writer(app)
    transport.written.clear()
    writer.write(text_frame(b"a"))
    protocol.data_received(_client_frame(Frame(Opcode.PING, b"p")))
    writer.write(text_frame(b"b"))
    pong = Frame(Opcode.PONG, b"p").serialize(mask=False)
    assert bytes(transport.written) == text_frame(b"a") + pong + text_frame(b"b")
    app.release.set()


async def test_drain_waits_for_resume_writing_and_fails_once_the_connection_is_lost() -> None:
    app = App()
    protocol, _ = await _connect(app)
    writer = _writer(app)
    await writer.drain()  # not paused: returns at once
    protocol.pause_writing()
    assert writer.paused
    waiter = asyncio.create_task(writer.drain())
    await asyncio.sleep(0)
    assert not waiter.done()
    protocol.resume_writing()
    await asyncio.wait_for(waiter, 1)
    protocol.pause_writing()
    waiter = asyncio.create_task(writer.drain())
    await asyncio.sleep(0)
    protocol.connection_lost(None)
    with pytest.raises(ClientDisconnected):
        await asyncio.wait_for(waiter, 1)
    assert not writer.open
    app.release.set()
