"""What operators look at (the web console): activity over time, delivery states, search.

Read-only queries of :class:`~herald.storage.sql.SqlStore` over message *metadata* and
deliveries; message content is never read here. Every query is bounded: a time window and
a bucket count for series, a page size for searches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime

from sqlalchemy import ColumnElement, Integer, cast, exists, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.storage import schema as s
from herald.storage.base import ActivitySeries, MessageQuery, MessageRecord

__all__ = ["ReportsMixin"]

#: Delivery states counted as failures in the activity series.
_FAILED = ("failed", "dead")


class ReportsMixin:
    """Console queries (needs ``_tx``, ``_records`` and ``dialect``)."""

    _tx: Callable[..., AbstractAsyncContextManager[AsyncConnection]]
    dialect: str

    def _bucket_of(self, column: ColumnElement[datetime], bucket: int) -> ColumnElement[int]:
        """The column's time as a bucket number (Unix seconds // bucket), in SQL."""
        if self.dialect == "postgresql":
            seconds = cast(func.floor(func.extract("epoch", column)), Integer)
        else:  # SQLite keeps UTC wall time as text; strftime('%s') reads it as UTC
            seconds = cast(func.strftime("%s", column), Integer)
        return seconds // bucket  # floor division on both (SQLAlchemy renders it per dialect)

    async def activity(
        self, tenant_id: str, end: datetime, bucket: int, count: int
    ) -> ActivitySeries:
        """Published messages and finished deliveries per bucket, ``count`` buckets to ``end``."""
        last = int(end.timestamp()) // bucket
        first = last - count + 1
        since = datetime.fromtimestamp(first * bucket, end.tzinfo)
        m, d = s.messages, s.deliveries
        published = self._bucket_of(m.c.created_at, bucket)
        finished = self._bucket_of(d.c.updated_at, bucket)
        series = {name: [0] * count for name in ("published", "delivered", "failed")}
        async with self._tx() as conn:
            rows = await conn.execute(
                select(published, func.count())
                .where(m.c.tenant_id == tenant_id, m.c.created_at >= since)
                .group_by(published)
            )
            for number, n in rows:
                if first <= number <= last:
                    series["published"][number - first] = int(n)
            finishes = await conn.execute(
                select(finished, d.c.state, func.count())
                .where(
                    d.c.tenant_id == tenant_id,
                    d.c.updated_at >= since,
                    d.c.state.in_(("delivered", *_FAILED)),
                )
                .group_by(finished, d.c.state)
            )
            for number, state, n in finishes:
                if first <= number <= last:
                    name = "delivered" if state == "delivered" else "failed"
                    series[name][number - first] += int(n)
        return ActivitySeries(first * bucket, bucket, **series)

    async def delivery_counts(self, tenant_id: str) -> list[tuple[str, str, int]]:
        """``(channel, state, count)`` of every delivery of the tenant."""
        d = s.deliveries
        async with self._tx() as conn:
            rows = await conn.execute(
                select(d.c.channel, d.c.state, func.count())
                .where(d.c.tenant_id == tenant_id)
                .group_by(d.c.channel, d.c.state)
                .order_by(d.c.channel, d.c.state)
            )
            return [(str(c), str(st), int(n)) for c, st, n in rows]

    async def search_messages(self, query: MessageQuery, limit: int) -> list[MessageRecord]:
        """Messages matching ``query``, newest (highest audit index) first."""
        m, d = s.messages, s.deliveries
        stmt = select(m).where(m.c.tenant_id == query.tenant_id)
        if query.topic is not None:
            if query.topic.endswith(".>"):
                prefix = query.topic[:-1]  # keep the dot: "orders." matches "orders.x"
                stmt = stmt.where(func.substr(m.c.topic, 1, len(prefix)) == prefix)
            else:
                stmt = stmt.where(m.c.topic == query.topic)
        related = [d.c.message_id == m.c.id, d.c.tenant_id == query.tenant_id]
        if query.recipient is not None:
            related.append(d.c.recipient == query.recipient)
        if query.state is not None:
            related.append(d.c.state == query.state)
        if query.recipient is not None or query.state is not None:
            stmt = stmt.where(exists().where(*related))
        if query.since is not None:
            stmt = stmt.where(m.c.created_at >= query.since)
        if query.until is not None:
            stmt = stmt.where(m.c.created_at < query.until)
        if query.before_seq is not None:
            stmt = stmt.where(m.c.seq < query.before_seq)
        async with self._tx() as conn:
            rows = (await conn.execute(stmt.order_by(m.c.seq.desc()).limit(limit))).all()
        return [MessageRecord(**row._asdict()) for row in rows]

    async def delivery_states(
        self, tenant_id: str, message_ids: Sequence[str]
    ) -> dict[str, dict[str, int]]:
        """Per message, how many of its deliveries are in each state."""
        if not message_ids:
            return {}
        d = s.deliveries
        found: dict[str, dict[str, int]] = {}
        async with self._tx() as conn:
            rows = await conn.execute(
                select(d.c.message_id, d.c.state, func.count())
                .where(d.c.tenant_id == tenant_id, d.c.message_id.in_(list(message_ids)))
                .group_by(d.c.message_id, d.c.state)
            )
            for message_id, state, n in rows:
                found.setdefault(str(message_id), {})[str(state)] = int(n)
        return found
