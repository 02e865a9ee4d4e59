"""Routing inside a group commit (herald.service.routing.route with ``pending``).

Requests committed together are routed one after the other before any of them is in the
notification log: each must see the notifications of the requests routed before it.
"""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

from tests.storage.factories import T0, message, new_tenant, uid

from herald.core.ids import default_generator
from herald.core.messages import PublishRequest
from herald.service.routing import Routing, Targets, route
from herald.storage.base import EndpointRecord, NotifyRecord
from herald.storage.sql import SqlStore

DIGEST = b"d" * 32


def routing(tenant_id: str, recipient: str) -> Routing:
    record = message(tenant_id, recipients=(recipient,))
    request = PublishRequest(topic=record.topic, recipients=[recipient])
    return Routing(record, request, DIGEST, 60)


async def test_a_pending_notification_of_the_group_suppresses_the_same_content(
    store: SqlStore,
) -> None:
    tenant = await new_tenant(store)
    rt = SimpleNamespace(store=store, ids=default_generator())  # what route() uses
    endpoint = EndpointRecord(uid(), tenant, "ann", "webhook", b"sealed", T0)
    found = Targets(["ann"], [endpoint], {})
    first = routing(tenant, "ann")

    alone = await route(rt, tenant, [first], found, T0)  # type: ignore[arg-type]
    assert [d.state for d in alone.deliveries] == ["pending"]
    earlier = [NotifyRecord(tenant, "ann", first.record.id, None, DIGEST, T0)]

    second = routing(tenant, "ann")
    grouped = await route(rt, tenant, [second], found, T0, pending=earlier)  # type: ignore[arg-type]
    assert [d.state for d in grouped.deliveries] == ["suppressed"]
    assert grouped.suppressed == {second.record.id: 1}


async def test_pending_rows_of_other_tenants_recipients_or_times_do_not_count(
    store: SqlStore,
) -> None:
    tenant = await new_tenant(store)
    rt = SimpleNamespace(store=store, ids=default_generator())
    found = Targets(["ann"], [EndpointRecord(uid(), tenant, "ann", "webhook", b"s", T0)], {})
    unrelated = [
        NotifyRecord("another-tenant", "ann", uid(), None, DIGEST, T0),
        NotifyRecord(tenant, "bob", uid(), None, DIGEST, T0),
        NotifyRecord(tenant, "ann", uid(), None, DIGEST, T0 - timedelta(seconds=61)),
    ]
    routed = await route(rt, tenant, [routing(tenant, "ann")], found, T0, pending=unrelated)  # type: ignore[arg-type]
    assert [d.state for d in routed.deliveries] == ["pending"]
