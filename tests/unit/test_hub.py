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


# -- direct writers (Herald's own WebSocket server: no sender task wake-up) -----------------


class Direct:
    """A session's direct writer: takes messages while ``accept``; records them."""

    def __init__(self, accept: bool = True, fail: bool = False) -> None:
        self.accept, self.fail = accept, fail
        self.written: list[int] = []

    def __call__(self, message: LiveMessage) -> bool:
        if self.fail:
            raise OSError("broken transport")
        if self.accept:
            self.written.append(message.seq)
        return self.accept


def queued(s: StreamSession) -> list[object]:
    items = []
    while not s.queue.empty():
        items.append(s.queue.get_nowait())
    return [item.seq if isinstance(item, LiveMessage) else item for item in items]


async def test_direct_writes_happen_after_the_dispatch_in_one_callback_in_order() -> None:
    hub, a, b = Hub(), session(), session()
    writers = [Direct(), Direct()]
    a.direct, b.direct = writers
    hub.register(a)
    hub.register(b)
    hub.dispatch(live("orders.x", 1))
    hub.dispatch(live("orders.x", 2))
    hub.dispatch(live("billing.x", 3))  # not wanted
    assert [w.written for w in writers] == [[], []]  # the publisher is answered first
    await asyncio.sleep(0)
    assert [w.written for w in writers] == [[1, 2], [1, 2]]
    assert queued(a) == queued(b) == []


async def test_a_message_the_writer_cannot_take_is_queued_and_later_ones_behind_it() -> None:
    hub, s = Hub(), session(size=8)
    writer = Direct(accept=False)
    s.direct = writer
    hub.register(s)
    hub.dispatch(live("orders.x", 1))
    await asyncio.sleep(0)
    writer.accept = True
    hub.dispatch(live("orders.x", 2))  # something is queued: no direct write past it
    await asyncio.sleep(0)
    assert writer.written == []
    assert queued(s) == [1, 2]


async def test_a_queued_heartbeat_keeps_messages_behind_it() -> None:
    hub, s = Hub(), session(size=8)
    writer = Direct()
    s.direct = writer
    hub.register(s)
    hub.dispatch(live("orders.x", 1))
    s.queue.put_nowait(HEARTBEAT)  # between the dispatch and the deferred write
    await asyncio.sleep(0)
    assert writer.written == []
    assert queued(s) == [HEARTBEAT, 1]


async def test_a_failing_writer_does_not_stop_the_fan_out_to_others() -> None:
    hub, bad, good = Hub(), session(), session()
    bad.direct, good.direct = Direct(fail=True), (writer := Direct())
    hub.register(bad)
    hub.register(good)
    hub.dispatch(live("orders.x", 1))
    await asyncio.sleep(0)
    assert writer.written == [1]
    assert queued(bad) == [1]


async def test_a_full_queue_still_cuts_a_direct_session_off() -> None:
    hub, s = Hub(), session(size=2)
    s.direct = Direct(accept=False)  # e.g. its transport's buffer is full
    hub.register(s)
    for seq in range(1, 4):
        hub.dispatch(live("orders.x", seq))
        await asyncio.sleep(0)
    assert s.closing is not None
    assert s.closing.code == CLOSE_SLOW_CONSUMER


# -- the topic index ------------------------------------------------------------------------
async def test_literal_and_wildcard_sessions_get_exactly_their_topics() -> None:
    hub = Hub()
    exact, two, wild = session("a.b"), session("a.c,a.b"), session("a.*")
    for s in (exact, two, wild):
        hub.register(s)
    hub.dispatch(live("a.b", 1))
    hub.dispatch(live("a.c", 2))
    hub.dispatch(live("a.d", 3))
    hub.dispatch(live("b.b", 4))
    assert [m.seq for m in drain(exact)] == [1]
    assert [m.seq for m in drain(two)] == [1, 2]  # once each, though two patterns
    assert [m.seq for m in drain(wild)] == [1, 2, 3]


async def test_resubscribe_and_unregister_keep_the_index_right() -> None:
    hub = Hub()
    s = session("a.b")
    hub.register(s)
    hub.resubscribe(s, [TopicPattern.parse("c.>")])
    hub.dispatch(live("a.b", 1))
    hub.dispatch(live("c.d", 2))
    assert [m.seq for m in drain(s)] == [2]
    hub.resubscribe(s, [TopicPattern.parse("e.f")])
    hub.dispatch(live("c.d", 3))
    hub.dispatch(live("e.f", 4))
    assert [m.seq for m in drain(s)] == [4]
    hub.unregister(s)
    hub.dispatch(live("e.f", 5))
    assert drain(s) == []
    assert len(hub) == 0
    assert hub._by_tenant == {}  # nothing left behind in the index


async def test_resubscribe_of_an_unregistered_session_only_sets_its_patterns() -> None:
    hub = Hub()
    s = session("a.b")
    hub.resubscribe(s, [TopicPattern.parse("x.y")])
    assert [p.text for p in s.patterns] == ["x.y"]
    assert len(hub) == 0
