"""The dispatcher: leases due channel deliveries, runs them, records what happened.

DESIGN §4 step 9 and §7: every channel delivery is a row in the store; a node claims due
rows with a lease, attempts them (each channel within its own concurrency limit) and
records the outcome — ``delivered``, ``retrying`` with exponential backoff and full jitter,
or ``dead`` after the channel's attempt or age budget; ``expired`` past the message's TTL.
Because the work lives in the database, it survives a crash: leases of a dead node run out
and the rows are due again (at-least-once; receivers de-duplicate by delivery id).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
from datetime import datetime, timedelta
from typing import Any

from herald.channels.base import Delivered, DeliveryJob, Failed, Outcome, Retry
from herald.channels.registry import ChannelRegistry
from herald.core.delivery import DeliveryState, backoff_delay, transition
from herald.core.templates import Rendered
from herald.errors import (
    ApiError,
    BadRequest,
    DecryptionFailed,
    Gone,
    HeraldError,
    StorageError,
)
from herald.observability.logging import get_logger
from herald.service import audit
from herald.service.messages import open_content
from herald.service.routing import load_preferences
from herald.service.runtime import Runtime, utcnow
from herald.service.templates import render_message
from herald.storage.base import DeliveryRecord

__all__ = ["ENDPOINT_FIELD", "Dispatcher", "RetryPolicy", "open_endpoint"]

_log = get_logger("herald.delivery")

#: Field name in the AAD of a sealed endpoint configuration.
ENDPOINT_FIELD = "endpoint"


async def open_endpoint(
    rt: Runtime, tenant_id: str, endpoint_id: str, sealed: bytes
) -> dict[str, Any]:
    """Decrypt an endpoint's configuration (contact data and secrets)."""
    plain = await rt.keyring.open(tenant_id, endpoint_id, ENDPOINT_FIELD, sealed)
    config: dict[str, Any] = json.loads(plain)
    return config


class RetryPolicy:
    """Attempts and age budgets with exponential backoff and full jitter."""

    def __init__(
        self,
        *,
        max_attempts: int = 8,
        max_age: float = 24 * 3600,
        base: float = 2.0,
        cap: float = 600.0,
    ) -> None:
        self.max_attempts = max_attempts
        self.max_age = max_age
        self.base = base
        self.cap = cap

    def next_delay(self, attempt: int, after: float | None) -> float:
        """Seconds until the next attempt: the channel's hint, at least backoff."""
        jitter = backoff_delay(attempt, base=self.base, cap=self.cap, rand=random.random())  # noqa: S311
        return max(after or 0.0, jitter)


class Dispatcher:
    """One node's delivery worker."""

    def __init__(
        self,
        rt: Runtime,
        channels: ChannelRegistry,
        *,
        policy: RetryPolicy | None = None,
        batch: int = 64,
        lease: float = 60.0,
        idle: float = 1.0,
        owner: str | None = None,
    ) -> None:
        self.rt = rt
        self.channels = channels
        self.policy = policy or RetryPolicy()
        #: The ``lease_owner`` it writes (the server passes ``<node>/<incarnation>``).
        self.owner = owner or "node-" + secrets.token_hex(6)
        self.batch = batch
        self.lease = lease
        self.idle = idle
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        """Delivery attempts running now (at most about two batches)."""
        return len(self._running)

    def wake(self) -> None:
        """New work was committed: look now instead of at the next idle tick."""
        self._wake.set()

    async def run(self) -> None:
        """Claim and run due deliveries until cancelled."""
        while True:
            claimed = await self._claim()
            if not claimed:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.idle)
                continue
            for record in claimed:
                task = asyncio.create_task(self._attempt(record))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            # Back-pressure: never hold more leases than one batch beyond what runs.
            while len(self._running) >= self.batch:
                await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)

    async def _claim(self) -> list[DeliveryRecord]:
        now = utcnow()
        try:
            return await self.rt.store.claim_deliveries(
                self.owner, now, now + timedelta(seconds=self.lease), self.batch
            )
        except StorageError:
            _log.warning("delivery claim skipped: database unavailable")
            await asyncio.sleep(self.idle)
            return []

    async def stop(self) -> None:
        """Finish what runs (bounded) and give the other leases back."""
        if self._running:
            await asyncio.wait(self._running, timeout=5.0)
        for task in list(self._running):
            task.cancel()
        try:
            await self.rt.store.release_leases(self.owner, utcnow())
        except StorageError:
            _log.warning("leases not released: database unavailable (they will expire)")

    async def _attempt(self, record: DeliveryRecord) -> None:
        try:
            await self._run(record)
        except StorageError:
            _log.warning("delivery result not recorded: database unavailable")
        except HeraldError as exc:
            _log.error("delivery failed unexpectedly", error=type(exc).__name__)

    async def _run(self, record: DeliveryRecord) -> None:
        rt = self.rt
        now = utcnow()
        message = await rt.store.get_message(record.tenant_id, record.message_id)
        if message is None:
            await self._finish(record, "dead", "the message no longer exists")
            return
        if now >= message.expires_at:
            await self._finish(record, "expired", "the message's TTL passed")
            return
        endpoint = await rt.store.get_endpoint(record.tenant_id, record.endpoint)
        if endpoint is None or endpoint.disabled_at is not None:
            await self._finish(record, "dead", "the endpoint was removed or disabled")
            return
        try:
            channel = self.channels.get(record.channel)
        except BadRequest:
            await self._finish(record, "dead", f"channel {record.channel!r} is not configured")
            return
        try:
            content = await open_content(rt, message)
            config = await open_endpoint(rt, record.tenant_id, endpoint.id, endpoint.config)
        except (Gone, DecryptionFailed):
            await self._finish(record, "dead", "the content's keys were destroyed")
            return
        html = None
        if content.get("template") is not None:
            try:
                shown = await self._render(
                    record, channel.name, content["template"], config.get("locale")
                )
            except ApiError as exc:
                await self._finish(record, "dead", f"template: {exc.detail}"[:500])
                return
            content = {**content, "title": shown.title, "body": shown.body}
            html = shown.html
        job = DeliveryJob(
            delivery_id=record.id,
            message_id=message.id,
            tenant_id=message.tenant_id,
            recipient=endpoint.recipient,
            topic=message.topic,
            attempt=record.attempts,  # counted when claimed
            title=content.get("title"),
            body=content.get("body"),
            html=html,
            data=content.get("data"),
            priority=message.priority,
            created_at=message.created_at.isoformat().replace("+00:00", "Z"),
            ttl=message.ttl,
            endpoint=config,
        )
        async with self.channels.limit(channel.name):
            outcome = await self._deliver(channel.name, job)
        await self._record(record, job.attempt, outcome, message.created_at)

    async def _render(
        self, record: DeliveryRecord, channel: str, ref: dict[str, Any], locale: str | None
    ) -> Rendered:
        """The channel's variant of the message's template, in the reader's locale.

        The locale is the endpoint's own (an e-mail address may be read in another
        language), else the recipient's preference, else the message's.
        """
        if locale is None and record.recipient is not None:
            prefs = await load_preferences(self.rt, record.tenant_id, [record.recipient])
            found = prefs.get(record.recipient)
            locale = found.locale if found is not None else None
        return await render_message(self.rt, record.tenant_id, ref, channel, locale)

    async def _deliver(self, name: str, job: DeliveryJob) -> Outcome:
        try:
            return await self.channels.get(name).deliver(job)
        except Exception as exc:  # noqa: BLE001 - a plugin bug must not kill the worker
            _log.error("channel raised", channel=name, error=type(exc).__name__)
            return Retry(f"the {name} channel failed unexpectedly ({type(exc).__name__})")

    async def _record(
        self, record: DeliveryRecord, attempt: int, outcome: Outcome, created_at: datetime
    ) -> None:
        if isinstance(outcome, Delivered):
            await self._finish(record, "delivered", None, attempts=attempt)
            return
        if isinstance(outcome, Failed):
            if outcome.disable_endpoint:
                await self.rt.store.disable_endpoint(record.endpoint, utcnow())
            await self._finish(record, "dead", outcome.reason, attempts=attempt)
            return
        age = (utcnow() - created_at).total_seconds()
        if attempt >= self.policy.max_attempts or age >= self.policy.max_age:
            await self._finish(record, "dead", f"gave up: {outcome.reason}", attempts=attempt)
            return
        # backoff_delay's attempt 0 is the first retry.
        delay = self.policy.next_delay(attempt - 1, outcome.after)
        await self._finish(
            record,
            "retrying",
            outcome.reason,
            attempts=attempt,
            next_attempt_at=utcnow() + timedelta(seconds=delay),
        )

    async def _finish(
        self,
        record: DeliveryRecord,
        state: str,
        error: str | None,
        *,
        attempts: int | None = None,
        next_attempt_at: datetime | None = None,
    ) -> None:
        rt = self.rt
        # Every recorded change is one the state machine allows (core/delivery.py).
        transition(DeliveryState(record.state), DeliveryState(state))
        done = await rt.store.finish_delivery(
            record.id,
            self.owner,
            state=state,
            attempts=record.attempts if attempts is None else attempts,
            last_error=error,
            next_attempt_at=next_attempt_at,
            now=utcnow(),
        )
        if not done:
            return  # our lease ran out and another node took the row over
        rt.metrics.record_delivery(record.channel, state)
        await audit.record(
            rt,
            tenant=record.tenant_id,
            actor=f"node:{self.owner}",
            action=f"delivery.{state}",
            obj=f"delivery:{record.id}",
            message=record.message_id,
            channel=record.channel,
            attempts=record.attempts if attempts is None else attempts,
        )
        if state in ("dead", "expired") and record.recipient is not None and rt.planner:
            # "If that fails": a later fallback step may start now.
            await rt.planner.advance(record.tenant_id, record.message_id, record.recipient)
