"""WebSocket (RFC 6455) and Server-Sent Events endpoints over the hub's sessions.

A session is registered with the hub *before* history is read, so nothing committed in
between is missed; live copies of replayed messages are skipped by ``seq``. Each connection
has a sender (queue → socket, heartbeats when idle, staggered) and, for WebSocket, a receiver
(acks, subscription changes). A full queue closes the connection with 4408 without slowing
anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from herald import limits
from herald.bus.base import LiveMessage
from herald.core.ids import parse_message_id
from herald.core.wsframe import text_frame
from herald.crypto.tokens import SubscriberClaims
from herald.errors import ApiError, BadRequest, Forbidden, InvalidToken, RateLimited
from herald.observability.logging import get_logger
from herald.server.requests import bearer_token
from herald.server.responses import problem_body
from herald.server.ws_protocol import RawWriter, raw_writer
from herald.service import streams
from herald.service.messages import invalid_cursor
from herald.service.runtime import Runtime
from herald.streams.hub import (
    CLOSE_BAD_REQUEST,
    CLOSE_FORBIDDEN,
    CLOSE_RATE_LIMITED,
    CLOSE_UNAUTHORIZED,
    Heartbeat,
    StreamSession,
)

__all__ = ["stream_routes"]

_log = get_logger("herald.streams")


class _ClientFrame(msgspec.Struct, tag_field="type", forbid_unknown_fields=True):
    pass


class Ack(_ClientFrame, tag="ack"):
    """``{"type": "ack", "id": …}``."""

    id: str


class Subscribe(_ClientFrame, tag="subscribe"):
    """``{"type": "subscribe", "topics": [...]}``."""

    topics: list[str]


_FRAME_DECODER = msgspec.json.Decoder(Ack | Subscribe)
#: A backlog of queued frames goes to a socket in few writes: at most this many frames, and
#: no more frames once this many bytes are gathered (a write may exceed the transport's
#: high-water mark by that much, no more).
_COALESCE_FRAMES = 64
_COALESCE_BYTES = 64 * 1024
_ENCODER = msgspec.json.Encoder()


def _close_code(error: ApiError) -> int:
    if isinstance(error, InvalidToken):
        return CLOSE_UNAUTHORIZED
    if isinstance(error, Forbidden):
        return CLOSE_FORBIDDEN
    if isinstance(error, RateLimited):
        return CLOSE_RATE_LIMITED
    return CLOSE_BAD_REQUEST


async def _open_session(
    rt: Runtime, claims: SubscriberClaims, topics: str | None, transport: str
) -> StreamSession:
    patterns = streams.resolve_patterns(claims, topics)
    return StreamSession(
        tenant_id=claims.tenant_id,
        recipient=claims.recipient,
        patterns=patterns,
        queue_size=rt.settings.stream_queue_size,
        transport=transport,
        now=time.monotonic(),
        heartbeat_interval=rt.settings.heartbeat_interval,
    )


async def websocket_stream(websocket: WebSocket) -> None:
    """``GET /v1/stream`` (WebSocket)."""
    rt: Runtime = websocket.app.state.runtime
    await websocket.accept()
    try:
        claims, _ = await streams.authenticate_stream(
            rt,
            bearer=bearer_token(websocket),
            ticket=websocket.query_params.get("ticket"),
        )
        session = await _open_session(rt, claims, websocket.query_params.get("topics"), "websocket")
        since = websocket.query_params.get("since")
        since_id = parse_message_id(since) if since else None
    except ApiError as exc:
        await websocket.close(_close_code(exc), exc.detail[:120])
        return

    rt.hub.register(session)
    rt.metrics.stream_opened("websocket")
    reason = "client_closed"
    try:
        replayed = 0
        if since_id is not None:
            try:
                async for seq, frame, _ in streams.catch_up(rt, session, since_id):
                    await websocket.send_text(frame)
                    session.last_seq = seq
                    replayed += 1
            except ApiError as exc:
                await websocket.close(_close_code(exc), exc.detail[:120])
                reason = exc.slug
                return
        await websocket.send_text(
            _ENCODER.encode(
                {
                    "type": "ready",
                    "topics": [p.text for p in session.patterns],
                    "resumed": replayed,
                    # Seconds between heartbeats on an idle stream: a client that hears
                    # nothing for a few of them knows the connection is dead.
                    "heartbeat": rt.settings.heartbeat_interval,
                }
            ).decode()
        )
        reason = await _run_websocket(rt, websocket, session, claims)
    except (WebSocketDisconnect, OSError, RuntimeError):
        reason = "disconnected"
    finally:
        rt.hub.unregister(session)
        rt.metrics.stream_closed("websocket", reason)


async def _run_websocket(
    rt: Runtime, websocket: WebSocket, session: StreamSession, claims: SubscriberClaims
) -> str:
    sender = asyncio.create_task(_ws_sender(rt, websocket, session))
    receiver = asyncio.create_task(_ws_receiver(rt, websocket, session, claims))
    closed = asyncio.create_task(session.closed.wait())
    try:
        await asyncio.wait({sender, receiver, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, receiver, closed):
            task.cancel()
        results = await asyncio.gather(sender, receiver, closed, return_exceptions=True)
    for result in results[:2]:
        # Disconnects are normal; anything else is a bug worth a log line (no content).
        if isinstance(result, Exception) and not isinstance(
            result, WebSocketDisconnect | OSError | asyncio.CancelledError
        ):
            _log.error("stream task failed", error=type(result).__name__)
    if session.closing is not None:
        # Cut off (slow consumer, shutdown): the close frame may itself be stuck behind
        # the unread data, so it gets a short deadline; the transport is dropped anyway.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                websocket.close(session.closing.code, session.closing.reason), timeout=1.0
            )
        return "slow_consumer" if session.closing.code == 4408 else "server_close"
    return "client_closed"


async def _ws_sender(rt: Runtime, websocket: WebSocket, session: StreamSession) -> None:
    raw = raw_writer(websocket.scope)
    rt.metrics.websocket_writer("raw" if raw is not None else "asgi")
    if raw is not None:
        await _ws_raw_sender(rt, raw, session)
        return
    while True:
        message = await session.queue.get()
        if isinstance(message, Heartbeat):
            await websocket.send_text(_heartbeat_frame().decode())
            continue
        if message.seq <= session.last_seq:
            continue
        await websocket.send_text(message.for_recipient(session.recipient)[0])
        session.last_seq = message.seq
        rt.metrics.observe_fanout(time.monotonic() - message.published_at)


async def _ws_raw_sender(rt: Runtime, raw: RawWriter, session: StreamSession) -> None:
    """The sender under Herald's own server: frames built once per message, written as is.

    Whatever else is already queued goes out in the same write (one TLS record and one
    system call for a backlog instead of one per message). Back-pressure as through ASGI:
    while the transport's buffer is above its high-water mark the sender waits, the queue
    fills, and the hub cuts the session off (4408).
    """
    queue, recipient = session.queue, session.recipient
    observe = rt.metrics.observe_fanout
    holding = False

    def direct(message: LiveMessage) -> bool:
        # Called by the hub's fan-out with nothing queued: write now unless the sender
        # holds frames (order) or the transport is paused or closed (then it is queued).
        if holding or raw.paused or not raw.open:
            return False
        if message.seq > session.last_seq:
            raw.write(message.ws_frame(recipient))
            session.last_seq = message.seq
            observe(time.monotonic() - message.published_at)
        return True

    session.direct = direct
    try:
        while True:
            item = await queue.get()
            holding = True
            if raw.paused:
                await raw.drain()
            frames: list[bytes] = []
            size = 0
            while True:
                if isinstance(item, Heartbeat):
                    frames.append(text_frame(_heartbeat_frame()))
                elif item.seq > session.last_seq:
                    frame = item.ws_frame(recipient)
                    frames.append(frame)
                    size += len(frame)
                    session.last_seq = item.seq
                    observe(time.monotonic() - item.published_at)
                if queue.empty() or len(frames) >= _COALESCE_FRAMES or size >= _COALESCE_BYTES:
                    break
                item = queue.get_nowait()
            if frames:
                raw.write(frames[0] if len(frames) == 1 else b"".join(frames))
            holding = False
    finally:
        session.direct = None


def _heartbeat_frame() -> bytes:
    return _ENCODER.encode({"type": "heartbeat", "time": int(time.time())})


async def _ws_receiver(
    rt: Runtime, websocket: WebSocket, session: StreamSession, claims: SubscriberClaims
) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        text = message.get("text")
        if text is None:
            await _send_error(websocket, BadRequest("client frames are JSON text, not binary"))
            continue
        if len(text) > limits.STREAM_FRAME_MAX:
            session.close(1009, "client frame too large")
            return
        try:
            frame = _FRAME_DECODER.decode(text)
            if isinstance(frame, Ack):
                await _finished_even_if_closed(streams.ack(rt, session, parse_message_id(frame.id)))
            else:
                rt.hub.resubscribe(session, streams.resolve_patterns(claims, frame.topics))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            await _send_error(websocket, BadRequest(f"invalid client frame: {exc}"))
        except ApiError as exc:
            await _send_error(websocket, exc)


#: Acks still being recorded after their stream closed (strong references: the loop keeps
#: only weak ones to tasks).
_unfinished: set[asyncio.Task[None]] = set()


async def _finished_even_if_closed(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end even if the receiver is cancelled meanwhile.

    A client may send an ack and close at once; the close cancels the receiver (the
    stream is over), but the ack it already received is recorded all the same.
    """
    task = asyncio.ensure_future(work)
    _unfinished.add(task)
    task.add_done_callback(_forget)
    await asyncio.shield(task)


def _forget(task: asyncio.Task[None]) -> None:
    _unfinished.discard(task)
    if not task.cancelled():
        task.exception()  # seen: raised to the receiver, or nobody is left to tell


async def _send_error(websocket: WebSocket, error: ApiError) -> None:
    await websocket.send_text(
        _ENCODER.encode({"type": "error", "problem": problem_body(error)}).decode()
    )


class _SseResponse(Response):
    """A streaming ``text/event-stream`` response fed by a session's queue."""

    def __init__(self, rt: Runtime, session: StreamSession, since_id: str | None) -> None:
        super().__init__(
            status_code=200,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            media_type="text/event-stream",
        )
        # An endless stream has no length: Response would announce an empty body.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.rt = rt
        self.session = session
        self.since_id = since_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the stream until the client leaves or the session is closed."""
        del scope
        rt, session = self.rt, self.session
        rt.hub.register(session)
        rt.metrics.stream_opened("sse")
        reason = "client_closed"
        try:
            writer = asyncio.create_task(self._write(send))
            disconnect = asyncio.create_task(_wait_disconnect(receive))
            closed = asyncio.create_task(session.closed.wait())
            try:
                await asyncio.wait(
                    {writer, disconnect, closed}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (writer, disconnect, closed):
                    task.cancel()
                results = await asyncio.gather(writer, disconnect, closed, return_exceptions=True)
            if isinstance(results[0], ApiError):
                reason = results[0].slug
            elif isinstance(results[0], Exception):
                _log.error("sse stream failed", error=type(results[0]).__name__)
                reason = "error"
            if session.closing is not None:
                reason = "slow_consumer" if session.closing.code == 4408 else "server_close"
            if not disconnect.done():
                # End the response properly (shutdown, slow consumer); bounded, because a
                # slow consumer's socket may not take even this.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        send({"type": "http.response.body", "body": b"", "more_body": False}),
                        timeout=1.0,
                    )
        finally:
            rt.hub.unregister(session)
            rt.metrics.stream_closed("sse", reason)

    async def _write(self, send: Send) -> None:
        rt, session = self.rt, self.session
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": b"retry: 2000\n\n", "more_body": True})
        if self.since_id is not None:
            async for seq, _, sse in streams.catch_up(rt, session, self.since_id):
                await send({"type": "http.response.body", "body": sse, "more_body": True})
                session.last_seq = seq
        while True:
            message = await session.queue.get()
            if isinstance(message, Heartbeat):
                await send(
                    {"type": "http.response.body", "body": b": heartbeat\n\n", "more_body": True}
                )
                continue
            if message.seq <= session.last_seq:
                continue
            sse = message.for_recipient(session.recipient)[1]
            await send({"type": "http.response.body", "body": sse, "more_body": True})
            session.last_seq = message.seq
            rt.metrics.observe_fanout(time.monotonic() - message.published_at)


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message: dict[str, Any] = dict(await receive())
        if message["type"] == "http.disconnect":
            return


async def sse_stream(request: Request) -> Response:
    """``GET /v1/stream/sse``: resume with ``Last-Event-ID`` or ``since``."""
    rt: Runtime = request.app.state.runtime
    claims, fields = await streams.authenticate_stream(
        rt, bearer=bearer_token(request), ticket=request.query_params.get("ticket")
    )
    request.state.ratelimit = fields
    session = await _open_session(rt, claims, request.query_params.get("topics"), "sse")
    since = request.headers.get("last-event-id") or request.query_params.get("since")
    since_id = parse_message_id(since) if since else None
    if since_id is not None and await rt.store.message_seq(claims.tenant_id, since_id) is None:
        raise invalid_cursor(since_id)
    return _SseResponse(rt, session, since_id)


def stream_routes() -> list[Route | WebSocketRoute]:
    """The two stream endpoints."""
    return [
        WebSocketRoute("/v1/stream", websocket_stream),
        Route("/v1/stream/sse", sse_stream, methods=["GET"]),
    ]
