"""The hub: every live stream session of this node, and the fan-out into their queues.

Each session owns a bounded queue. Fan-out never waits: it does ``put_nowait``, or, for a
session whose transport can write at once (``StreamSession.direct``: Herald's own WebSocket
server, nothing queued), hands the message to that writer in one deferred callback for
all such sessions. A session whose queue is full is cut off as a slow consumer (close code
4408) instead of slowing the publisher or anyone else. Frames are the same object for every
session (encode once, write many).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from herald.bus.base import LiveMessage
from herald.core.topics import TopicPattern

__all__ = [
    "CLOSE_BAD_REQUEST",
    "CLOSE_FORBIDDEN",
    "CLOSE_GOING_AWAY",
    "CLOSE_RATE_LIMITED",
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_UNAUTHORIZED",
    "HEARTBEAT",
    "Heartbeat",
    "Hub",
    "StreamSession",
]

#: WebSocket close codes (RFC 6455 §7.4; 4000–4999 are ours, documented in docs/api.md).
CLOSE_GOING_AWAY = 1001
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_SLOW_CONSUMER = 4408
#: Too many connections for this subscriber (the HTTP 429 of a WebSocket).
CLOSE_RATE_LIMITED = 4429


class Heartbeat:
    """The queue item that asks a sender to write a heartbeat (one shared instance)."""

    __slots__ = ()


HEARTBEAT: Final = Heartbeat()


@dataclass(slots=True)
class Closing:
    """Why a session is being closed."""

    code: int
    reason: str


class StreamSession:
    """One subscriber connection's routing state and queue."""

    def __init__(
        self,
        *,
        tenant_id: str,
        recipient: str,
        patterns: Iterable[TopicPattern],
        queue_size: int,
        transport: str,
        now: float = 0.0,
        heartbeat_interval: float = 20.0,
    ) -> None:
        self.tenant_id = tenant_id
        self.recipient = recipient
        self.patterns = tuple(patterns)
        self.transport = transport
        self.queue: asyncio.Queue[LiveMessage | Heartbeat] = asyncio.Queue(maxsize=queue_size)
        # Heartbeats to every client at the same instant cause latency spikes
        # (REFERENCES.md): each session starts at a random phase of the interval.
        self.next_heartbeat = now + random.uniform(0.1, heartbeat_interval)  # noqa: S311
        #: Highest seq already sent: live copies of messages replayed from history are
        #: skipped, so resume is gap-free and duplicate-free.
        self.last_seq = -1
        self.closing: Closing | None = None
        self.closed = asyncio.Event()
        #: Set by a transport that can write a message without its sender task: returns
        #: False when it cannot now (closed, buffer full, frames of its own pending).
        self.direct: Callable[[LiveMessage], bool] | None = None

    def wants(self, message: LiveMessage) -> bool:
        """Whether this session should see ``message`` (topic and, if set, recipients)."""
        if message.recipients and self.recipient not in message.recipients:
            return False
        return any(p.matches(message.topic) for p in self.patterns)

    def offer(self, message: LiveMessage) -> bool:
        """Queue ``message`` if wanted; cut the session off when its queue is full.

        Returns True, queueing nothing, when the transport may write the message at once
        (a ``direct`` writer and nothing queued): the caller then calls :meth:`deliver`
        in a later callback.
        """
        if self.closing is not None or not self.wants(message):
            return False
        if self.direct is not None and not self.queue.qsize():
            return True
        self._enqueue(message)
        return False

    def deliver(self, message: LiveMessage) -> None:
        """Write ``message`` through ``direct`` if that is still possible, else queue it.

        Anything queued (a heartbeat, a message the writer could not take) keeps later
        messages queued behind it, so the order stays the order of :meth:`offer`.
        """
        if self.closing is not None:
            return
        direct = self.direct
        if direct is not None and not self.queue.qsize():
            # One broken writer must not stop the fan-out to the others: the message is
            # queued instead, and the session's sender meets the error and ends it.
            with contextlib.suppress(Exception):
                if direct(message):
                    return
        self._enqueue(message)

    def _enqueue(self, message: LiveMessage) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer: too many unsent messages")

    def close(self, code: int, reason: str) -> None:
        """Ask the transport to close the connection with ``code``."""
        if self.closing is None:
            self.closing = Closing(code, reason)
            self.closed.set()


def _deliver(message: LiveMessage, sessions: list[StreamSession]) -> None:
    for session in sessions:
        session.deliver(message)


class _Tenant:
    """One tenant's sessions, indexed by topic for the fan-out.

    A session whose patterns are all literal topics is found by the message's topic; one
    with a wildcard pattern is checked for every message of its tenant. Fan-out to a topic
    then costs its own subscribers, not every connection of the tenant.
    """

    __slots__ = ("by_topic", "sessions", "wild")

    def __init__(self) -> None:
        self.sessions: set[StreamSession] = set()
        self.by_topic: dict[str, set[StreamSession]] = {}
        self.wild: set[StreamSession] = set()

    def add(self, session: StreamSession) -> None:
        self.sessions.add(session)
        if all(p.is_literal for p in session.patterns):
            for pattern in session.patterns:
                self.by_topic.setdefault(pattern.text, set()).add(session)
        else:
            self.wild.add(session)

    def remove(self, session: StreamSession) -> None:
        self.sessions.discard(session)
        self.wild.discard(session)
        for pattern in session.patterns:
            found = self.by_topic.get(pattern.text)
            if found is not None:
                found.discard(session)
                if not found:
                    del self.by_topic[pattern.text]

    def candidates(self, topic: str) -> list[StreamSession]:
        """The sessions that may want a message of ``topic`` (each once)."""
        exact = self.by_topic.get(topic)
        if not exact:
            return list(self.wild)
        return [*exact, *self.wild] if self.wild else list(exact)


class Hub:
    """Sessions by tenant, the synchronous fan-out handler for the bus, and heartbeats."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_tenant: dict[str, _Tenant] = {}
        self._clock = clock

    def register(self, session: StreamSession) -> None:
        """Start routing messages to ``session``."""
        self._by_tenant.setdefault(session.tenant_id, _Tenant()).add(session)

    def unregister(self, session: StreamSession) -> None:
        """Stop routing messages to ``session``."""
        tenant = self._by_tenant.get(session.tenant_id)
        if tenant is not None:
            tenant.remove(session)
            if not tenant.sessions:
                del self._by_tenant[session.tenant_id]

    def resubscribe(self, session: StreamSession, patterns: Iterable[TopicPattern]) -> None:
        """Replace ``session``'s patterns (a subscribe frame), keeping the index right."""
        tenant = self._by_tenant.get(session.tenant_id)
        if tenant is None or session not in tenant.sessions:
            session.patterns = tuple(patterns)
            return
        tenant.remove(session)
        session.patterns = tuple(patterns)
        tenant.add(session)

    def dispatch(self, message: LiveMessage) -> None:
        """Bus handler: offer ``message`` to the sessions of its tenant that may want it.

        Sessions whose transport writes directly get the message in one callback soon
        after (the publish that triggered the fan-out is answered first), with no
        per-session task wake-up; the others through their queues.
        """
        tenant = self._by_tenant.get(message.tenant_id)
        if tenant is None:
            return
        direct = [s for s in tenant.candidates(message.topic) if s.offer(message)]
        if direct:
            asyncio.get_running_loop().call_soon(_deliver, message, direct)

    def __len__(self) -> int:
        return sum(len(t.sessions) for t in self._by_tenant.values())

    def tenant_streams(self, tenant_id: str) -> int:
        """How many streams of one tenant this node holds."""
        tenant = self._by_tenant.get(tenant_id)
        return len(tenant.sessions) if tenant is not None else 0

    def queue_depths(self) -> tuple[int, int]:
        """Frames queued over every session, and in the fullest session's queue.

        One pass over the sessions, for ``/metrics`` (a scrape), never the fan-out path.
        """
        total = largest = 0
        for tenant in self._by_tenant.values():
            for session in tenant.sessions:
                depth = session.queue.qsize()
                total += depth
                largest = max(largest, depth)
        return total, largest

    def heartbeat_due(self, interval: float) -> int:
        """Queue a heartbeat for every session idle since its last one; returns how many.

        One timer for all sessions instead of one per connection: senders only ever wait
        on their queue. A session that is sent messages still gets heartbeats (cheap, and
        the client's liveness check stays simple); a full queue is left alone.
        """
        now = self._clock()
        queued = 0
        for tenant in self._by_tenant.values():
            for session in tenant.sessions:
                if session.next_heartbeat <= now and session.closing is None:
                    session.next_heartbeat = now + interval
                    if not session.queue.full():
                        session.queue.put_nowait(HEARTBEAT)
                        queued += 1
        return queued

    async def run_heartbeats(self, interval: float) -> None:
        """Check for due heartbeats several times per interval, until cancelled."""
        tick = max(0.05, min(1.0, interval / 10))
        while True:
            await asyncio.sleep(tick)
            self.heartbeat_due(interval)

    def shutdown(self) -> None:
        """Tell every session the server is going away (clients reconnect elsewhere)."""
        for tenant in self._by_tenant.values():
            for session in tenant.sessions:
                session.close(CLOSE_GOING_AWAY, "server shutting down")
