"""Recording audit events: the one helper every use case calls (DESIGN §6).

Appends are grouped per node: events recorded while an append is running wait for the next
one and go in together (up to :data:`~herald.limits.AUDIT_GROUP_MAX`), so a burst of
deliveries costs one audit-lock acquisition and one commit instead of one each. In a
cluster the audit lock serialises appends of every node, and the lock is held for several
round trips; one append per event made it the cluster's bottleneck (docs/performance.md).
Each caller still returns only once its own entry is committed, with its index.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from herald import limits
from herald.audit.entry import AuditEvent
from herald.service.runtime import Runtime, utcnow
from herald.storage.base import AuditSink

__all__ = ["AuditGroup", "record"]


class AuditGroup:
    """Appends the events recorded concurrently on one node together (group commit).

    Args:
        append: The store's ``append_audit`` (one transaction; returns the indices).
        group_max: Most events per append.
    """

    def __init__(
        self,
        append: Callable[[list[AuditSink]], Awaitable[list[int]]],
        *,
        group_max: int = limits.AUDIT_GROUP_MAX,
    ) -> None:
        self._append = append
        self._group_max = group_max
        self._pending: list[tuple[AuditSink, asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: Appends made (a group each), for tests and metrics.
        self.appends = 0

    async def add(self, event: AuditSink) -> int:
        """Append ``event`` (with whatever else is waiting); its index once committed."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((event, done))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        # shield: a caller that is cancelled must not cancel the append of the others.
        return await asyncio.shield(done)

    async def _flush(self) -> None:
        try:
            while self._pending:
                group = self._pending[: self._group_max]
                del self._pending[: self._group_max]
                try:
                    indices = await self._append([event for event, _ in group])
                except BaseException as exc:
                    for _, done in group:
                        if not done.done():
                            done.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                self.appends += 1
                for (_, done), index in zip(group, indices, strict=True):
                    if not done.done():
                        done.set_result(index)
        except asyncio.CancelledError:
            for _, done in self._pending:
                if not done.done():
                    done.cancel()
            self._pending.clear()
            raise
        finally:
            self._flusher = None


async def record(
    rt: Runtime,
    *,
    tenant: str | None,
    actor: str,
    action: str,
    obj: str,
    **details: object,
) -> int:
    """Append one event (never content or secrets: callers pass ids, slugs, counts).

    Returns the entry's index in the log.
    """
    event = AuditEvent(
        time=utcnow(), tenant=tenant, actor=actor, action=action, object=obj, details=details
    )
    if rt.audit_group is None:
        rt.audit_group = AuditGroup(rt.store.append_audit)
    return await rt.audit_group.add(event)
