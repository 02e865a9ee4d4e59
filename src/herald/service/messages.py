"""Publishing and reading messages: the publish path of DESIGN §4, steps 5–9.

Authentication happened before these functions are called; they check scopes, seal the
content, commit message + deliveries + audit entry in one transaction, and hand the
committed messages to the bus. Commit and fan-out happen under the node's publish lock so
that live subscribers see messages in commit (``seq``) order.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from herald import limits
from herald.audit.entry import AuditEvent
from herald.bus.base import LiveMessage
from herald.channels.registry import INAPP
from herald.core.grouping import GroupRunner
from herald.core.messages import PublishRequest, content_of
from herald.core.policy import Action, Resource, allowed, authorize
from herald.crypto.e2e import ENC_LEN, MAX_CIPHERTEXT, b64url_decode
from herald.crypto.tokens import AccessClaims
from herald.errors import (
    ApiError,
    BadRequest,
    Conflict,
    DecryptionFailed,
    Forbidden,
    Gone,
    IdempotencyMismatch,
    IntegrityConflict,
    NotFound,
)
from herald.service import audit, templates
from herald.service.routing import Routed, Routing, Targets, route, targets
from herald.service.runtime import Runtime, utcnow
from herald.storage.base import (
    DeliveryRecord,
    IdempotencyRecord,
    MessageRecord,
    NotifyRecord,
    PublishResult,
    PublishWrite,
    ScheduledRecord,
)

__all__ = [
    "SCHEDULED_FIELD",
    "Outcome",
    "can_read",
    "cancel_scheduled",
    "delivery_view",
    "ensure_not_shredded",
    "get_message",
    "history",
    "invalid_cursor",
    "live_messages",
    "message_view",
    "metadata_view",
    "open_content",
    "publish",
    "scheduled_view",
]


#: Field name in the AAD of a scheduled message's sealed request.
SCHEDULED_FIELD = "scheduled"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to a publish request: status and JSON body, and whether it is a replay."""

    status: int
    body: dict[str, Any]
    replayed: bool = False


def invalid_cursor(since: str) -> BadRequest:
    """The problem for a resume point that names no message of this tenant."""
    return BadRequest(f"no message {since[:64]} to resume after", slug="invalid-cursor")


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _audit_ref(seq: int, leaf: bytes) -> dict[str, Any]:
    return {"index": seq, "leaf_hash": leaf.hex()}


def can_read(claims: AccessClaims, topic: str) -> bool:
    """Whether the app may read messages of ``topic`` (the policy's ``message.read``)."""
    return allowed(claims.principal, Action.MESSAGE_READ, Resource(claims.tenant_id, topic=topic))


def _frames(record: MessageRecord, content: dict[str, Any], e2e: Any = None) -> tuple[str, bytes]:
    frame = msgspec.json.encode(
        {
            "type": "message",
            "id": record.id,
            "topic": record.topic,
            "title": content.get("title"),
            "body": content.get("body"),
            "data": content.get("data"),
            "priority": record.priority,
            "created_at": _iso(record.created_at),
            "audit": _audit_ref(record.seq, record.leaf_hash),
            **({"e2e": e2e} if e2e is not None else {}),
        }
    )
    sse = b"id: " + record.id.encode() + b"\nevent: message\ndata: " + frame + b"\n\n"
    return frame.decode("utf-8"), sse


def _live(record: MessageRecord, content: dict[str, Any]) -> LiveMessage:
    """Frame a committed message once (per recipient for end-to-end content)."""
    frame, sse = _frames(record, content)
    per_recipient = None
    e2e = content.get("e2e")
    if e2e is not None:
        # Each recipient gets only its own devices' payloads: nobody learns who else a
        # message went to, and a frame never carries every device's ciphertext.
        per_recipient = {
            recipient: _frames(
                record,
                content,
                {
                    "suite": e2e["suite"],
                    "payloads": [p for p in e2e["payloads"] if p["recipient"] == recipient],
                },
            )
            for recipient in record.recipients
        }
    return LiveMessage(
        tenant_id=record.tenant_id,
        topic=record.topic,
        seq=record.seq,
        id=record.id,
        recipients=record.recipients,
        frame=frame,
        sse=sse,
        published_at=time.monotonic(),
        per_recipient=per_recipient,
    )


async def _replay(
    rt: Runtime, claims: AccessClaims, record: IdempotencyRecord, request_hash: bytes
) -> Outcome:
    if record.request_hash != request_hash:
        raise IdempotencyMismatch(
            "this Idempotency-Key was used with a different request body; use a new key"
        )
    template = msgspec.json.decode(record.response)
    # The stored template names the message ids; audit references are re-read so that the
    # replayed answer is exactly the first one.
    items = template["results"]
    for item in items:
        if "id" not in item:
            continue
        found: MessageRecord | ScheduledRecord | None
        if item.get("scheduled"):
            found = await rt.store.get_scheduled(claims.tenant_id, item["id"])
        else:
            found = await rt.store.get_message(claims.tenant_id, item["id"])
        if found is not None:
            item["audit"] = _audit_ref(found.seq, found.leaf_hash)
    body = items[0] if template.get("single") else {"results": items}
    return Outcome(record.status, body, replayed=True)


async def _answered(
    rt: Runtime, claims: AccessClaims, key: str, request_hash: bytes, now: datetime
) -> Outcome | None:
    """The first answer for this Idempotency-Key within 24 h, or None."""
    existing = await rt.store.get_idempotency(claims.client_id, key)
    if existing is None:
        return None
    if existing.created_at > now - timedelta(seconds=limits.IDEMPOTENCY_TTL):
        return await _replay(rt, claims, existing, request_hash)
    # Older than 24 h: the key is free again (the draft's expiry), so forget it.
    await rt.store.purge_idempotency(now - timedelta(seconds=limits.IDEMPOTENCY_TTL))
    return None


async def _answered_if_keyed(
    rt: Runtime, claims: AccessClaims, key: str | None, request_hash: bytes, now: datetime
) -> Outcome | None:
    return None if key is None else await _answered(rt, claims, key, request_hash, now)


async def _check_e2e(
    rt: Runtime, claims: AccessClaims, req: PublishRequest, *, release: bool
) -> None:
    """Envelope sizes, and that every device belongs to the recipient it is addressed to."""
    assert req.e2e is not None  # noqa: S101 - only called for e2e requests
    for envelope in req.e2e.payloads:
        if len(b64url_decode(envelope.enc, name="enc")) != ENC_LEN:
            raise BadRequest(f"e2e enc must be {ENC_LEN} bytes")
        if len(b64url_decode(envelope.ct, name="ct")) > MAX_CIPHERTEXT:
            raise BadRequest("an e2e ciphertext is larger than a message may be")
    wanted = {e.device_id: e.recipient for e in req.e2e.payloads}
    found = await rt.store.get_devices(claims.tenant_id, list(wanted))
    owners = {d.device_id: d.recipient for d in found}
    for device_id, recipient in wanted.items():
        if owners.get(device_id) != recipient:
            raise BadRequest(f"no device {device_id!r} of recipient {recipient[:64]!r}")
    # Message ids are global (one key over every tenant, published and scheduled alike): a
    # client-chosen id in use anywhere is refused, so no tenant can take another's id and
    # block its scheduled release. (A release publishes under its own scheduled id.)
    if req.id is not None and not release and await rt.store.message_id_taken(req.id):
        raise Conflict(f"a message with id {req.id} exists already")


async def _admit(
    rt: Runtime, claims: AccessClaims, item: PublishRequest | ApiError, *, release: bool
) -> PublishRequest | ApiError:
    """Scope (DESIGN §4 step 5), channel, template and e2e checks; a refusal is the item's."""
    if isinstance(item, ApiError):
        return item
    if not allowed(claims.principal, Action.PUBLISH, Resource(claims.tenant_id, topic=item.topic)):
        return Forbidden(f"the token may not publish to topic {item.topic!r}")
    named = list(item.channels or ()) + [c for s in item.fallback or () for c in s.channels]
    if named and rt.channels is not None:
        unknown = [c for c in named if c != INAPP and c not in rt.channels]
        if unknown:
            return BadRequest(f"unknown channel {unknown[0][:32]!r}")
    try:
        if item.deliver_at is not None and not release:
            _deliver_at(rt, item, utcnow())  # refuse a bad schedule before sealing anything
        if item.e2e is not None:
            await _check_e2e(rt, claims, item, release=release)
        if item.template is not None:
            await _render_inapp(rt, claims.tenant_id, item)
    except ApiError as exc:
        return exc
    return item


async def _render_inapp(rt: Runtime, tenant_id: str, item: PublishRequest) -> None:
    """Pin the template version, check every variant renders, fill title/body for in-app.

    The streams and history show the in-app rendering in the message's locale; each
    channel renders again at delivery in the recipient's locale.
    """
    ref = item.template
    assert ref is not None  # noqa: S101 - only called for templated requests
    version, compiled = await templates.load_template(rt, tenant_id, ref.name, ref.version)
    ref.version = version
    variables = ref.variables or {}
    compiled.render_all(variables)  # fail at publish, not at 3 a.m. in the dispatcher
    shown = compiled.render(INAPP, ref.locale, variables)
    item.title, item.body = shown.title, shown.body


def _deliver_at(rt: Runtime, item: PublishRequest, now: datetime) -> datetime | None:
    """When to publish a scheduled item; None for now. Refuses the far future and the past."""
    if item.deliver_at is None:
        return None
    ahead = (item.deliver_at - now).total_seconds()
    if ahead > limits.SCHEDULE_AHEAD_MAX:
        raise BadRequest("deliver_at is more than 30 days ahead", slug="invalid-schedule")
    if ahead < -rt.settings.replay_window:
        raise BadRequest("deliver_at is in the past", slug="invalid-schedule")
    return item.deliver_at.astimezone(UTC) if ahead >= 1 else None


@dataclass(slots=True)
class _Batch:
    """What one publish request adds, in request order."""

    results: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    records: list[MessageRecord] = dataclasses.field(default_factory=list)
    contents: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    events: list[AuditEvent] = dataclasses.field(default_factory=list)
    routing: list[Routing] = dataclasses.field(default_factory=list)
    later: list[ScheduledRecord] = dataclasses.field(default_factory=list)
    later_events: list[AuditEvent] = dataclasses.field(default_factory=list)


async def publish(
    rt: Runtime,
    claims: AccessClaims,
    items: list[PublishRequest | ApiError],
    *,
    single: bool,
    idempotency_key: str | None,
    request_hash: bytes,
    release: str | None = None,
) -> Outcome:
    """Publish validated requests (invalid batch items arrive as their ApiError).

    Items with a future ``deliver_at`` are stored sealed and published by the planner
    when due, under the id answered now; ``release`` is that id when the planner
    publishes one (the scheduled row becomes ``published`` in the same transaction).
    """
    now = utcnow()
    # The Idempotency-Key is not looked up first: the commit inserts it under a unique
    # constraint, so a retry fails there and is answered as a replay (below). That saves
    # a database read on every publish; a retry costs its sealing, which is rare work.
    batch = _Batch()
    for candidate in items:
        item = await _admit(rt, claims, candidate, release=release is not None)
        if isinstance(item, ApiError):
            if single:
                # A retry whose request is now refused (its e2e id is taken by the first
                # attempt, its schedule has passed) still gets the first answer.
                answered = await _answered_if_keyed(rt, claims, idempotency_key, request_hash, now)
                if answered is not None:
                    return answered
                raise item
            batch.results.append({"error": _problem(item)})
            continue
        await _take(rt, claims, batch, item, release=release, now=now)

    idem = None
    if idempotency_key is not None:
        idem = IdempotencyRecord(
            app_id=claims.client_id,
            key=idempotency_key,
            request_hash=request_hash,
            status=202,
            response=msgspec.json.encode({"single": single, "results": batch.results}),
            created_at=now,
        )
    try:
        refs = await _commit(rt, claims.tenant_id, batch, idem, release=release, now=now)
    except IntegrityConflict:
        if release is not None:
            raise  # the planner: the scheduled message was cancelled meanwhile
        # The key was used before (a retry, or a concurrent request that won the race):
        # answer as its replay. A record older than 24 h was purged: commit once more.
        answered = await _answered_if_keyed(rt, claims, idempotency_key, request_hash, now)
        if answered is not None:
            return answered
        try:
            refs = await _commit(rt, claims.tenant_id, batch, idem, release=release, now=now)
        except IntegrityConflict:
            # The only other unique value a client chooses: an e2e message id.
            raise Conflict("a message with this id exists already") from None
    for result in batch.results:
        ref = refs.get(result.get("id", ""))
        if ref is not None:
            result["audit"] = _audit_ref(*ref)
    return Outcome(202, batch.results[0] if single else {"results": batch.results})


async def _take(
    rt: Runtime,
    claims: AccessClaims,
    batch: _Batch,
    item: PublishRequest,
    *,
    release: str | None,
    now: datetime,
) -> None:
    """Add an admitted item to the batch: to publish now, or at its ``deliver_at``."""
    message_id = release or item.id or rt.ids.new_str()
    at = None if release else _deliver_at(rt, item, now)
    if at is not None:
        await _take_later(rt, claims, batch, item, message_id=message_id, at=at, now=now)
    else:
        await _take_now(rt, claims, batch, item, message_id=message_id, now=now)


async def _take_now(
    rt: Runtime,
    claims: AccessClaims,
    batch: _Batch,
    item: PublishRequest,
    *,
    message_id: str,
    now: datetime,
) -> None:
    """Seal an item to publish now; its routing happens at commit."""
    content = content_of(item)
    plain = msgspec.json.encode(content)
    sealed = await rt.keyring.seal(claims.tenant_id, message_id, "content", plain)
    record = MessageRecord(
        id=message_id,
        tenant_id=claims.tenant_id,
        app_id=claims.client_id,
        topic=item.topic,
        priority=item.priority,
        ttl=item.ttl,
        created_at=now,
        expires_at=now + timedelta(seconds=item.ttl),
        content=sealed,
        recipients=tuple(item.recipients or ()),
        category=item.category,
    )
    window = rt.settings.dedup_window if item.dedup_window is None else item.dedup_window
    digest = None
    if window and item.e2e is None and record.recipients:
        # A keyed digest: equal content is recognised without storing a guessable hash.
        digest = await rt.keyring.digest(
            claims.tenant_id, msgspec.json.encode(content, order="sorted")
        )
    batch.records.append(record)
    batch.contents.append(content)
    batch.routing.append(Routing(record, item, digest, window))
    batch.events.append(
        _event(
            claims, item, action="message.published", message_id=message_id, now=now
        ).with_details(content_sha256=hashlib.sha256(sealed).hexdigest())
    )
    batch.results.append({"id": message_id, "topic": item.topic})


async def _take_later(
    rt: Runtime,
    claims: AccessClaims,
    batch: _Batch,
    item: PublishRequest,
    *,
    message_id: str,
    at: datetime,
    now: datetime,
) -> None:
    """Seal a whole request (content, recipients, policy, template) to publish at ``at``."""
    sealed = await rt.keyring.seal(
        claims.tenant_id, message_id, SCHEDULED_FIELD, msgspec.json.encode(item)
    )
    batch.later.append(
        ScheduledRecord(
            id=message_id,
            tenant_id=claims.tenant_id,
            app_id=claims.client_id,
            topic=item.topic,
            deliver_at=at,
            state="scheduled",
            request=sealed,
            created_at=now,
            updated_at=now,
        )
    )
    batch.later_events.append(
        _event(
            claims, item, action="message.scheduled", message_id=message_id, now=now
        ).with_details(deliver_at=_iso(at))
    )
    batch.results.append(
        {"id": message_id, "topic": item.topic, "scheduled": True, "deliver_at": _iso(at)}
    )


@dataclass(slots=True)
class _Commit:
    """One publish request waiting for its group commit."""

    tenant_id: str
    batch: _Batch
    idem: IdempotencyRecord | None
    release: str | None
    now: datetime
    found: Targets


async def _commit(
    rt: Runtime,
    tenant_id: str,
    batch: _Batch,
    idem: IdempotencyRecord | None,
    *,
    release: str | None,
    now: datetime,
) -> dict[str, tuple[int, bytes]]:
    """Route, commit and fan out; returns each id's audit (index, leaf hash).

    Concurrent requests are committed together (:func:`_commit_group`).

    Raises:
        IntegrityConflict: this request's idempotency key or message id is taken, or
            ``release`` is no longer scheduled; nothing of it was stored.
    """
    found = await targets(rt, tenant_id, batch.routing)
    if rt.publish_group is None:
        rt.publish_group = GroupRunner(
            functools.partial(_commit_group, rt), group_max=limits.PUBLISH_GROUP_MAX
        )
    committed = await rt.publish_group.add(_Commit(tenant_id, batch, idem, release, now, found))
    ids = [r.id for r in batch.records] + [r.id for r in batch.later]
    return {
        i: (seq, leaf)
        for i, seq, leaf in zip(ids, committed.seqs, committed.leaf_hashes, strict=True)
    }


def _write(commit: _Commit, routed: Routed) -> PublishWrite:
    batch = commit.batch
    events = [
        e.with_details(suppressed=routed.suppressed[r.id]) if r.id in routed.suppressed else e
        for e, r in zip(batch.events, batch.records, strict=True)
    ]
    return PublishWrite(
        batch.records,
        [*events, *batch.later_events],
        commit.idem,
        routed.deliveries,
        batch.later,
        routed.notified,
        commit.release,
    )


async def _commit_group(rt: Runtime, group: list[_Commit]) -> list[PublishResult | BaseException]:
    """Commit concurrent publish requests in one transaction, then fan them out in order.

    Under the node's publish lock, so that live subscribers see messages in commit
    (``seq``) order and routing sees the notification log of every earlier request. If
    the group breaks a store rule (a taken idempotency key or message id), the requests
    are routed and committed again one by one, so that only the culprit fails.
    """
    async with rt.publish_lock:
        writes: list[PublishWrite] = []
        notified: list[NotifyRecord] = []
        for commit in group:
            routed = await route(
                rt,
                commit.tenant_id,
                commit.batch.routing,
                commit.found,
                commit.now,
                pending=notified,
            )
            notified.extend(routed.notified)
            writes.append(_write(commit, routed))
        results: list[PublishResult | BaseException]
        try:
            results = list(await rt.store.publish_group(writes))
            rt.metrics.record_publish_commit(len(group))
        except IntegrityConflict as exc:
            if len(group) == 1:
                return [exc]
            results = [await _commit_alone(rt, commit) for commit in group]
        live: list[LiveMessage] = []
        for commit, result in zip(group, results, strict=True):
            if isinstance(result, PublishResult):
                live.extend(
                    _live(_with_seq(r, s, h), c)
                    for r, c, s, h in zip(
                        commit.batch.records,
                        commit.batch.contents,
                        result.seqs,
                        result.leaf_hashes,
                        strict=False,
                    )
                )
        await rt.bus.publish(live)
    if rt.dispatcher is not None and any(w.channel_deliveries for w in writes):
        rt.dispatcher.wake()
    if live:
        rt.metrics.record_publish("accepted", len(live))
    return results


async def _commit_alone(rt: Runtime, commit: _Commit) -> PublishResult | BaseException:
    """Route and commit one request of a failed group on its own (under the publish lock)."""
    try:
        routed = await route(rt, commit.tenant_id, commit.batch.routing, commit.found, commit.now)
        result = (await rt.store.publish_group([_write(commit, routed)]))[0]
    except IntegrityConflict as exc:
        return exc
    rt.metrics.record_publish_commit(1)
    return result


def _event(
    claims: AccessClaims, item: PublishRequest, *, action: str, message_id: str, now: datetime
) -> AuditEvent:
    return AuditEvent(
        time=now,
        tenant=claims.tenant_id,
        actor=f"app:{claims.client_id}",
        action=action,
        object=f"message:{message_id}",
        details={"topic": item.topic, "recipients": len(item.recipients or ())},
    )


def _with_seq(record: MessageRecord, seq: int, leaf: bytes) -> MessageRecord:
    return dataclasses.replace(record, seq=seq, leaf_hash=leaf)


def _problem(error: ApiError) -> dict[str, Any]:
    return {
        "type": error.type_uri,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
    }


async def open_content(rt: Runtime, record: MessageRecord) -> dict[str, Any]:
    """A message's content fields, decrypted; 410 when the tenant was shredded."""
    try:
        plain = await rt.keyring.open(record.tenant_id, record.id, "content", record.content)
    except DecryptionFailed:
        tenant = await rt.store.get_tenant(record.tenant_id)
        if tenant is not None and tenant.shredded_at is not None:
            raise Gone("this tenant's data keys were destroyed; the content is gone") from None
        raise
    content: dict[str, Any] = msgspec.json.decode(plain)
    return content


async def live_messages(rt: Runtime, seqs: list[int]) -> list[LiveMessage]:
    """Frame committed messages from the database (the cluster bus's fallback).

    A message whose content can no longer be opened (a shredded tenant) is left out.
    """
    found = []
    for record in await rt.store.messages_by_seq(seqs):
        try:
            content = await open_content(rt, record)
        except (DecryptionFailed, Gone):
            continue
        found.append(_live(record, content))
    return found


async def ensure_not_shredded(rt: Runtime, tenant_id: str) -> None:
    """410 for every content read of a shredded tenant, also on nodes still caching keys."""
    tenant = await rt.store.get_tenant(tenant_id)
    if tenant is not None and tenant.shredded_at is not None:
        raise Gone("this tenant's data keys were destroyed; the content is gone")


def metadata_view(record: MessageRecord) -> dict[str, Any]:
    """What operators see of a message: everything but its (encrypted) content."""
    return {
        "id": record.id,
        "topic": record.topic,
        "app_id": record.app_id,
        "priority": record.priority,
        "ttl": record.ttl,
        "created_at": _iso(record.created_at),
        "expires_at": _iso(record.expires_at),
        "recipients": list(record.recipients),
        "category": record.category,
        "audit": _audit_ref(record.seq, record.leaf_hash),
    }


async def message_view(rt: Runtime, record: MessageRecord) -> dict[str, Any]:
    """The JSON view of a stored message, content decrypted."""
    content = await open_content(rt, record)
    return {
        "id": record.id,
        "topic": record.topic,
        "title": content.get("title"),
        "body": content.get("body"),
        "data": content.get("data"),
        "priority": record.priority,
        "ttl": record.ttl,
        "created_at": _iso(record.created_at),
        "expires_at": _iso(record.expires_at),
        "recipients": list(record.recipients),
        "audit": _audit_ref(record.seq, record.leaf_hash),
        **({"category": record.category} if record.category is not None else {}),
        **({"template": content["template"]} if "template" in content else {}),
        **({"e2e": content["e2e"]} if "e2e" in content else {}),
    }


def delivery_view(d: DeliveryRecord) -> dict[str, Any]:
    """The JSON view of a delivery (no endpoint secrets: the endpoint is an id).

    ``next_attempt_at`` is when a pending or retrying delivery is due (later than now
    while quiet hours hold it), or when a waiting fallback step starts at the latest.
    """
    due = d.next_attempt_at if d.state in _DUE_VIEW_STATES else None
    return {
        "id": d.id,
        "message_id": d.message_id,
        "recipient": d.recipient,
        "channel": d.channel,
        "endpoint": d.endpoint,
        "state": d.state,
        "step": d.step,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "next_attempt_at": _iso(due) if due is not None else None,
        "created_at": _iso(d.created_at),
        "updated_at": _iso(d.updated_at),
    }


_DUE_VIEW_STATES = frozenset({"pending", "retrying", "waiting"})


async def get_message(rt: Runtime, claims: AccessClaims, message_id: str) -> dict[str, Any]:
    """A message with its deliveries; another tenant's message is simply not found."""
    record = await rt.store.get_message(claims.tenant_id, message_id)
    if record is None:
        later = await rt.store.get_scheduled(claims.tenant_id, message_id)
        if later is not None and can_read(claims, later.topic):
            return scheduled_view(later)
    if record is None or not can_read(claims, record.topic):
        raise NotFound(f"no message {message_id}")
    await ensure_not_shredded(rt, claims.tenant_id)
    view = await message_view(rt, record)
    view["deliveries"] = [
        delivery_view(d) for d in await rt.store.deliveries(claims.tenant_id, message_id)
    ]
    return view


def scheduled_view(record: ScheduledRecord) -> dict[str, Any]:
    """A scheduled message not published yet (or cancelled): no content, its schedule."""
    return {
        "id": record.id,
        "topic": record.topic,
        "state": record.state,
        "deliver_at": _iso(record.deliver_at),
        "created_at": _iso(record.created_at),
        "audit": _audit_ref(record.seq, record.leaf_hash),
        **({"reason": record.reason} if record.reason else {}),
        "deliveries": [],
    }


async def cancel_scheduled(rt: Runtime, claims: AccessClaims, message_id: str) -> dict[str, Any]:
    """Cancel a scheduled message until it is due; 409 once published or cancelled."""
    name = f"scheduled message {message_id[:64]}"
    record = await rt.store.get_scheduled(claims.tenant_id, message_id)
    if record is None:
        published = await rt.store.get_message(claims.tenant_id, message_id)
        if published is not None:
            where = Resource(claims.tenant_id, name=name, topic=published.topic)
            authorize(claims.principal, Action.MESSAGE_CANCEL, where)
            raise Conflict("the message was published already; it cannot be cancelled")
        raise NotFound(f"no {name}")
    # A caller who may not even read it is told it does not exist, as GET would say.
    where = Resource(claims.tenant_id, name=name, topic=record.topic)
    authorize(claims.principal, Action.MESSAGE_CANCEL, where)
    reason = f"cancelled by app:{claims.client_id}"
    if not await rt.store.cancel_scheduled(claims.tenant_id, message_id, reason, utcnow()):
        raise Conflict(f"the message is {record.state} already; it cannot be cancelled")
    await audit.record(
        rt,
        tenant=claims.tenant_id,
        actor=f"app:{claims.client_id}",
        action="message.cancelled",
        obj=f"message:{message_id}",
        topic=record.topic,
    )
    found = await rt.store.get_scheduled(claims.tenant_id, message_id)
    assert found is not None  # noqa: S101 - just cancelled under this tenant
    return scheduled_view(found)


async def history(
    rt: Runtime, claims: AccessClaims, topic: str, since: str | None, limit: int
) -> dict[str, Any]:
    """A page of one topic's history, oldest first, after message ``since``."""
    authorize(claims.principal, Action.HISTORY_READ, Resource(claims.tenant_id, topic=topic))
    after = -1
    if since is not None:
        seq = await rt.store.message_seq(claims.tenant_id, since)
        if seq is None:
            raise invalid_cursor(since)
        after = seq
    limit = max(1, min(limit, limits.HISTORY_PAGE_MAX))
    await ensure_not_shredded(rt, claims.tenant_id)
    records = await rt.store.messages_after(claims.tenant_id, after, limit, topic=topic)
    messages = [await message_view(rt, r) for r in records]
    return {"messages": messages, "next": messages[-1]["id"] if messages else None}
