"""The store's queries for cluster operations: lease counts, queue totals, lease release.

Runs on SQLite and PostgreSQL like the rest of the contract (see ``test_store_contract``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from tests.storage.factories import T0, message, new_tenant, sink
from tests.storage.test_store_plans import delivery, scheduled

from herald.storage import Store


async def test_queue_totals_and_lease_counts(store: Store) -> None:
    tid = await new_tenant(store)
    msg = message(tid, recipients=("alice",))
    rows = [delivery(tid, msg.id, step=0, state="pending") for _ in range(3)]
    # Due after the pending ones: claimed last.
    retrying = delivery(tid, msg.id, step=0, state="retrying")
    rows.append(replace(retrying, next_attempt_at=T0 + timedelta(seconds=30)))
    rows.append(delivery(tid, msg.id, step=0, state="pending", channel="inapp"))  # not counted
    await store.publish([msg], [sink()], None, rows)
    now = T0 + timedelta(minutes=1)
    totals = await store.queue_totals(now)
    assert (totals.pending, totals.retrying, totals.sending, totals.expired_leases) == (3, 1, 0, 0)
    assert totals.leases_by_owner == {}

    lease = now + timedelta(seconds=30)
    assert len(await store.claim_deliveries("a/1", now, lease, 2)) == 2
    assert len(await store.claim_deliveries("b/2", now, lease, 1)) == 1
    totals = await store.queue_totals(now)
    assert (totals.pending, totals.retrying, totals.sending) == (0, 1, 3)
    assert totals.leases_by_owner == {"a/1": 2, "b/2": 1}
    assert await store.count_leases("a/1", now) == 2
    assert await store.count_leases("a/other", now) == 0

    # The leases run out: they are expired, no longer anybody's.
    later = lease + timedelta(seconds=1)
    totals = await store.queue_totals(later)
    assert (totals.sending, totals.expired_leases, totals.leases_by_owner) == (3, 3, {})
    assert await store.count_leases("a/1", later) == 0

    # A graceful stop gives the leases back: due at once.
    assert await store.release_leases("a/1", now) == 2
    totals = await store.queue_totals(now)
    assert (totals.retrying, totals.sending, totals.leases_by_owner) == (3, 1, {"b/2": 1})


async def test_scheduled_leases_are_given_back(store: Store) -> None:
    tid = await new_tenant(store)
    due = scheduled(tid)
    await store.publish([], [sink()], scheduled=[due])
    lease = T0 + timedelta(minutes=10)
    assert [s.id for s in await store.claim_scheduled("a/1", T0, lease, 10)] == [due.id]
    assert await store.claim_scheduled("b/2", T0, lease, 10) == []
    assert await store.release_scheduled("b/2") == 0  # not b's
    assert await store.release_scheduled("a/1") == 1
    again = await store.claim_scheduled("b/2", T0, lease, 10)
    assert [(s.id, s.lease_owner) for s in again] == [(due.id, "b/2")]


async def test_messages_above_a_cursor_are_counted_up_to_a_cap(store: Store) -> None:
    tid = await new_tenant(store)
    for _ in range(4):
        await store.publish([message(tid)], [sink()])
    last = await store.last_message_seq()
    assert await store.count_messages_after(-1, 100) == 4
    assert await store.count_messages_after(-1, 3) == 3
    assert await store.count_messages_after(last, 100) == 0
