"""The console's queries (activity, delivery counts, message search) and the operator writes
behind it (app scopes, one added endpoint), on every backend."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

import pytest
from tests.storage.factories import T0, message, new_tenant, sink, uid

from herald.storage.base import (
    AppRecord,
    DeliveryRecord,
    EndpointRecord,
    MessageQuery,
    MessageRecord,
    RecipientRecord,
)
from herald.storage.sql import SqlStore


def _delivery(
    m: MessageRecord,
    state: str,
    *,
    recipient: str = "alice",
    channel: str = "webhook",
    at: datetime = T0,
) -> DeliveryRecord:
    return DeliveryRecord(
        id=uid(),
        message_id=m.id,
        tenant_id=m.tenant_id,
        channel=channel,
        endpoint=f"ep-{uid()[:8]}",
        state=state,
        attempts=1 if state != "pending" else 0,
        last_error="HTTP 500" if state in {"failed", "dead"} else None,
        created_at=m.created_at,
        updated_at=at,
        recipient=recipient,
    )


async def _publish(
    store: SqlStore, m: MessageRecord, deliveries: list[DeliveryRecord] | None = None
) -> MessageRecord:
    result = await store.publish([m], [sink()], channel_deliveries=deliveries or [])
    return dataclasses.replace(m, seq=result.seqs[0])


async def test_activity_counts_per_bucket_of_one_tenant(store: SqlStore) -> None:
    tid, other = await new_tenant(store), await new_tenant(store)
    end = T0.replace(second=30, microsecond=0)  # 12:00:30: the last bucket is 12:00-12:01
    at = [end - timedelta(minutes=k) for k in (0, 0, 2, 9)]  # 9 min back is out of 5 buckets
    sent = [dataclasses.replace(message(tid), created_at=t) for t in at]
    await _publish(store, sent[0], [_delivery(sent[0], "delivered", at=end)])
    await _publish(
        store,
        sent[1],
        [
            _delivery(sent[1], "dead", at=end),
            _delivery(sent[1], "failed", at=end - timedelta(minutes=1)),
        ],
    )
    await _publish(store, sent[2], [_delivery(sent[2], "pending", at=end)])
    await _publish(store, sent[3])
    noise = dataclasses.replace(message(other), created_at=end)
    await _publish(store, noise, [_delivery(noise, "delivered", at=end)])

    series = await store.activity(tid, end, 60, 5)

    assert series.bucket == 60
    assert series.start == (int(end.timestamp()) // 60 - 4) * 60
    assert series.published == [0, 0, 1, 0, 2]
    assert series.delivered == [0, 0, 0, 0, 1]
    assert series.failed == [0, 0, 0, 1, 1]
    assert (await store.activity(uid(), end, 60, 5)).published == [0] * 5


async def test_delivery_counts_and_states_per_message(store: SqlStore) -> None:
    tid = await new_tenant(store)
    first = await _publish(store, message(tid), [])
    m = message(tid)
    await _publish(
        store,
        m,
        [
            _delivery(m, "delivered"),
            _delivery(m, "delivered", channel="email"),
            _delivery(m, "dead"),
        ],
    )
    assert await store.delivery_counts(tid) == [
        ("email", "delivered", 1),
        ("webhook", "dead", 1),
        ("webhook", "delivered", 1),
    ]
    states = await store.delivery_states(tid, [m.id, first.id])
    assert states == {m.id: {"delivered": 2, "dead": 1}}
    assert await store.delivery_states(uid(), [m.id]) == {}
    assert await store.delivery_states(tid, []) == {}


async def test_search_filters_and_pages_newest_first(store: SqlStore) -> None:
    tid, other = await new_tenant(store), await new_tenant(store)
    made: list[MessageRecord] = []
    for k, topic in enumerate(["orders.created", "orders.shipped", "billing.due", "orders"]):
        m = dataclasses.replace(message(tid, topic=topic), created_at=T0 + timedelta(minutes=k))
        state = "dead" if topic == "billing.due" else "delivered"
        made.append(await _publish(store, m, [_delivery(m, state, recipient=f"r{k % 2}")]))
    await _publish(store, message(other, topic="orders.created"))

    async def ids(**query: Any) -> list[str]:
        found = await store.search_messages(MessageQuery(tid, **query), 10)
        return [m.id for m in found]

    newest_first = [m.id for m in reversed(made)]
    assert await ids() == newest_first
    assert await ids(topic="orders.created") == [made[0].id]
    # A prefix keeps its dot: "orders.>" is not "orders" itself, nor "ordersx".
    assert await ids(topic="orders.>") == [made[1].id, made[0].id]
    assert await ids(recipient="r1") == [made[3].id, made[1].id]
    assert await ids(state="dead") == [made[2].id]
    assert await ids(state="dead", recipient="r1") == []
    assert await ids(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == [
        made[2].id,
        made[1].id,
    ]
    page = await store.search_messages(MessageQuery(tid), 2)
    rest = await store.search_messages(MessageQuery(tid, before_seq=page[-1].seq), 2)
    assert [m.id for m in page + rest] == newest_first
    assert page[0].seq > page[1].seq > rest[0].seq
    assert await ids(topic="nothing.here") == []


async def test_set_app_scopes_replaces_them_and_cuts_tokens(store: SqlStore) -> None:
    tid = await new_tenant(store)
    app = AppRecord("app-s", tid, "shop", b"hash", ("publish:orders.>",), False, T0)
    await store.create_app(app)
    later = T0 + timedelta(minutes=5)
    assert await store.set_app_scopes("app-s", ("subscribe:orders.>", "admin"), later)
    changed = await store.get_app("app-s")
    assert changed is not None
    assert changed.scopes == ("subscribe:orders.>", "admin")
    assert changed.tokens_not_before == later
    assert not await store.set_app_scopes("nope", ("admin",), later)
    with pytest.raises(ValueError, match="one non-empty word"):
        await store.set_app_scopes("app-s", ("a b",), later)


async def test_add_endpoint_creates_the_recipient_and_stops_at_the_cap(store: SqlStore) -> None:
    tid = await new_tenant(store)
    person = RecipientRecord(tid, "alice", "{}", T0)

    def endpoint() -> EndpointRecord:
        return EndpointRecord(f"ep_{uid()[:12]}", tid, "alice", "webpush", b"sealed", T0)

    first = endpoint()
    assert await store.add_endpoint(person, first, cap=2)
    found = await store.get_recipient(tid, "alice")
    assert found is not None
    assert [e.id for e in found[1]] == [first.id]
    second = endpoint()
    assert await store.add_endpoint(person, second, cap=2)
    assert not await store.add_endpoint(person, endpoint(), cap=2)
    found = await store.get_recipient(tid, "alice")
    assert found is not None
    assert {e.id for e in found[1]} == {first.id, second.id}
