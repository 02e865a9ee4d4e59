"""Routing a message to its recipients' endpoints, with preferences and noise control.

For each recipient of a message (DESIGN §7):

1. **Preferences** — channels the recipient switched off for the message's category get no
   delivery at all.
2. **Plan** — the message's ``fallback`` or ``channels``, else the recipient's fallback,
   else every channel at once; each endpoint gets the step of its channel
   (:func:`herald.core.preferences.assign_steps`). Later steps wait (``waiting``) until
   the planner starts them.
3. **Noise control** — the same content within the de-duplication window, or a full
   frequency cap for the category (not for ``urgent``), turns the recipient's channel
   deliveries into ``suppressed`` rows that say why. Quiet hours hold the first step's
   deliveries until the window ends (not for ``urgent``).

The in-app inbox is not routed here: every recipient gets the message in the streams and
history (the store's in-app row); what is routed is who gets *notified*, and where.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from herald.core.messages import PublishRequest
from herald.core.preferences import (
    INAPP,
    Preferences,
    assign_steps,
    cap_for,
    channel_allowed,
    parse_preferences,
    plan_steps,
    quiet_until,
)
from herald.errors import BadRequest
from herald.service.runtime import Runtime
from herald.storage.base import DeliveryRecord, EndpointRecord, MessageRecord, NotifyRecord

__all__ = ["Routed", "Routing", "Targets", "load_preferences", "route", "targets"]


@dataclass(frozen=True, slots=True)
class Routing:
    """One message to route: its record, request, and content digest (None: no dedup)."""

    record: MessageRecord
    request: PublishRequest
    digest: bytes | None
    dedup_window: int


@dataclass(slots=True)
class Routed:
    """What routing produced for one publish transaction."""

    deliveries: list[DeliveryRecord]
    notified: list[NotifyRecord]
    #: message id → recipients whose notification was suppressed.
    suppressed: dict[str, int]


async def load_preferences(
    rt: Runtime, tenant_id: str, recipients: list[str]
) -> dict[str, Preferences]:
    """Parsed preferences of these recipients (defaults for unknown ones are implied)."""
    found = await rt.store.recipient_preferences(tenant_id, recipients)
    parsed: dict[str, Preferences] = {}
    for recipient, text in found.items():
        try:
            parsed[recipient] = parse_preferences(json.loads(text))
        except (BadRequest, ValueError):
            # Stored before validation existed: treat as no preferences rather than fail.
            parsed[recipient] = Preferences()
    return parsed


def _window(items: Sequence[Routing], prefs: dict[str, Preferences]) -> int:
    """The longest look-back any check needs (0: no history needed)."""
    longest = max((item.dedup_window for item in items if item.digest is not None), default=0)
    for item in items:
        category = item.request.category
        for recipient in item.record.recipients:
            cap = cap_for(prefs.get(recipient, _NONE), category)
            if cap is not None:
                longest = max(longest, cap.period)
    return longest


_NONE = Preferences()


def _suppression(
    item: Routing, recipient: str, prefs: Preferences, history: list[NotifyRecord], now: datetime
) -> str | None:
    """Why this recipient must not be notified of this message again, or None."""
    mine = [n for n in history if n.recipient == recipient]
    if item.digest is not None and item.dedup_window > 0:
        since = now - timedelta(seconds=item.dedup_window)
        for seen in mine:
            if seen.digest == item.digest and seen.created_at >= since:
                return (
                    f"suppressed: same content as message {seen.message_id} "
                    f"within {item.dedup_window} s"
                )
    category = item.request.category
    cap = cap_for(prefs, category)
    if cap is not None and item.request.priority != "urgent":
        since = now - timedelta(seconds=cap.period)
        count = sum(1 for n in mine if n.category == category and n.created_at >= since)
        if count >= cap.count:
            return (
                f"suppressed: frequency cap of {cap.count} per {cap.period} s "
                f"for category {category!r} reached"
            )
    return None


async def _history(
    rt: Runtime,
    tenant_id: str,
    wanted: list[str],
    *,
    window: int,
    now: datetime,
    pending: Sequence[NotifyRecord],
) -> list[NotifyRecord]:
    """The notification log of these recipients over the last ``window`` seconds."""
    if not window:
        return []
    since = now - timedelta(seconds=window)
    history = await rt.store.notifications_since(tenant_id, wanted, since)
    who = set(wanted)
    history.extend(
        n
        for n in pending
        if n.tenant_id == tenant_id and n.recipient in who and n.created_at >= since
    )
    return history


@dataclass(frozen=True, slots=True)
class Targets:
    """The recipients' endpoints and preferences, read before the publish lock is taken."""

    recipients: list[str]
    endpoints: list[EndpointRecord]
    prefs: dict[str, Preferences]


async def targets(rt: Runtime, tenant_id: str, items: Sequence[Routing]) -> Targets:
    """Read what routing needs that no concurrent publish changes (outside the lock)."""
    wanted = sorted({r for item in items for r in item.record.recipients})
    if not wanted:
        return Targets([], [], {})
    endpoints = await rt.store.active_endpoints(tenant_id, wanted)
    return Targets(wanted, endpoints, await load_preferences(rt, tenant_id, wanted))


async def route(
    rt: Runtime,
    tenant_id: str,
    items: Sequence[Routing],
    found: Targets,
    now: datetime,
    *,
    pending: Sequence[NotifyRecord] = (),
) -> Routed:
    """Deliveries (and notification-log rows) for messages about to be committed.

    Called under the publish lock: the notification log it reads (caps, de-duplication)
    is what this node's concurrent publishes write. ``pending`` are the rows of requests
    routed before this one in the same group commit, not yet in the log.
    """
    routed = Routed([], [], {})
    wanted, endpoints, prefs = found.recipients, found.endpoints, found.prefs
    if not wanted:
        return routed
    history = await _history(
        rt, tenant_id, wanted, window=_window(items, prefs), now=now, pending=pending
    )
    for item in items:
        record, req = item.record, item.request
        policy_off = req.e2e is not None  # end-to-end content only travels in the streams
        for recipient in record.recipients:
            mine = prefs.get(recipient, _NONE)
            reason = _suppression(item, recipient, mine, history, now)
            if reason is None and (req.category is not None or item.digest is not None):
                entry = NotifyRecord(
                    tenant_id, recipient, record.id, req.category, item.digest, now
                )
                routed.notified.append(entry)
                history.append(entry)  # later messages of this batch see it
            elif reason is not None:
                routed.suppressed[record.id] = routed.suppressed.get(record.id, 0) + 1
            if policy_off:
                continue
            usable = [
                e
                for e in endpoints
                if e.recipient == recipient and channel_allowed(mine, req.category, e.channel)
            ]
            steps = plan_steps(channels=req.channels, fallback=req.fallback, prefs=mine)
            assigned = assign_steps(steps, {e.channel for e in usable} | {INAPP})
            hold = quiet_until(mine, now) if req.priority != "urgent" else None
            for endpoint in usable:
                if endpoint.channel not in assigned:
                    continue
                step, after = assigned[endpoint.channel]
                if reason is not None:
                    state, due = "suppressed", None
                elif step == 0:
                    state, due = "pending", hold or now
                elif step == 1 and after is not None:
                    state, due = "waiting", now + timedelta(seconds=after)
                else:
                    # Starts when the step before it fails; expires with the message.
                    state, due = "waiting", record.expires_at
                routed.deliveries.append(
                    DeliveryRecord(
                        id=rt.ids.new_str(),
                        message_id=record.id,
                        tenant_id=tenant_id,
                        channel=endpoint.channel,
                        endpoint=endpoint.id,
                        state=state,
                        attempts=0,
                        last_error=reason,
                        created_at=now,
                        updated_at=now,
                        recipient=recipient,
                        next_attempt_at=due,
                        step=step,
                        fallback_after=after,
                    )
                )
    return routed
