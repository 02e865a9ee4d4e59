"""Publishing and reading messages: the publish path of DESIGN §4, steps 5–9.

Authentication happened before these functions are called; they check scopes, seal the
content, commit message + deliveries + audit entry in one transaction, and hand the
committed messages to the bus. Commit and fan-out happen under the node's publish lock so
that live subscribers see messages in commit (``seq``) order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec

from herald import limits
from herald.audit.entry import AuditEvent
from herald.bus.base import LiveMessage
from herald.channels.registry import INAPP
from herald.core.messages import PublishRequest, content_of
from herald.core.topics import TopicPattern
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
from herald.service.runtime import Runtime, utcnow
from herald.storage.base import DeliveryRecord, IdempotencyRecord, MessageRecord

__all__ = [
    "Outcome",
    "can_read",
    "delivery_view",
    "ensure_not_shredded",
    "get_message",
    "history",
    "invalid_cursor",
    "message_view",
    "open_content",
    "publish",
]


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
    """``messages:read``, or a publish/subscribe scope that reaches ``topic``."""
    scopes = claims.scopes
    return (
        scopes.has("messages:read")
        or scopes.can_publish(topic)
        or scopes.can_subscribe(TopicPattern.parse(topic))
    )


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
        if "id" in item:
            message = await rt.store.get_message(claims.tenant_id, item["id"])
            if message is not None:
                item["audit"] = _audit_ref(message.seq, message.leaf_hash)
    body = items[0] if template.get("single") else {"results": items}
    return Outcome(record.status, body, replayed=True)


async def _check_e2e(rt: Runtime, claims: AccessClaims, req: PublishRequest) -> None:
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
    if req.id is not None and await rt.store.get_message(claims.tenant_id, req.id) is not None:
        raise Conflict(f"a message with id {req.id} exists already")


async def _route(
    rt: Runtime,
    tenant_id: str,
    records: list[MessageRecord],
    policies: list[list[str] | None],
    now: datetime,
) -> list[DeliveryRecord]:
    """One pending delivery per (message, enabled endpoint of its recipients, allowed channel).

    The unique (message, channel, endpoint) rule of the store makes this the only delivery
    an endpoint ever gets for a message.
    """
    wanted = sorted({r for record in records for r in record.recipients})
    endpoints = await rt.store.active_endpoints(tenant_id, wanted) if wanted else []
    routed: list[DeliveryRecord] = []
    for record, policy in zip(records, policies, strict=True):
        for endpoint in endpoints:
            if endpoint.recipient not in record.recipients:
                continue
            if policy is not None and endpoint.channel not in policy:
                continue
            routed.append(
                DeliveryRecord(
                    id=rt.ids.new_str(),
                    message_id=record.id,
                    tenant_id=tenant_id,
                    channel=endpoint.channel,
                    endpoint=endpoint.id,
                    state="pending",
                    attempts=0,
                    last_error=None,
                    created_at=now,
                    updated_at=now,
                    recipient=endpoint.recipient,
                    next_attempt_at=now,
                )
            )
    return routed


async def _admit(
    rt: Runtime, claims: AccessClaims, item: PublishRequest | ApiError
) -> PublishRequest | ApiError:
    """Scope (DESIGN §4 step 5) and e2e checks; a refusal becomes the item's problem."""
    if isinstance(item, ApiError):
        return item
    if not claims.scopes.can_publish(item.topic):
        return Forbidden(f"the token may not publish to topic {item.topic!r}")
    if item.channels is not None and rt.channels is not None:
        unknown = [c for c in item.channels if c != INAPP and c not in rt.channels]
        if unknown:
            return BadRequest(f"unknown channel {unknown[0][:32]!r}")
    if item.e2e is not None:
        try:
            await _check_e2e(rt, claims, item)
        except ApiError as exc:
            return exc
    return item


async def publish(
    rt: Runtime,
    claims: AccessClaims,
    items: list[PublishRequest | ApiError],
    *,
    single: bool,
    idempotency_key: str | None,
    request_hash: bytes,
) -> Outcome:
    """Publish validated requests (invalid batch items arrive as their ApiError)."""
    now = utcnow()
    if idempotency_key is not None:
        existing = await rt.store.get_idempotency(claims.client_id, idempotency_key)
        if existing is not None:
            if existing.created_at > now - timedelta(seconds=limits.IDEMPOTENCY_TTL):
                return await _replay(rt, claims, existing, request_hash)
            # Older than 24 h: the key is free again (the draft's expiry), so forget it.
            await rt.store.purge_idempotency(now - timedelta(seconds=limits.IDEMPOTENCY_TTL))

    records: list[MessageRecord] = []
    contents: list[dict[str, Any]] = []
    events: list[AuditEvent] = []
    results: list[dict[str, Any]] = []
    policies: list[list[str] | None] = []
    for candidate in items:
        item = await _admit(rt, claims, candidate)
        if isinstance(item, ApiError):
            if single:
                raise item
            results.append({"error": _problem(item)})
            continue
        message_id = item.id or rt.ids.new_str()
        content = content_of(item)
        sealed = await rt.keyring.seal(
            claims.tenant_id, message_id, "content", msgspec.json.encode(content)
        )
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
        )
        records.append(record)
        contents.append(content)
        # End-to-end content can only travel where the device opens it: the streams.
        policies.append([] if item.e2e is not None else item.channels)
        events.append(
            AuditEvent(
                time=now,
                tenant=claims.tenant_id,
                actor=f"app:{claims.client_id}",
                action="message.published",
                object=f"message:{message_id}",
                details={
                    "topic": item.topic,
                    "content_sha256": hashlib.sha256(sealed).hexdigest(),
                    "recipients": len(record.recipients),
                },
            )
        )
        results.append({"id": message_id, "topic": item.topic})

    idem = None
    if idempotency_key is not None:
        template = {"single": single, "results": results}
        idem = IdempotencyRecord(
            app_id=claims.client_id,
            key=idempotency_key,
            request_hash=request_hash,
            status=202,
            response=msgspec.json.encode(template),
            created_at=now,
        )
    routed = await _route(rt, claims.tenant_id, records, policies, now)
    async with rt.publish_lock:
        try:
            committed = await rt.store.publish(records, list(events), idem, routed)
        except IntegrityConflict:
            # A concurrent request with the same key won the race; answer as its replay.
            existing = (
                await rt.store.get_idempotency(claims.client_id, idempotency_key)
                if idempotency_key is not None
                else None
            )
            if existing is None:
                # The only other unique value a client chooses: an e2e message id.
                raise Conflict("a message with this id exists already") from None
            return await _replay(rt, claims, existing, request_hash)
        done = [
            _with_seq(r, s, h)
            for r, s, h in zip(records, committed.seqs, committed.leaf_hashes, strict=True)
        ]
        await rt.bus.publish([_live(r, c) for r, c in zip(done, contents, strict=True)])
    if routed and rt.dispatcher is not None:
        rt.dispatcher.wake()
    rt.metrics.record_publish("accepted", len(done))
    by_id = {r.id: r for r in done}
    for result in results:
        rec = by_id.get(result.get("id", ""))
        if rec is not None:
            result["audit"] = _audit_ref(rec.seq, rec.leaf_hash)
    return Outcome(202, results[0] if single else {"results": results})


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


async def ensure_not_shredded(rt: Runtime, tenant_id: str) -> None:
    """410 for every content read of a shredded tenant, also on nodes still caching keys."""
    tenant = await rt.store.get_tenant(tenant_id)
    if tenant is not None and tenant.shredded_at is not None:
        raise Gone("this tenant's data keys were destroyed; the content is gone")


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
        **({"e2e": content["e2e"]} if "e2e" in content else {}),
    }


def delivery_view(d: DeliveryRecord) -> dict[str, Any]:
    """The JSON view of a delivery (no endpoint secrets: the endpoint is an id)."""
    return {
        "id": d.id,
        "channel": d.channel,
        "endpoint": d.endpoint,
        "state": d.state,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "created_at": _iso(d.created_at),
        "updated_at": _iso(d.updated_at),
    }


async def get_message(rt: Runtime, claims: AccessClaims, message_id: str) -> dict[str, Any]:
    """A message with its deliveries; another tenant's message is simply not found."""
    record = await rt.store.get_message(claims.tenant_id, message_id)
    if record is None or not can_read(claims, record.topic):
        raise NotFound(f"no message {message_id}")
    await ensure_not_shredded(rt, claims.tenant_id)
    view = await message_view(rt, record)
    view["deliveries"] = [
        delivery_view(d) for d in await rt.store.deliveries(claims.tenant_id, message_id)
    ]
    return view


async def history(
    rt: Runtime, claims: AccessClaims, topic: str, since: str | None, limit: int
) -> dict[str, Any]:
    """A page of one topic's history, oldest first, after message ``since``."""
    if not can_read(claims, topic):
        raise Forbidden(f"the token may not read topic {topic!r}")
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
