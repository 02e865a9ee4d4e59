"""Recording audit events: the one helper every use case calls (DESIGN §6).

Appends are grouped per node: events recorded while an append is running wait for the next
one and go in together (up to :data:`~herald.limits.AUDIT_GROUP_MAX`), so a burst of
deliveries costs one audit-lock acquisition and one commit instead of one each. In a
cluster the audit lock serialises appends of every node, and the lock is held for several
round trips; one append per event made it the cluster's bottleneck (docs/performance.md).
Each caller still returns only once its own entry is committed, with its index.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from herald import limits
from herald.audit.entry import AuditEvent
from herald.core.grouping import GroupRunner
from herald.service.runtime import Runtime, utcnow
from herald.storage.base import AuditSink

__all__ = ["AuditGroup", "record"]


class AuditGroup(GroupRunner[AuditSink, int]):
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
        super().__init__(append, group_max=group_max)


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
