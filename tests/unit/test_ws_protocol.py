"""The raw writer of HeraldWebSocketProtocol, over uvicorn's real sans-I/O protocol, and
the stream sender over it (or over ``websocket.send_text`` when it is absent).

The transport is a memory fake (bytes written, closing state, pause/resume); the handshake,
frames from the client and the ASGI app are real, so the states the writer checks are the
ones uvicorn and ``websockets`` actually reach.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest
import uvicorn
from starlette.websockets import WebSocket
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from herald.bus.base import LiveMessage
from herald.core.topics import TopicPattern
from herald.core.wsframe import text_frame
from herald.observability.metrics import Metrics
from herald.server import streams, ws_protocol
from herald.server.ws_protocol import HeraldWebSocketProtocol, RawWriter, raw_writer
from herald.service.runtime import Runtime
from herald.streams.hub import HEARTBEAT, Heartbeat, Hub, StreamSession


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


# -- the stream sender over either writer ---------------------------------------------------


def _live(seq: int, text: str) -> LiveMessage:
    return LiveMessage("t", "a.b", seq, f"m{seq}", (), text, b"", time.monotonic())


def _stream() -> tuple[StreamSession, Runtime]:
    session = StreamSession(
        tenant_id="t", recipient="r", patterns=[TopicPattern.parse("a.>")], queue_size=256,
        transport="websocket",
    )  # fmt: skip
    return session, cast(Runtime, SimpleNamespace(metrics=Metrics()))


def _metric(rt: Runtime, name: str, **labels: str) -> float:
    value = rt.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def _run_sender(websocket: Any, rt: Runtime, session: StreamSession) -> None:
    """Run the sender until the queue is empty and it waits again; then stop it."""
    task = asyncio.create_task(streams._ws_sender(rt, cast(WebSocket, websocket), session))
    for _ in range(100):
        await asyncio.sleep(0)
        if session.queue.empty():
            break
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_raw_sender_writes_a_backlog_in_one_write_in_order_without_duplicates() -> None:
    app = App()
    _, transport = await _connect(app)
    session, rt = _stream()
    session.last_seq = 1
    items: list[LiveMessage | Heartbeat] = [_live(1, "old"), _live(2, "two"), HEARTBEAT]
    items += [_live(3, "three"), _live(3, "three again")]
    for item in items:
        session.queue.put_nowait(item)
    transport.written.clear()
    await _run_sender(SimpleNamespace(scope=app.scope), rt, session)
    client = ClientProtocol(parse_uri("wss://127.0.0.1/"), state=State.OPEN)
    client.receive_data(bytes(transport.written))
    texts = [bytes(e.data).decode() for e in client.events_received() if isinstance(e, Frame)]
    assert texts[0] == "two"
    assert json.loads(texts[1])["type"] == "heartbeat"
    assert texts[2:] == ["three"]
    assert session.last_seq == 3
    assert _metric(rt, "herald_websocket_streams_total", writer="raw") == 1
    assert _metric(rt, "herald_publish_to_deliver_seconds_count") == 2  # one per delivery
    app.release.set()


async def test_raw_sender_splits_a_large_backlog_into_bounded_writes() -> None:
    app = App()
    _, transport = await _connect(app)
    session, rt = _stream()
    writes: list[bytes] = []
    transport.write = writes.append  # type: ignore[method-assign,assignment]
    text = "x" * 20_000
    for seq in range(10):
        session.queue.put_nowait(_live(seq, text))
    await _run_sender(SimpleNamespace(scope=app.scope), rt, session)
    frame = text_frame(text.encode())
    assert b"".join(writes) == frame * 10
    assert len(writes) > 1
    assert max(len(w) for w in writes) <= streams._COALESCE_BYTES + len(frame)
    app.release.set()


async def test_sender_falls_back_to_send_text_without_the_raw_writer() -> None:
    """Under another server (no ``herald.ws.raw`` extension): ASGI ``websocket.send``."""
    sent: list[str] = []

    async def send_text(text: str) -> None:
        sent.append(text)

    session, rt = _stream()
    for item in (_live(1, "one"), HEARTBEAT, _live(1, "dup"), _live(2, "two")):
        session.queue.put_nowait(item)
    await _run_sender(SimpleNamespace(scope={"extensions": {}}, send_text=send_text), rt, session)
    assert sent[0] == "one"
    assert json.loads(sent[1])["type"] == "heartbeat"
    assert sent[2:] == ["two"]
    assert _metric(rt, "herald_websocket_streams_total", writer="asgi") == 1
    assert _metric(rt, "herald_websocket_streams_total", writer="raw") == 0


async def test_raw_sender_takes_fan_out_directly_and_queues_while_the_transport_is_paused() -> None:
    app = App()
    protocol, transport = await _connect(app)
    session, rt = _stream()
    hub = Hub()
    hub.register(session)
    task = asyncio.create_task(streams._ws_sender(rt, cast(WebSocket, app), session))
    await asyncio.sleep(0)
    assert session.direct is not None
    transport.written.clear()
    hub.dispatch(_live(1, "one"))
    await asyncio.sleep(0)
    assert bytes(transport.written) == text_frame(b"one")  # written by the fan-out itself
    protocol.pause_writing()  # the client reads too slowly
    hub.dispatch(_live(2, "two"))
    hub.dispatch(_live(3, "three"))
    await asyncio.sleep(0)
    assert bytes(transport.written) == text_frame(b"one")
    assert session.queue.qsize() >= 1  # waiting in the queue, bounded: 4408 when full
    protocol.resume_writing()
    for _ in range(10):
        await asyncio.sleep(0)
    assert bytes(transport.written) == b"".join(text_frame(t) for t in (b"one", b"two", b"three"))
    assert session.last_seq == 3
    assert _metric(rt, "herald_publish_to_deliver_seconds_count") == 3
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert session.direct is None
    app.release.set()
