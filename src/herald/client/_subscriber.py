"""The asynchronous subscriber: a resuming, de-duplicating WebSocket stream reader."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidMessage,
    InvalidStatus,
    WebSocketException,
)

from herald.client._e2e import DeviceKey, E2EDecryptionError, open_e2e_frame
from herald.client._errors import HeraldClientError, StreamClosed, problem_from_http
from herald.client._receipts import Receipt, verify_receipt
from herald.client._transport import (
    USER_AGENT,
    backoff_delay,
    connection_failed,
    is_certificate_error,
    make_async_client,
    make_ssl_context,
)
from herald.errors import DecryptionFailed

__all__ = [
    "FATAL_CLOSE_CODES",
    "RETRYABLE_CLOSE_CODES",
    "STREAM_MESSAGE_MAX",
    "AsyncSubscriber",
    "StreamMessage",
]

logger = logging.getLogger("herald.client")

#: Largest server frame accepted (bytes). A message body is capped at 64 KiB by the server;
#: JSON escaping and the envelope can grow that several times, so allow 1 MiB and no more.
STREAM_MESSAGE_MAX = 1024 * 1024
#: Close codes after which reconnecting (with ``since``) is expected to work: going away,
#: abnormal closure (network), internal error, service restart, try again later, and
#: Herald's slow-consumer cut-off.
RETRYABLE_CLOSE_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 4408})
#: Close codes that retrying cannot fix (bad request, token invalid or expired, pattern
#: outside the token's scope, policy violation, frame too large). Any other code that is
#: not a normal closure is treated the same way: an unknown refusal is not retried blindly.
FATAL_CLOSE_CODES = frozenset({4400, 4401, 4403, 1008, 1009})
#: How many recent message ids are remembered to drop re-sent duplicates after a resume.
DEDUP_WINDOW = 1024
#: First reconnect waits up to this long (seconds); the ceiling doubles up to max_backoff.
RECONNECT_BASE = 0.25

_NORMAL_CLOSURE = 1000
_ABNORMAL_CLOSURE = 1006
_TOO_MANY_REQUESTS = 429
_NOT_IMPLEMENTED = 501


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One message received on the stream.

    Attributes:
        id: The message id (UUIDv7); the cursor to resume after it.
        topic: The topic it was published to.
        title: Its title, if any.
        body: Its body text, if any.
        data: Its JSON data object, if any.
        priority: ``low``, ``normal``, ``high`` or ``urgent``.
        created_at: When it was accepted, as sent by the server.
        audit_index: Index of its audit-log entry.
        leaf_hash: Hex leaf hash of its audit-log entry.
        raw: The whole frame as received.
        e2e: Whether the message was end-to-end encrypted. With a subscriber's
            ``device_key`` its title, body and data were opened from this device's payload;
            without one they are ``None`` and ``raw["e2e"]`` holds the sealed payloads.
    """

    id: str
    topic: str
    title: str | None
    body: str | None
    data: dict[str, Any] | None
    priority: str | None
    created_at: str | None
    audit_index: int | None
    leaf_hash: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    e2e: bool = False

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> StreamMessage | None:
        """Build a message from a ``{"type": "message", ...}`` frame; ``None`` if malformed."""
        message_id, topic = frame.get("id"), frame.get("topic")
        if not isinstance(message_id, str) or not message_id or not isinstance(topic, str):
            return None
        audit = frame.get("audit")
        audit = audit if isinstance(audit, dict) else {}
        data = frame.get("data")
        created_at = frame.get("created_at")
        return cls(
            id=message_id,
            topic=topic,
            title=_optional_str(frame.get("title")),
            body=_optional_str(frame.get("body")),
            data=data if isinstance(data, dict) else None,
            priority=_optional_str(frame.get("priority")),
            created_at=None if created_at is None else str(created_at),
            audit_index=audit.get("index") if isinstance(audit.get("index"), int) else None,
            leaf_hash=_optional_str(audit.get("leaf_hash")),
            raw=frame,
            e2e=frame.get("e2e") is not None,
        )


class _Transient(Exception):
    """A connection attempt failed in a way that a later attempt may not."""

    def __init__(self, error: HeraldClientError) -> None:
        super().__init__(str(error))
        self.error = error


class AsyncSubscriber:
    """Reads a subscriber's real-time stream (``GET /v1/stream``, WebSocket).

    An async iterator of :class:`StreamMessage`. When the connection drops or the server
    goes away it reconnects with backoff and resumes with ``since=<last id>``; a message the
    server re-sends after a resume is not yielded twice. Heartbeat and ready frames are
    consumed silently.

    Example::

        async with AsyncSubscriber(url, token, topics=["orders.>"], ca=ca) as sub:
            async for message in sub:
                print(message.topic, message.title)

    Args:
        base_url: The server's base URL (``https://`` gives ``wss://``, ``http://`` ``ws://``).
        token: A subscriber token (from ``AsyncPublisher.subscriber_token``); it is sent in
            the ``Authorization`` header, never in the URL.
        topics: Patterns to subscribe to; default: every pattern of the token.
        since: Resume after this message id.
        ca: A CA file to trust instead of the system store.
        reconnect: Reconnect after a retryable closure; if false, it raises StreamClosed.
        max_backoff: Longest wait between reconnection attempts (seconds).
        open_timeout: Longest wait for the connection and WebSocket handshake (seconds).
        auto_ack: Acknowledge each message once the caller asks for the next one (or closes).
        device_key: This device's registered end-to-end key. End-to-end messages are then
            opened: their title, body and data are filled in from this device's payload.
            When a message has no payload for this device or it does not open,
            ``__anext__`` raises :class:`~herald.client.E2EDecryptionError` for it; the
            iterator stays usable and the next call continues with the next message (the
            failed one is not re-sent on resume, nor acknowledged automatically). Without
            a key, end-to-end messages are yielded sealed (see :attr:`StreamMessage.e2e`).

    Raises:
        ValueError: ``device_key`` has no ``device_id`` (register the device first).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        topics: list[str] | None = None,
        since: str | None = None,
        ca: str | Path | None = None,
        reconnect: bool = True,
        max_backoff: float = 10.0,
        open_timeout: float = 10.0,
        auto_ack: bool = False,
        device_key: DeviceKey | None = None,
    ) -> None:
        if device_key is not None and not device_key.device_id:
            raise ValueError("device_key has no device_id: register the device first")
        self._base_url = base_url.rstrip("/")
        self._stream_url, secure = _stream_url(self._base_url)
        self._ssl = make_ssl_context(ca) if secure else None
        self._ca = ca
        self._http: httpx.AsyncClient | None = None  # for receipts, created on first use
        self._token = token
        self._topics = list(topics) if topics is not None else None
        self._last_id = since
        self._reconnect = reconnect
        self._max_backoff = max_backoff
        self._open_timeout = open_timeout
        self._auto_ack = auto_ack
        self._device_key = device_key
        self._ws: ClientConnection | None = None
        self._connected_once = False
        self._failures = 0
        self._closed = False
        self._finished = False
        self._pending_acks: deque[str] = deque()
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self._ready_count = 0

    @property
    def last_id(self) -> str | None:
        """Id of the last message received (initially ``since``): the cursor to resume from.

        That is the last message yielded, or one refused with ``E2EDecryptionError``.
        """
        return self._last_id

    @property
    def ready_count(self) -> int:
        """How many ``ready`` frames arrived, i.e. how many times a subscription started."""
        return self._ready_count

    async def __aenter__(self) -> Self:
        if self._ws is None:
            self._ws = await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StreamMessage:
        while True:
            if self._closed or self._finished:
                raise StopAsyncIteration
            if self._ws is None:
                self._ws = await self._open()
                continue
            ws = self._ws
            try:
                await self._flush_acks(ws)
                frame = await ws.recv()
            except ConnectionClosed as exc:
                self._ws = None
                await self._after_close(exc)
                continue
            message = self._handle_frame(frame)
            if message is None:
                continue
            self._failures = 0  # the connection works: the next outage starts from scratch
            if message.id in self._seen:
                continue  # re-sent after a resume: already yielded
            self._remember(message.id)
            self._last_id = message.id
            if message.e2e and self._device_key is not None:
                # Raised after the cursor moved on: the next call reads the next message.
                message = self._open_e2e(message, self._device_key)
            if self._auto_ack:
                self._pending_acks.append(message.id)
            return message

    async def ack(self, message_id: str) -> None:
        """Acknowledge a message: marks the recipient's in-app delivery ``delivered``.

        If the connection is down, the ack is sent as soon as it is back.

        Args:
            message_id: The id of a message received on this stream.
        """
        if self._closed:
            raise HeraldClientError("the subscriber is closed")
        self._pending_acks.append(message_id)
        if self._ws is not None:
            # On a closure the iterator reconnects and the ack, still queued, follows.
            with contextlib.suppress(ConnectionClosed):
                await self._flush_acks(self._ws)

    async def verify_receipt(
        self, message: StreamMessage, *, audit_key: str, wait: float = 15.0
    ) -> Receipt:
        """Prove that ``message`` is in Herald's audit log (a verifiable delivery receipt).

        Herald logs every message it accepts; the message carries the index and leaf hash of
        its ``message.published`` entry. This reads the latest signed checkpoint (waiting up
        to ``wait`` seconds for one that covers the entry), verifies its note with
        ``audit_key``, checks that the entry at ``message.audit_index`` hashes to
        ``message.leaf_hash`` and records the publication of ``message.id``, and verifies
        the entry's RFC 9162 inclusion proof against the signed root. So the platform cannot
        deliver a message it did not log.

        The requests use this subscriber's token and TLS settings.

        **Pin the key.** ``audit_key`` is the audit verifier key you trust, obtained once
        — for example from ``GET /.well-known/herald-audit-key`` when the app is set up, or
        shipped with it — and stored. Never fetch it from the server at verification time:
        a server able to forge receipts could then serve a key of its own as well.

        Args:
            message: A message received on this stream (or one just like it).
            audit_key: The pinned verifier key, ``<origin>+<key id>+<base64 key>``.
            wait: Longest wait (seconds) for a signed checkpoint that covers the entry;
                Herald signs one every few seconds.

        Returns:
            The :class:`~herald.client.Receipt`: index, leaf hash, and the signed checkpoint
            (size, root, note) the entry was proven against. Keep it as evidence.

        Raises:
            ReceiptInvalid: Any check failed or could not be made in time (the cause is
                chained); an unverified receipt must not be trusted.
            HeraldClientError: The subscriber is closed.
        """
        if self._closed:
            raise HeraldClientError("the subscriber is closed")
        if self._http is None:
            self._http = make_async_client(_http_url(self._base_url), ca=self._ca)
        return await verify_receipt(
            self._http, self._token, message, audit_key=audit_key, wait=wait
        )

    async def close(self) -> None:
        """Send outstanding acks (best effort) and close the connection."""
        if self._closed:
            return
        self._closed = True
        ws, self._ws = self._ws, None
        http, self._http = self._http, None
        try:
            if ws is not None:
                with contextlib.suppress(ConnectionClosed):
                    await self._flush_acks(ws)
                await ws.close()
        finally:
            if http is not None:
                await http.aclose()

    # -- internals -----------------------------------------------------------------------

    @staticmethod
    def _open_e2e(message: StreamMessage, key: DeviceKey) -> StreamMessage:
        try:
            title, body, data = open_e2e_frame(message.raw, message.id, key)
        except DecryptionFailed:
            raise E2EDecryptionError(message) from None
        return replace(message, title=title, body=body, data=data)

    async def _flush_acks(self, ws: ClientConnection) -> None:
        while self._pending_acks:
            message_id = self._pending_acks[0]
            await ws.send(json.dumps({"type": "ack", "id": message_id}))
            self._pending_acks.popleft()

    async def _after_close(self, exc: ConnectionClosed) -> None:
        if self._closed:
            raise StopAsyncIteration
        # The server's close frame if one arrived; else ours (we close with 1009 on an
        # oversized frame: retrying would fetch the same frame again); else the network
        # failed (RFC 6455 §7.1.5: 1006 is never sent, it means "no close frame").
        close = exc.rcvd if exc.rcvd is not None else exc.sent
        code = close.code if close is not None else _ABNORMAL_CLOSURE
        reason = close.reason if close is not None else ""
        if code == _NORMAL_CLOSURE:
            self._finished = True
            raise StopAsyncIteration
        if code not in RETRYABLE_CLOSE_CODES or not self._reconnect:
            self._finished = True
            raise StreamClosed(code, reason)
        logger.info("stream closed with code %d (%s); reconnecting", code, reason)
        await self._backoff()

    async def _backoff(self) -> None:
        delay = backoff_delay(self._failures, base=RECONNECT_BASE, cap=self._max_backoff)
        self._failures += 1
        await asyncio.sleep(delay)

    async def _open(self) -> ClientConnection:
        while True:
            try:
                ws = await self._connect_once()
            except _Transient as exc:
                if not (self._connected_once and self._reconnect):
                    self._finished = True
                    raise exc.error from exc.__cause__
                logger.info("reconnecting failed: %s", exc.error)
                await self._backoff()
                continue
            except HeraldClientError:
                self._finished = True
                raise
            self._connected_once = True
            if self._closed:  # close() was called while we were connecting
                await ws.close()
                raise StopAsyncIteration
            return ws

    async def _connect_once(self) -> ClientConnection:
        options: dict[str, Any] = {}
        if self._ssl is not None:
            options["ssl"] = self._ssl
        try:
            return await connect(
                self._resume_url(),
                additional_headers={"Authorization": f"Bearer {self._token}"},
                user_agent_header=USER_AGENT,
                max_size=STREAM_MESSAGE_MAX,
                open_timeout=self._open_timeout,
                # Compressing secrets next to attacker-influenced text leaks them (CRIME).
                compression=None,
                # Environment proxies would route the bearer token elsewhere; be explicit.
                proxy=None,
                **options,
            )
        except InvalidStatus as exc:
            response = exc.response
            status = response.status_code
            problem = problem_from_http(
                status,
                response.headers.get("Content-Type"),
                bytes(response.body or b""),
                response.reason_phrase,
            )
            if status == _TOO_MANY_REQUESTS or (status >= 500 and status != _NOT_IMPLEMENTED):
                raise _Transient(problem) from exc
            raise problem from exc
        except (OSError, TimeoutError, InvalidMessage) as exc:
            failure = connection_failed(self._base_url, exc)
            if is_certificate_error(exc):
                raise failure from exc
            raise _Transient(failure) from exc
        except WebSocketException as exc:
            raise connection_failed(self._base_url, exc) from exc

    def _resume_url(self) -> str:
        params: dict[str, str] = {}
        if self._topics is not None:
            params["topics"] = ",".join(self._topics)
        if self._last_id is not None:
            params["since"] = self._last_id
        if not params:
            return self._stream_url
        return f"{self._stream_url}?{urlencode(params, safe=',*', quote_via=quote)}"

    def _handle_frame(self, data: str | bytes) -> StreamMessage | None:
        try:
            frame = json.loads(data)
        except ValueError:
            logger.warning("ignoring a stream frame that is not JSON")
            return None
        if not isinstance(frame, dict):
            return None
        kind = frame.get("type")
        if kind == "message":
            message = StreamMessage.from_frame(frame)
            if message is None:
                logger.warning("ignoring a malformed message frame")
            return message
        if kind == "ready":
            self._ready_count += 1
        elif kind == "error":
            problem = frame.get("problem")
            detail = problem.get("detail") if isinstance(problem, dict) else None
            logger.warning("the server refused a client frame: %s", detail)
        # heartbeat frames, and frame types of future protocol versions, are ignored
        return None

    def _remember(self, message_id: str) -> None:
        self._seen.add(message_id)
        self._seen_order.append(message_id)
        if len(self._seen_order) > DEDUP_WINDOW:
            self._seen.discard(self._seen_order.popleft())


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _http_url(base_url: str) -> str:
    """The REST base URL of ``base_url`` (a ``ws``/``wss`` URL maps to ``http``/``https``)."""
    parts = urlsplit(base_url)
    schemes = {"https": "https", "wss": "https", "http": "http", "ws": "http"}
    return urlunsplit((schemes[parts.scheme.lower()], parts.netloc, parts.path, "", ""))


def _stream_url(base_url: str) -> tuple[str, bool]:
    parts = urlsplit(base_url)
    schemes = {"https": "wss", "wss": "wss", "http": "ws", "ws": "ws"}
    scheme = schemes.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"base_url must be an https:// or http:// URL, not {base_url!r}")
    path = parts.path.rstrip("/") + "/v1/stream"
    return urlunsplit((scheme, parts.netloc, path, "", "")), scheme == "wss"
