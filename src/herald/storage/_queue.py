"""Recipients, endpoints and the delivery work queue of :class:`~herald.storage.sql.SqlStore`.

Work distribution is a lease in the ``deliveries`` row: a node claims due rows by setting
``lease_owner``/``lease_until`` (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so nodes never
claim the same row; SQLite: the single writer lock) and finishes them only while it still
holds the lease. A node that dies mid-delivery leaves its leases to expire; the row is then
due again (at-least-once; receivers de-duplicate by delivery id).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.core.nodes import QueueTotals
from herald.storage import schema as s
from herald.storage.base import DeliveryRecord, EndpointRecord, RecipientRecord

__all__ = ["QueueMixin"]

_DUE_STATES = ("pending", "retrying")
_SENDING = "sending"
_INAPP = "inapp"


def _fields(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


class QueueMixin:
    """Recipient, endpoint and delivery-queue methods (needs ``_tx`` and ``dialect``)."""

    _tx: Callable[..., AbstractAsyncContextManager[AsyncConnection]]
    dialect: str

    # -- recipients and endpoints ----------------------------------------------------------
    async def put_recipient(
        self, recipient: RecipientRecord, endpoints: list[EndpointRecord]
    ) -> None:
        """Create or replace a recipient's preferences and endpoints, in one transaction."""
        r, e = s.recipients, s.endpoints
        async with self._tx(write=True) as conn:
            mine = (r.c.tenant_id == recipient.tenant_id) & (r.c.id == recipient.id)
            changed = await conn.execute(
                update(r)
                .where(mine)
                .values(preferences=recipient.preferences, updated_at=recipient.updated_at)
            )
            if not changed.rowcount:
                await conn.execute(insert(r).values(_fields(recipient)))
            await conn.execute(
                delete(e).where(e.c.tenant_id == recipient.tenant_id, e.c.recipient == recipient.id)
            )
            if endpoints:
                await conn.execute(insert(e), [_fields(x) for x in endpoints])

    async def add_endpoint(
        self, recipient: RecipientRecord, endpoint: EndpointRecord, cap: int
    ) -> bool:
        """Add one endpoint (the recipient is created if new); False at ``cap`` endpoints."""
        r, e = s.recipients, s.endpoints
        mine_r = (r.c.tenant_id == recipient.tenant_id) & (r.c.id == recipient.id)
        mine_e = (e.c.tenant_id == recipient.tenant_id) & (e.c.recipient == recipient.id)
        async with self._tx(write=True) as conn:
            if (await conn.execute(select(r.c.id).where(mine_r))).first() is None:
                await conn.execute(insert(r).values(_fields(recipient)))
            count = await conn.scalar(select(func.count()).select_from(e).where(mine_e))
            if int(count or 0) >= cap:
                return False
            await conn.execute(insert(e).values(_fields(endpoint)))
        return True

    async def get_recipient(
        self, tenant_id: str, recipient: str
    ) -> tuple[RecipientRecord, list[EndpointRecord]] | None:
        """A recipient and its endpoints (disabled ones included), or None."""
        r, e = s.recipients, s.endpoints
        async with self._tx() as conn:
            row = (
                await conn.execute(select(r).where(r.c.tenant_id == tenant_id, r.c.id == recipient))
            ).first()
            if row is None:
                return None
            rows = (
                await conn.execute(
                    select(e)
                    .where(e.c.tenant_id == tenant_id, e.c.recipient == recipient)
                    .order_by(e.c.created_at, e.c.id)
                )
            ).all()
        return RecipientRecord(**row._asdict()), [EndpointRecord(**x._asdict()) for x in rows]

    async def active_endpoints(self, tenant_id: str, recipients: list[str]) -> list[EndpointRecord]:
        """The enabled endpoints of these recipients."""
        if not recipients:
            return []
        e = s.endpoints
        query = (
            select(e)
            .where(
                e.c.tenant_id == tenant_id,
                e.c.recipient.in_(recipients),
                e.c.disabled_at.is_(None),
            )
            .order_by(e.c.created_at, e.c.id)
        )
        async with self._tx() as conn:
            rows = (await conn.execute(query)).all()
        return [EndpointRecord(**x._asdict()) for x in rows]

    async def get_endpoint(self, tenant_id: str, endpoint_id: str) -> EndpointRecord | None:
        """One endpoint of this tenant, or None."""
        e = s.endpoints
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(e).where(e.c.tenant_id == tenant_id, e.c.id == endpoint_id)
                )
            ).first()
        return EndpointRecord(**row._asdict()) if row is not None else None

    async def disable_endpoint(self, endpoint_id: str, now: datetime) -> None:
        """Stop delivering to an endpoint (e.g. the receiver answered 410 Gone)."""
        e = s.endpoints
        async with self._tx(write=True) as conn:
            await conn.execute(
                update(e)
                .where(e.c.id == endpoint_id, e.c.disabled_at.is_(None))
                .values(disabled_at=now)
            )

    # -- the work queue --------------------------------------------------------------------
    async def claim_deliveries(
        self, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[DeliveryRecord]:
        """Lease up to ``limit`` due channel deliveries to ``owner``: sending, attempts + 1."""
        d = s.deliveries
        due = and_(
            d.c.channel != _INAPP,
            or_(
                and_(d.c.state.in_(_DUE_STATES), d.c.next_attempt_at <= now),
                # A node died holding it: the lease ran out.
                and_(d.c.state == _SENDING, d.c.lease_until < now),
            ),
        )
        # The attempt is counted when it starts, so one cut short by a crash still shows.
        rows = await self._lease(
            d,
            due,
            d.c.next_attempt_at,
            limit,
            state=_SENDING,
            attempts=d.c.attempts + 1,
            lease_owner=owner,
            lease_until=lease_until,
            updated_at=now,
        )
        return [DeliveryRecord(**row._asdict()) for row in rows]

    async def _lease(
        self,
        table: Table,
        due: ColumnElement[bool],
        order: ColumnElement[Any],
        limit: int,
        **values: Any,
    ) -> Sequence[Row[Any]]:
        """Pick up to ``limit`` due rows by ``order`` and set ``values`` on them, atomically.

        PostgreSQL skips rows another node has locked (``FOR UPDATE SKIP LOCKED``), so two
        nodes never lease the same row; SQLite has one writer at a time anyway.
        """
        pick = select(table.c.id).where(due).order_by(order).limit(limit)
        if self.dialect == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        async with self._tx(write=True) as conn:
            ids = [row[0] for row in (await conn.execute(pick)).all()]
            if not ids:
                return []
            await conn.execute(update(table).where(table.c.id.in_(ids)).values(**values))
            return (await conn.execute(select(table).where(table.c.id.in_(ids)))).all()

    async def finish_delivery(
        self,
        delivery_id: str,
        owner: str,
        *,
        state: str,
        attempts: int,
        last_error: str | None,
        next_attempt_at: datetime | None,
        now: datetime,
    ) -> bool:
        """Record an attempt's result if ``owner`` still holds the lease (fencing)."""
        d = s.deliveries
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                update(d)
                .where(d.c.id == delivery_id, d.c.lease_owner == owner, d.c.state == _SENDING)
                .values(
                    state=state,
                    attempts=attempts,
                    last_error=last_error,
                    next_attempt_at=next_attempt_at,
                    lease_owner=None,
                    lease_until=None,
                    updated_at=now,
                )
            )
        return bool(result.rowcount)

    async def release_leases(self, owner: str, now: datetime) -> int:
        """Give back every lease of ``owner`` (graceful shutdown): due again at once."""
        d = s.deliveries
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                update(d)
                .where(d.c.lease_owner == owner, d.c.state == _SENDING)
                .values(state="retrying", lease_owner=None, lease_until=None, next_attempt_at=now)
            )
        return int(result.rowcount or 0)

    async def count_leases(self, owner: str, now: datetime) -> int:
        """Delivery leases ``owner`` holds now (the ``state`` index: only sending rows)."""
        d = s.deliveries
        query = select(func.count()).where(
            d.c.state == _SENDING, d.c.lease_owner == owner, d.c.lease_until >= now
        )
        async with self._tx() as conn:
            return int(await conn.scalar(query) or 0)

    async def queue_totals(self, now: datetime) -> QueueTotals:
        """The channel-delivery queue by state, expired leases, and live leases by owner."""
        d = s.deliveries
        channel = d.c.channel != _INAPP
        by_state = (
            select(d.c.state, func.count())
            .where(d.c.state.in_((*_DUE_STATES, _SENDING)), channel)
            .group_by(d.c.state)
        )
        expired = select(func.count()).where(d.c.state == _SENDING, d.c.lease_until < now)
        owners = (
            select(d.c.lease_owner, func.count())
            .where(d.c.state == _SENDING, d.c.lease_until >= now, d.c.lease_owner.is_not(None))
            .group_by(d.c.lease_owner)
        )
        async with self._tx() as conn:
            counts = {str(state): int(n) for state, n in (await conn.execute(by_state)).all()}
            stale = int(await conn.scalar(expired) or 0)
            held = {str(owner): int(n) for owner, n in (await conn.execute(owners)).all()}
        return QueueTotals(
            pending=counts.get("pending", 0),
            retrying=counts.get("retrying", 0),
            sending=counts.get(_SENDING, 0),
            expired_leases=stale,
            leases_by_owner=held,
        )

    async def list_deliveries(
        self, tenant_id: str, state: str | None, limit: int, after_id: str | None = None
    ) -> list[DeliveryRecord]:
        """A tenant's deliveries (optionally in one state), oldest id first."""
        d = s.deliveries
        query = select(d).where(d.c.tenant_id == tenant_id)
        if state is not None:
            query = query.where(d.c.state == state)
        if after_id is not None:
            query = query.where(d.c.id > after_id)
        async with self._tx() as conn:
            rows = (await conn.execute(query.order_by(d.c.id).limit(limit))).all()
        return [DeliveryRecord(**row._asdict()) for row in rows]

    async def get_delivery(self, tenant_id: str, delivery_id: str) -> DeliveryRecord | None:
        """One delivery of this tenant, or None."""
        d = s.deliveries
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(d).where(d.c.tenant_id == tenant_id, d.c.id == delivery_id)
                )
            ).first()
        return DeliveryRecord(**row._asdict()) if row is not None else None

    async def requeue_delivery(
        self, tenant_id: str, delivery_id: str, now: datetime, from_states: tuple[str, ...]
    ) -> bool:
        """Make a finished delivery due again (manual retry of a dead letter)."""
        d = s.deliveries
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                update(d)
                .where(
                    d.c.tenant_id == tenant_id,
                    d.c.id == delivery_id,
                    d.c.state.in_(from_states),
                    d.c.channel != _INAPP,
                )
                .values(state="retrying", next_attempt_at=now, updated_at=now)
            )
        return bool(result.rowcount)
