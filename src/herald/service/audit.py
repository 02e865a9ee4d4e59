"""Recording audit events: the one helper every use case calls (DESIGN §6)."""

from __future__ import annotations

from herald.audit.entry import AuditEvent
from herald.service.runtime import Runtime, utcnow

__all__ = ["record"]


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
    (index,) = await rt.store.append_audit([event])
    return index
