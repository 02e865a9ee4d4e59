"""The cluster bus: Redis Pub/Sub carries framed messages; the database decides their order.

Every node publishes the messages it committed to one Pub/Sub channel, and every node —
the publisher included — hands them to its live sessions through a *sequencer* that
emits in ``seq`` order, each seq once:

* ``seq`` is the message's audit index, assigned under a lock held until commit, so commit
  order is seq order across all nodes. Pub/Sub arrival order is not (two nodes publish
  independently), so the sequencer asks the database which seqs exist above its cursor
  (one indexed query per batch of notifications) and emits them in that order.
* A message whose frame has not arrived (yet) is waited for :data:`GRACE` seconds, then
  loaded from the database and framed here (``load``), so a Pub/Sub message lost to a
  Redis outage or a slow subscriber is never lost to the stream.
* Without notifications the sequencer still polls every :data:`POLL_INTERVAL` seconds.
* A frame is emitted only if its message id is the one the database committed under that
  seq: Pub/Sub channels are global to a Redis server (not per database number), so another
  Herald deployment sharing the Redis announces *its* seqs on the same channel. Such a
  frame is dropped and the message is loaded instead (before this check, a foreign frame
  could take the place of ours and our message never reached the live sessions).

Pub/Sub was chosen over Redis Streams because replay between nodes is already the
database's job (resume reads history by seq); a stream would store every frame twice.
Publishing never raises after the commit: a failed PUBLISH is logged and counted, and the
other nodes find the message by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from herald.bus.base import LiveMessage
from herald.observability.logging import get_logger

__all__ = ["GRACE", "POLL_INTERVAL", "RedisBus"]

#: Seconds the sequencer polls the database without notifications (Redis down or idle).
POLL_INTERVAL = 1.0
#: Seconds a committed message's frame may lag its commit before it is loaded instead.
GRACE = 0.25
#: Seqs read per sequencer query, and frames kept while waiting to be emitted.
_BATCH = 1000
_CACHE_MAX = 50_000
#: Back-off bounds (seconds) of the Pub/Sub reader after a Redis failure.
_RETRY_MIN, _RETRY_MAX = 0.1, 5.0

_log = get_logger("herald.bus")


class _Wire(msgspec.Struct, array_like=True):
    tenant_id: str
    topic: str
    seq: int
    id: str
    recipients: tuple[str, ...]
    frame: str
    sse: bytes
    per_recipient: dict[str, tuple[str, bytes]] | None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[_Wire])


def _encode(messages: list[LiveMessage]) -> bytes:
    return _encoder.encode(
        [
            _Wire(m.tenant_id, m.topic, m.seq, m.id, m.recipients, m.frame, m.sse, m.per_recipient)
            for m in messages
        ]
    )


def _decode(payload: bytes, now: float) -> list[LiveMessage]:
    return [
        LiveMessage(
            tenant_id=w.tenant_id,
            topic=w.topic,
            seq=w.seq,
            id=w.id,
            recipients=w.recipients,
            frame=w.frame,
            sse=w.sse,
            published_at=now,
            per_recipient=w.per_recipient,
        )
        for w in _decoder.decode(payload)
    ]


class RedisBus:
    """Cross-node fan-out in commit order (see the module docstring).

    Args:
        redis: A ``redis.asyncio.Redis`` client (its own connection for Pub/Sub is taken).
        index: ``(after_seq, limit)`` → ``(seq, id)`` of the committed messages above
            ``after_seq``, by seq.
        load: Frames the messages of these seqs from the database (a message that cannot
            be framed any more, e.g. of a shredded tenant, is left out).
        start_after: The seq the sequencer starts after (the last one committed at start).
        channel: The Pub/Sub channel.
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        redis: Any,
        *,
        index: Callable[[int, int], Awaitable[list[tuple[int, str]]]],
        load: Callable[[list[int]], Awaitable[list[LiveMessage]]],
        start_after: int,
        channel: str = "herald:bus",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._index = index
        self._load = load
        self._channel = channel
        self._clock = clock
        self._handlers: list[Callable[[LiveMessage], None]] = []
        self._cursor = start_after
        self._frames: dict[int, LiveMessage] = {}
        self._waiting_since: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        #: Counters for ``herald cluster status`` and the metrics endpoint.
        self.published = 0
        self.publish_failures = 0
        self.loaded = 0
        #: Frames dropped because their id is not the message committed under their seq.
        self.foreign = 0

    @property
    def cursor(self) -> int:
        """The last seq handed to the sessions of this node."""
        return self._cursor

    def subscribe(self, handler: Callable[[LiveMessage], None]) -> None:
        """Register a handler (called in seq order, each message once)."""
        self._handlers.append(handler)

    async def start(self) -> None:
        """Start the Pub/Sub reader and the sequencer."""
        self._tasks = [
            asyncio.create_task(self._read(), name="herald-bus-reader"),
            asyncio.create_task(self._sequence(), name="herald-bus-sequencer"),
        ]

    async def publish(self, messages: list[LiveMessage]) -> None:
        """Announce committed messages to every node; never raises (polling covers loss)."""
        if not messages:
            return
        try:
            await self._redis.publish(self._channel, _encode(messages))
            self.published += len(messages)
        except Exception as exc:  # noqa: BLE001 - committed already: the poll delivers it
            self.publish_failures += 1
            _log.warning("bus publish failed; nodes will poll", error=type(exc).__name__)
        self._wake.set()

    async def close(self) -> None:
        """Stop reading and sequencing; forget the handlers."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self._handlers.clear()
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    # -- receiving ------------------------------------------------------------------------
    def _accept(self, payload: bytes) -> None:
        try:
            messages = _decode(payload, self._clock())
        except (msgspec.DecodeError, msgspec.ValidationError):
            _log.warning("bus message of an unknown format ignored")
            return
        for message in messages:
            if message.seq > self._cursor:
                self._frames[message.seq] = message
        while len(self._frames) > _CACHE_MAX:  # the oldest are loaded from the database
            del self._frames[min(self._frames)]
        self._wake.set()

    async def _read(self) -> None:
        delay = _RETRY_MIN
        while not self._closed:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                delay = _RETRY_MIN
                self._wake.set()  # catch up on what was published while disconnected
                while not self._closed:
                    item = await pubsub.get_message(timeout=POLL_INTERVAL)
                    if item is not None and item.get("type") == "message":
                        self._accept(item["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis down: retry, the poll covers it
                _log.warning("bus reader lost Redis; retrying", error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    # -- ordering -------------------------------------------------------------------------
    async def _sequence(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=POLL_INTERVAL)
            self._wake.clear()
            try:
                more = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - database hiccup: try again next round
                _log.warning("bus sequencer step failed", error=type(exc).__name__)
                await asyncio.sleep(POLL_INTERVAL)
                continue
            if more:
                self._wake.set()

    async def _step(self) -> bool:
        """Emit what is committed above the cursor, in order; True when more may be ready."""
        committed = await self._index(self._cursor, _BATCH)
        seqs = [seq for seq, _ in committed]
        for seq, message_id in committed:
            frame = self._frames.get(seq)
            if frame is not None and frame.id != message_id:
                del self._frames[seq]  # another deployment's seq on this Redis: not ours
                self.foreign += 1
        now = self._clock()
        missing = [s for s in seqs if s not in self._frames]
        overdue = [s for s in missing if now - self._waiting_since.setdefault(s, now) >= GRACE]
        if overdue:
            for loaded in await self._load(missing):
                self._frames.setdefault(loaded.seq, loaded)
            self.loaded += len(missing)
            for seq in missing:
                self._waiting_since.pop(seq, None)
        for seq in seqs:
            message = self._frames.pop(seq, None)
            if message is None:
                if seq in self._waiting_since:
                    # Not arrived yet and not overdue: wait for it (keeps the order).
                    self._schedule_wake(GRACE)
                    return False
                # Loaded but unframeable (e.g. content shredded): skipped for everyone.
            else:
                self._emit(message)
            self._cursor = seq
        for stale in [s for s in self._frames if s <= self._cursor]:
            del self._frames[stale]
        return len(committed) == _BATCH

    def _emit(self, message: LiveMessage) -> None:
        for handler in self._handlers:
            try:
                handler(message)
            except Exception as exc:  # noqa: BLE001 - one bad handler must not stop the bus
                _log.error("bus handler failed", error=type(exc).__name__)

    def _schedule_wake(self, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self._wake.set)
