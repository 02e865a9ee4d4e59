"""Templates, scheduled messages, the notification log and fallback steps of the SQL store.

Scheduled messages are leased like deliveries (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
the single writer lock on SQLite); the release itself happens in :meth:`SqlStore.publish`
(``release=``), in the same transaction as the message it becomes. Fallback steps move
with conditional updates (``WHERE state = 'waiting'``), so two nodes deciding about the
same group change each row at most once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.storage import schema as s
from herald.storage._queue import _fields
from herald.storage.base import DeliveryRecord, NotifyRecord, ScheduledRecord, TemplateRecord

__all__ = ["PlansMixin"]

_WAITING = "waiting"
_SCHEDULED = "scheduled"


class PlansMixin:
    """Template, schedule, notification-log and fallback methods (needs ``_tx``, ``_lease``)."""

    _tx: Callable[..., AbstractAsyncContextManager[AsyncConnection]]
    _lease: Callable[..., Awaitable[Sequence[Row[Any]]]]
    dialect: str

    # -- templates ---------------------------------------------------------------------------
    async def add_template(self, template: TemplateRecord) -> TemplateRecord:
        """Store the next version of a template; IntegrityConflict if a writer raced us."""
        t = s.templates
        async with self._tx(write=True) as conn:
            newest = await conn.scalar(
                select(func.max(t.c.version)).where(
                    t.c.tenant_id == template.tenant_id, t.c.name == template.name
                )
            )
            stored = replace(template, version=int(newest or 0) + 1)
            await conn.execute(insert(t).values(_fields(stored)))
        return stored

    async def get_template(
        self, tenant_id: str, name: str, version: int | None = None
    ) -> TemplateRecord | None:
        """One version of a template (the newest when ``version`` is None), or None."""
        t = s.templates
        query = select(t).where(t.c.tenant_id == tenant_id, t.c.name == name)
        if version is not None:
            query = query.where(t.c.version == version)
        async with self._tx() as conn:
            row = (await conn.execute(query.order_by(t.c.version.desc()).limit(1))).first()
        return TemplateRecord(**row._asdict()) if row is not None else None

    async def list_templates(self, tenant_id: str) -> list[TemplateRecord]:
        """The newest version of each template of a tenant, by name."""
        t = s.templates
        newest = (
            select(t.c.name, func.max(t.c.version).label("version"))
            .where(t.c.tenant_id == tenant_id)
            .group_by(t.c.name)
            .subquery()
        )
        query = (
            select(t)
            .join(newest, (t.c.name == newest.c.name) & (t.c.version == newest.c.version))
            .where(t.c.tenant_id == tenant_id)
            .order_by(t.c.name)
        )
        async with self._tx() as conn:
            rows = (await conn.execute(query)).all()
        return [TemplateRecord(**row._asdict()) for row in rows]

    # -- scheduled messages ------------------------------------------------------------------
    async def get_scheduled(self, tenant_id: str, message_id: str) -> ScheduledRecord | None:
        """A scheduled message of this tenant, or None."""
        t = s.scheduled
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(t).where(t.c.tenant_id == tenant_id, t.c.id == message_id)
                )
            ).first()
        return ScheduledRecord(**row._asdict()) if row is not None else None

    async def claim_scheduled(
        self, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[ScheduledRecord]:
        """Lease due scheduled messages (a dead node's lease runs out and they are due again)."""
        t = s.scheduled
        due = (
            (t.c.state == _SCHEDULED)
            & (t.c.deliver_at <= now)
            & (t.c.lease_until.is_(None) | (t.c.lease_until < now))
        )
        rows = await self._lease(
            t, due, t.c.deliver_at, limit, lease_owner=owner, lease_until=lease_until
        )
        return [ScheduledRecord(**row._asdict()) for row in rows]

    async def release_scheduled(self, owner: str) -> int:
        """Give back the scheduled-message leases of ``owner`` (graceful shutdown)."""
        t = s.scheduled
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                update(t)
                .where(t.c.lease_owner == owner, t.c.state == _SCHEDULED)
                .values(lease_owner=None, lease_until=None)
            )
        return int(result.rowcount or 0)

    async def cancel_scheduled(
        self, tenant_id: str, message_id: str, reason: str, now: datetime, owner: str | None = None
    ) -> bool:
        """``scheduled`` → ``cancelled``, the sealed request erased; False if not scheduled."""
        t = s.scheduled
        where = (t.c.tenant_id == tenant_id) & (t.c.id == message_id) & (t.c.state == _SCHEDULED)
        if owner is not None:
            where &= t.c.lease_owner == owner
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                update(t)
                .where(where)
                .values(
                    state="cancelled",
                    request=b"",
                    reason=reason,
                    updated_at=now,
                    lease_owner=None,
                    lease_until=None,
                )
            )
        return bool(result.rowcount)

    async def _release(self, conn: AsyncConnection, message_id: str, now: datetime) -> bool:
        """Inside publish's transaction: mark a scheduled message published."""
        t = s.scheduled
        result = await conn.execute(
            update(t)
            .where(t.c.id == message_id, t.c.state == _SCHEDULED)
            .values(
                state="published", request=b"", updated_at=now, lease_owner=None, lease_until=None
            )
        )
        return bool(result.rowcount)

    # -- preferences and the notification log -------------------------------------------------
    async def recipient_preferences(self, tenant_id: str, recipients: list[str]) -> dict[str, str]:
        """The stored preferences (JSON text) of those of ``recipients`` that exist."""
        if not recipients:
            return {}
        r = s.recipients
        query = select(r.c.id, r.c.preferences).where(
            r.c.tenant_id == tenant_id, r.c.id.in_(recipients)
        )
        async with self._tx() as conn:
            rows = (await conn.execute(query)).all()
        return {row[0]: row[1] for row in rows}

    async def notifications_since(
        self, tenant_id: str, recipients: list[str], since: datetime
    ) -> list[NotifyRecord]:
        """What these recipients were notified of since ``since``, oldest first."""
        if not recipients:
            return []
        n = s.notify_log
        query = (
            select(n)
            .where(n.c.tenant_id == tenant_id, n.c.recipient.in_(recipients))
            .where(n.c.created_at >= since)
            .order_by(n.c.created_at)
        )
        async with self._tx() as conn:
            rows = (await conn.execute(query)).all()
        return [NotifyRecord(**row._asdict()) for row in rows]

    async def purge_notifications(self, before: datetime) -> int:
        """Forget notification-log rows older than ``before`` (no cap or window reaches them)."""
        n = s.notify_log
        async with self._tx(write=True) as conn:
            result = await conn.execute(delete(n).where(n.c.created_at < before))
        return int(result.rowcount or 0)

    # -- fallback steps ----------------------------------------------------------------------
    async def due_fallbacks(self, now: datetime, limit: int) -> list[tuple[str, str, str]]:
        """(tenant, message, recipient) groups with a waiting step due by ``now``."""
        d = s.deliveries
        query = (
            select(d.c.tenant_id, d.c.message_id, d.c.recipient)
            .where(d.c.state == _WAITING, d.c.next_attempt_at <= now)
            .group_by(d.c.tenant_id, d.c.message_id, d.c.recipient)
            .limit(limit)
        )
        async with self._tx() as conn:
            rows = (await conn.execute(query)).all()
        return [(row[0], row[1], row[2]) for row in rows]

    async def start_step(
        self,
        tenant_id: str,
        message_id: str,
        recipient: str,
        step: int,
        *,
        at: datetime,
        next_deadline: datetime | None,
        now: datetime,
    ) -> int:
        """Start a fallback step: its waiting rows become pending at ``at``.

        The waiting rows of ``step + 1`` then wait until ``next_deadline``. Returns how
        many rows started (0: another node did it first).
        """
        d = s.deliveries
        group = _waiting(tenant_id, message_id, recipient)
        async with self._tx(write=True) as conn:
            started = await conn.execute(
                update(d)
                .where(group & (d.c.step == step))
                .values(state="pending", next_attempt_at=at, updated_at=now)
            )
            if started.rowcount and next_deadline is not None:
                await conn.execute(
                    update(d)
                    .where(group & (d.c.step == step + 1))
                    .values(next_attempt_at=next_deadline, updated_at=now)
                )
        return int(started.rowcount or 0)

    async def close_waiting(
        self,
        tenant_id: str,
        message_id: str,
        recipient: str,
        *,
        state: str,
        reason: str,
        now: datetime,
    ) -> list[DeliveryRecord]:
        """Every waiting row of the group → ``state`` (skipped or expired); returns them."""
        d = s.deliveries
        group = _waiting(tenant_id, message_id, recipient)
        async with self._tx(write=True) as conn:
            pick = select(d).where(group)
            if self.dialect == "postgresql":
                pick = pick.with_for_update()
            rows = (await conn.execute(pick)).all()
            if not rows:
                return []
            ids = [row.id for row in rows]
            await conn.execute(
                update(d)
                .where(d.c.id.in_(ids), d.c.state == _WAITING)
                .values(state=state, last_error=reason, next_attempt_at=None, updated_at=now)
            )
        return [
            replace(DeliveryRecord(**row._asdict()), state=state, last_error=reason) for row in rows
        ]


def _waiting(tenant_id: str, message_id: str, recipient: str) -> ColumnElement[bool]:
    """The waiting deliveries of one (message, recipient)."""
    d = s.deliveries
    return (
        (d.c.tenant_id == tenant_id)
        & (d.c.message_id == message_id)
        & (d.c.recipient == recipient)
        & (d.c.state == _WAITING)
    )
