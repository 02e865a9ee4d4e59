"""The store's templates, scheduled messages, notification log and fallback steps.

Runs on SQLite and PostgreSQL like the rest of the contract (see ``test_store_contract``).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest
from tests.storage.factories import T0, message, new_tenant, sink, uid

from herald.errors import IntegrityConflict
from herald.storage import Store
from herald.storage.base import (
    DeliveryRecord,
    NotifyRecord,
    RecipientRecord,
    ScheduledRecord,
    TemplateRecord,
)


def template(tenant_id: str, name: str = "welcome", spec: str = '{"v":1}') -> TemplateRecord:
    return TemplateRecord(tenant_id, name, 0, spec, T0, "app:admin")


def scheduled(tenant_id: str, *, due: timedelta = timedelta(0)) -> ScheduledRecord:
    return ScheduledRecord(
        id=uid(),
        tenant_id=tenant_id,
        app_id="app-1",
        topic="orders.shipped",
        deliver_at=T0 + due,
        state="scheduled",
        request=b"sealed request",
        created_at=T0,
        updated_at=T0,
    )


def delivery(
    tenant_id: str, message_id: str, *, step: int, state: str, channel: str = "webhook"
) -> DeliveryRecord:
    return DeliveryRecord(
        id=uid(),
        message_id=message_id,
        tenant_id=tenant_id,
        channel=channel,
        endpoint=f"ep-{uid()[:8]}",
        state=state,
        attempts=0,
        last_error=None,
        created_at=T0,
        updated_at=T0,
        recipient="alice",
        next_attempt_at=T0 + timedelta(seconds=60 * step),
        step=step,
        fallback_after=60 if step else None,
    )


# -- templates ----------------------------------------------------------------------------------
async def test_template_versions_count_up_and_never_change(store: Store) -> None:
    tid = await new_tenant(store)
    first = await store.add_template(template(tid, spec='{"v":1}'))
    second = await store.add_template(template(tid, spec='{"v":2}'))
    other = await store.add_template(template(tid, "other"))
    assert (first.version, second.version, other.version) == (1, 2, 1)
    newest = await store.get_template(tid, "welcome")
    assert newest is not None
    assert (newest.version, newest.spec) == (2, '{"v":2}')
    old = await store.get_template(tid, "welcome", 1)
    assert old is not None
    assert old.spec == '{"v":1}'
    assert await store.get_template(tid, "welcome", 3) is None
    listed = await store.list_templates(tid)
    assert [(t.name, t.version) for t in listed] == [("other", 1), ("welcome", 2)]


async def test_templates_are_tenant_scoped(store: Store) -> None:
    mine, theirs = await new_tenant(store), await new_tenant(store)
    await store.add_template(template(mine))
    assert await store.get_template(theirs, "welcome") is None
    assert await store.list_templates(theirs) == []
    assert (await store.add_template(template(theirs))).version == 1


async def test_concurrent_template_saves_get_distinct_versions(store: Store) -> None:
    tid = await new_tenant(store)

    async def save(n: int) -> int | None:
        try:
            return (await store.add_template(template(tid, spec=f'{{"n":{n}}}'))).version
        except IntegrityConflict:
            return None  # the service retries once; the store never overwrites

    versions = [v for v in await asyncio.gather(*(save(n) for n in range(5))) if v is not None]
    assert len(versions) == len(set(versions))


# -- scheduled messages -------------------------------------------------------------------------
async def test_scheduled_messages_are_stored_with_their_audit_entry(store: Store) -> None:
    tid = await new_tenant(store)
    later = scheduled(tid, due=timedelta(hours=1))
    result = await store.publish([], [sink("scheduled")], scheduled=[later])
    stored = await store.get_scheduled(tid, later.id)
    assert stored is not None
    assert (stored.state, stored.request, stored.seq) == ("scheduled", b"sealed request", 0)
    assert stored.leaf_hash == result.leaf_hashes[0]
    assert await store.get_scheduled(await new_tenant(store), later.id) is None


async def test_only_due_scheduled_messages_are_claimed_once(store: Store) -> None:
    tid = await new_tenant(store)
    due, not_due = scheduled(tid), scheduled(tid, due=timedelta(minutes=5))
    await store.publish([], [sink(), sink()], scheduled=[due, not_due])
    lease = T0 + timedelta(seconds=60)
    claimed = await store.claim_scheduled("node-a", T0, lease, 10)
    assert [s.id for s in claimed] == [due.id]
    assert claimed[0].lease_owner == "node-a"
    assert await store.claim_scheduled("node-b", T0, lease, 10) == []  # leased
    # The lease runs out (node-a died): node-b may take it.
    after = lease + timedelta(seconds=1)
    again = await store.claim_scheduled("node-b", after, after + timedelta(minutes=1), 10)
    assert [(s.id, s.lease_owner) for s in again] == [(due.id, "node-b")]


async def test_release_publishes_exactly_once(store: Store) -> None:
    tid = await new_tenant(store)
    later = scheduled(tid)
    await store.publish([], [sink()], scheduled=[later])
    msg = replace(message(tid), id=later.id)
    await store.publish([msg], [sink()], release=later.id)
    stored = await store.get_scheduled(tid, later.id)
    assert stored is not None
    assert (stored.state, stored.request) == ("published", b"")
    assert await store.get_message(tid, later.id) is not None
    # A second release (another node, a retry) stores nothing.
    with pytest.raises(IntegrityConflict):
        await store.publish([replace(message(tid), id=uid())], [sink()], release=later.id)
    assert await store.audit_size() == 2


async def test_cancel_erases_the_request_and_blocks_the_release(store: Store) -> None:
    tid = await new_tenant(store)
    later = scheduled(tid)
    await store.publish([], [sink()], scheduled=[later])
    assert not await store.cancel_scheduled(await new_tenant(store), later.id, "x", T0)
    assert await store.cancel_scheduled(tid, later.id, "changed my mind", T0)
    assert not await store.cancel_scheduled(tid, later.id, "twice", T0)
    stored = await store.get_scheduled(tid, later.id)
    assert stored is not None
    assert (stored.state, stored.request, stored.reason) == ("cancelled", b"", "changed my mind")
    with pytest.raises(IntegrityConflict):
        await store.publish([replace(message(tid), id=later.id)], [sink()], release=later.id)
    assert await store.get_message(tid, later.id) is None


async def test_cancel_under_a_lease_needs_the_lease(store: Store) -> None:
    tid = await new_tenant(store)
    later = scheduled(tid)
    await store.publish([], [sink()], scheduled=[later])
    await store.claim_scheduled("node-a", T0, T0 + timedelta(minutes=1), 10)
    assert not await store.cancel_scheduled(tid, later.id, "x", T0, owner="node-b")
    assert await store.cancel_scheduled(tid, later.id, "x", T0, owner="node-a")


# -- preferences and the notification log -------------------------------------------------------
async def test_recipient_preferences_and_notifications(store: Store) -> None:
    tid = await new_tenant(store)
    await store.put_recipient(RecipientRecord(tid, "alice", '{"locale":"en"}', T0), [])
    assert await store.recipient_preferences(tid, ["alice", "bob"]) == {"alice": '{"locale":"en"}'}
    assert await store.recipient_preferences(await new_tenant(store), ["alice"]) == {}
    msg = message(tid, recipients=("alice",))
    old = NotifyRecord(tid, "alice", uid(), "news", b"d" * 32, T0 - timedelta(days=8))
    new = NotifyRecord(tid, "alice", msg.id, "news", None, T0)
    await store.publish([msg], [sink()], notified=[old, new])
    since = await store.notifications_since(tid, ["alice"], T0 - timedelta(hours=1))
    assert [n.message_id for n in since] == [msg.id]
    assert len(await store.notifications_since(tid, ["alice"], T0 - timedelta(days=9))) == 2
    assert await store.notifications_since(tid, ["bob"], T0 - timedelta(days=9)) == []
    assert await store.purge_notifications(T0 - timedelta(days=7)) == 1
    assert len(await store.notifications_since(tid, ["alice"], T0 - timedelta(days=9))) == 1


# -- fallback steps -----------------------------------------------------------------------------
async def test_fallback_steps_start_and_close(store: Store) -> None:
    tid = await new_tenant(store)
    msg = message(tid, recipients=("alice",))
    first = delivery(tid, msg.id, step=0, state="pending")
    second = delivery(tid, msg.id, step=1, state="waiting")
    third = delivery(tid, msg.id, step=2, state="waiting", channel="email")
    await store.publish([msg], [sink()], None, [first, second, third])
    assert await store.due_fallbacks(T0, 10) == []
    due = await store.due_fallbacks(T0 + timedelta(seconds=60), 10)
    assert due == [(tid, msg.id, "alice")]
    later = T0 + timedelta(minutes=10)
    started = await store.start_step(tid, msg.id, "alice", 1, at=T0, next_deadline=later, now=T0)
    assert started == 1
    # A second node deciding the same thing changes nothing.
    assert await store.start_step(tid, msg.id, "alice", 1, at=T0, next_deadline=None, now=T0) == 0
    rows = {d.id: d for d in await store.deliveries(tid, msg.id)}
    assert rows[second.id].state == "pending"
    assert rows[third.id].next_attempt_at == later
    closed = await store.close_waiting(
        tid, msg.id, "alice", state="skipped", reason="delivered", now=T0
    )
    assert [(d.id, d.state) for d in closed] == [(third.id, "skipped")]
    assert (
        await store.close_waiting(tid, msg.id, "alice", state="skipped", reason="delivered", now=T0)
        == []
    )
    rows = {d.id: d for d in await store.deliveries(tid, msg.id)}
    assert (rows[third.id].state, rows[third.id].last_error) == ("skipped", "delivered")
    # Waiting rows are never claimed by the dispatcher.
    claimed = await store.claim_deliveries("node", later, later + timedelta(minutes=1), 10)
    assert {d.id for d in claimed} == {first.id, second.id}
