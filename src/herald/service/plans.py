"""The planner: publishes scheduled messages when due, and moves fallback plans on.

Both kinds of work live in the store, so any node may do them and a crash loses none:

- **Scheduled messages** (``deliver_at``) are leased when due and published through the
  ordinary publish path as the app that scheduled them, under the id answered at
  scheduling time; the scheduled row turns ``published`` in the same transaction as the
  message, so a crash never publishes one twice. An app that was disabled, deleted or
  lost the topic's publish scope meanwhile gets its message cancelled, with the reason.
- **Fallback steps** (``waiting`` deliveries) start when the steps before them failed or
  their wait ran out, are ``skipped`` once something was delivered, and ``expired`` with
  the message (:func:`herald.core.preferences.fallback_action` decides). The dispatcher
  calls :meth:`Planner.advance` as soon as a delivery fails for good; the planner's tick
  covers waits that ran out.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from datetime import timedelta

import msgspec

from herald.core.messages import PublishRequest
from herald.core.policy import Action, Principal, Resource, allowed
from herald.core.preferences import Preferences, fallback_action, quiet_until
from herald.core.scopes import ScopeSet
from herald.crypto.tokens import AccessClaims
from herald.errors import ApiError, DecryptionFailed, HeraldError, IntegrityConflict, StorageError
from herald.observability.logging import get_logger
from herald.service import audit
from herald.service.messages import SCHEDULED_FIELD, publish
from herald.service.routing import load_preferences
from herald.service.runtime import Runtime, utcnow
from herald.storage.base import DeliveryRecord, ScheduledRecord

__all__ = ["Planner"]

_log = get_logger("herald.planner")


class Planner:
    """One node's planner: call :meth:`run` as a background task."""

    def __init__(
        self,
        rt: Runtime,
        *,
        tick: float = 1.0,
        batch: int = 100,
        lease: float = 60.0,
        owner: str | None = None,
    ) -> None:
        self.rt = rt
        self.tick = tick
        self.batch = batch
        self.lease = lease
        #: The ``lease_owner`` it writes (the server passes ``<node>/<incarnation>``).
        self.owner = owner or "planner-" + secrets.token_hex(6)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look now instead of at the next tick."""
        self._wake.set()

    async def run(self) -> None:
        """Release due scheduled messages and advance due fallback steps until cancelled."""
        while True:
            try:
                busy = await self.release_due()
                busy |= await self.sweep_fallbacks()
            except StorageError:
                _log.warning("planner tick skipped: database unavailable")
                busy = False
            except Exception as exc:  # noqa: BLE001 - one bad row must not stop the planner
                _log.error("planner tick failed", error=type(exc).__name__)
                busy = False
            if not busy:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.tick)

    async def stop(self) -> None:
        """Give back the scheduled-message leases (call after cancelling :meth:`run`)."""
        try:
            await self.rt.store.release_scheduled(self.owner)
        except StorageError:
            _log.warning("scheduled leases not released: database unavailable (they will expire)")

    # -- scheduled messages ------------------------------------------------------------------
    async def release_due(self) -> bool:
        """Publish the scheduled messages that are due; True when a full batch was found."""
        now = utcnow()
        due = await self.rt.store.claim_scheduled(
            self.owner, now, now + timedelta(seconds=self.lease), self.batch
        )
        for record in due:
            try:
                await self._release(record)
            except StorageError:
                raise
            except HeraldError as exc:
                _log.error("scheduled message not released", error=type(exc).__name__)
        return len(due) >= self.batch

    async def _release(self, record: ScheduledRecord) -> None:
        rt = self.rt
        app = await rt.store.get_app(record.app_id)
        if app is None or app.disabled or app.tenant_id != record.tenant_id:
            await self._cancel(record, "the app that scheduled it was disabled or removed")
            return
        scopes = ScopeSet.from_iter(app.scopes)
        principal = Principal.app(app.tenant_id, app.id, scopes)
        where = Resource(record.tenant_id, topic=record.topic)
        if not allowed(principal, Action.PUBLISH, where):
            await self._cancel(record, "the app may no longer publish to this topic")
            return
        try:
            plain = await rt.keyring.open(
                record.tenant_id, record.id, SCHEDULED_FIELD, record.request
            )
        except DecryptionFailed:
            await self._cancel(record, "the content's keys were destroyed")
            return
        try:
            request = msgspec.json.decode(plain, type=PublishRequest)
        except msgspec.DecodeError:  # written by an incompatible version
            await self._cancel(record, "the stored request could not be read")
            return
        claims = AccessClaims(
            tenant_id=record.tenant_id,
            client_id=app.id,
            scopes=scopes,
            jti=f"scheduled:{record.id}",
            expires_at=0,
        )
        try:
            await publish(
                rt,
                claims,
                [request],
                single=True,
                idempotency_key=None,
                request_hash=b"",
                release=record.id,
            )
        except IntegrityConflict:
            return  # cancelled (or released by another node) meanwhile: nothing to do
        except ApiError as exc:
            # e.g. the template was removed or no longer renders with these variables.
            await self._cancel(record, f"not publishable any more: {exc.detail}"[:500])

    async def _cancel(self, record: ScheduledRecord, reason: str) -> None:
        rt = self.rt
        if await rt.store.cancel_scheduled(
            record.tenant_id, record.id, reason, utcnow(), owner=self.owner
        ):
            await audit.record(
                rt,
                tenant=record.tenant_id,
                actor=f"node:{self.owner}",
                action="message.cancelled",
                obj=f"message:{record.id}",
                topic=record.topic,
                reason=reason,
            )

    # -- fallback steps ----------------------------------------------------------------------
    async def sweep_fallbacks(self) -> bool:
        """Advance the groups whose waiting step is due; True when a full batch was found."""
        groups = await self.rt.store.due_fallbacks(utcnow(), self.batch)
        for tenant_id, message_id, recipient in groups:
            await self.advance(tenant_id, message_id, recipient)
        return len(groups) >= self.batch

    async def advance(self, tenant_id: str, message_id: str, recipient: str) -> None:
        """Decide about the waiting steps of one (message, recipient), and do it."""
        rt = self.rt
        now = utcnow()
        message = await rt.store.get_message(tenant_id, message_id)
        rows = [d for d in await rt.store.deliveries(tenant_id, message_id) if _for(d, recipient)]
        if message is None or not rows:
            return
        waiting = [d for d in rows if d.state == "waiting"]
        lowest = min((d.step for d in waiting), default=-1)
        deadline = min(
            (d.next_attempt_at for d in waiting if d.step == lowest and d.next_attempt_at),
            default=None,
        )
        action, step = fallback_action(
            ((d.step, d.channel, d.state) for d in rows),
            now=now,
            expires_at=message.expires_at,
            deadline=deadline,
        )
        if action in _CLOSING:
            state, reason = _CLOSING[action]
            closed = await rt.store.close_waiting(
                tenant_id, message_id, recipient, state=state, reason=reason, now=now
            )
            await self._record(closed)
        elif action == "activate":
            prefs = (await load_preferences(rt, tenant_id, [recipient])).get(recipient)
            hold = None
            if message.priority != "urgent":
                hold = quiet_until(prefs or Preferences(), now)
            following = [d for d in waiting if d.step == step + 1]
            after = following[0].fallback_after if following else None
            next_deadline = (
                now + timedelta(seconds=after) if after is not None else message.expires_at
            )
            started = await rt.store.start_step(
                tenant_id,
                message_id,
                recipient,
                step,
                at=hold or now,
                next_deadline=next_deadline if following else None,
                now=now,
            )
            if started and rt.dispatcher is not None:
                rt.dispatcher.wake()

    async def _record(self, closed: list[DeliveryRecord]) -> None:
        for delivery in closed:
            self.rt.metrics.record_delivery(delivery.channel, delivery.state)
            await audit.record(
                self.rt,
                tenant=delivery.tenant_id,
                actor=f"node:{self.owner}",
                action=f"delivery.{delivery.state}",
                obj=f"delivery:{delivery.id}",
                message=delivery.message_id,
                channel=delivery.channel,
                attempts=delivery.attempts,
            )


#: What "skip" and "expire" do to the waiting steps: their state and recorded reason.
_CLOSING = {
    "skip": ("skipped", "an earlier step was delivered"),
    "expire": ("expired", "the message's TTL passed"),
}


def _for(delivery: DeliveryRecord, recipient: str) -> bool:
    # In-app rows name the recipient as their endpoint (and in ``recipient``).
    return delivery.recipient == recipient or (
        delivery.channel == "inapp" and delivery.endpoint == recipient
    )
