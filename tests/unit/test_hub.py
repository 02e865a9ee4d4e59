"""The hub: routing to sessions, bounded queues, slow consumers, heartbeats (no sockets)."""

from __future__ import annotations

import asyncio

from herald.bus.base import LiveMessage
from herald.core.topics import TopicPattern
from herald.streams.hub import (
    CLOSE_GOING_AWAY,
    CLOSE_SLOW_CONSUMER,
    HEARTBEAT,
    Hub,
    StreamSession,
)


def live(topic: str, seq: int, tenant: str = "t1", recipients: tuple[str, ...] = ()) -> LiveMessage:
    return LiveMessage(tenant, topic, seq, f"id-{seq}", recipients, "{}", b"", 0.0)


def session(patterns: str = "orders.>", *, recipient: str = "r1", size: int = 4) -> StreamSession:
    return StreamSession(
        tenant_id="t1",
        recipient=recipient,
        patterns=[TopicPattern.parse(p) for p in patterns.split(",")],
        queue_size=size,
        transport="websocket",
        now=0.0,
        heartbeat_interval=10.0,
    )


async def test_dispatch_routes_by_tenant_pattern_and_recipient() -> None:
    hub = Hub()
    a, b = session("orders.*"), session("billing.>", recipient="r2")
    hub.register(a)
    hub.register(b)
    hub.dispatch(live("orders.x", 1))
    hub.dispatch(live("orders.x.y", 2))  # * is one token
    hub.dispatch(live("billing.x", 3, recipients=("r1",)))  # b is r2
    hub.dispatch(live("orders.x", 4, tenant="t2"))  # other tenant
    hub.dispatch(live("billing.x.y", 5, recipients=("r2",)))
    assert [m.seq for m in drain(a)] == [1]
    assert [m.seq for m in drain(b)] == [5]


def drain(s: StreamSession) -> list[LiveMessage]:
    out = []
    while not s.queue.empty():
        item = s.queue.get_nowait()
        assert isinstance(item, LiveMessage)
        out.append(item)
    return out


async def test_full_queue_closes_only_the_slow_session() -> None:
    hub = Hub()
    slow, fast = session(size=2), session(size=100)
    hub.register(slow)
    hub.register(fast)
    for seq in range(5):
        hub.dispatch(live("orders.a", seq))
    assert slow.closing is not None
    assert slow.closing.code == CLOSE_SLOW_CONSUMER
    assert slow.closed.is_set()
    assert slow.queue.qsize() == 2  # nothing more is queued once it is cut off
    assert fast.closing is None
    assert [m.seq for m in drain(fast)] == [0, 1, 2, 3, 4]


async def test_unregister_and_len() -> None:
    hub = Hub()
    s = session()
    hub.register(s)
    assert len(hub) == 1
    hub.unregister(s)
    hub.unregister(s)  # idempotent
    assert len(hub) == 0
    hub.dispatch(live("orders.a", 1))
    assert s.queue.empty()


async def test_heartbeats_are_due_per_session_and_staggered() -> None:
    now = [0.0]
    hub = Hub(clock=lambda: now[0])
    sessions = [session() for _ in range(50)]
    for s in sessions:
        hub.register(s)
    phases = {round(s.next_heartbeat, 3) for s in sessions}
    assert len(phases) > 40  # random phases, not one instant for everyone
    assert all(0.1 <= s.next_heartbeat <= 10.0 for s in sessions)
    now[0] = 5.0
    first = hub.heartbeat_due(10.0)
    assert 0 < first < 50
    now[0] = 10.0
    assert hub.heartbeat_due(10.0) == 50 - first  # the rest; the early ones are not yet due
    now[0] = 14.0
    assert hub.heartbeat_due(10.0) == 0
    for s in sessions:
        assert s.queue.get_nowait() is HEARTBEAT


async def test_heartbeat_never_overflows_a_full_queue() -> None:
    now = [100.0]
    hub = Hub(clock=lambda: now[0])
    s = session(size=1)
    hub.register(s)
    hub.dispatch(live("orders.a", 1))
    assert hub.heartbeat_due(10.0) == 0
    assert s.closing is None


async def test_run_heartbeats_ticks_until_cancelled() -> None:
    hub = Hub()
    s = session()
    s.next_heartbeat = 0.0
    hub.register(s)
    task = asyncio.create_task(hub.run_heartbeats(0.5))
    item = await asyncio.wait_for(s.queue.get(), timeout=5)
    task.cancel()
    assert item is HEARTBEAT


async def test_shutdown_closes_every_session_going_away() -> None:
    hub = Hub()
    sessions = [session(), session("billing.>")]
    for s in sessions:
        hub.register(s)
    hub.shutdown()
    assert all(s.closing is not None and s.closing.code == CLOSE_GOING_AWAY for s in sessions)


async def test_queue_depths_sum_and_max_over_every_tenant() -> None:
    hub = Hub()
    assert hub.queue_depths() == (0, 0)
    a, b = session("orders.>", size=8), session("billing.>", size=8)
    other = StreamSession(
        tenant_id="t2",
        recipient="r9",
        patterns=[TopicPattern.parse("orders.>")],
        queue_size=8,
        transport="sse",
    )
    for s in (a, b, other):
        hub.register(s)
    for seq in range(3):
        hub.dispatch(live("orders.a", seq))
    hub.dispatch(live("billing.a", 3))
    hub.dispatch(live("orders.a", 4, tenant="t2"))
    assert hub.queue_depths() == (5, 3)  # a: 3, b: 1, other (t2): 1
    drain(a)
    assert hub.queue_depths() == (2, 1)
    hub.unregister(b)
    assert hub.queue_depths() == (1, 1)
