"""Subscriber tokens, stream tickets, and what a stream session does: catch-up and acks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from herald import limits
from herald.core.messages import SubscriberTokenRequest
from herald.core.policy import Action, Resource, allowed
from herald.core.topics import TopicPattern
from herald.crypto.tokens import AccessClaims, SubscriberClaims
from herald.errors import BadRequest, Forbidden, InvalidToken, NotFound
from herald.service import audit, revocation, throttle
from herald.service.messages import _live, ensure_not_shredded, invalid_cursor, open_content
from herald.service.runtime import Runtime, utcnow
from herald.streams.hub import StreamSession

__all__ = [
    "ack",
    "authenticate_stream",
    "catch_up",
    "issue_stream_ticket",
    "issue_subscriber_token",
    "resolve_patterns",
]

#: Messages read from history per page while a resuming session catches up.
_CATCH_UP_PAGE = 500


async def issue_subscriber_token(
    rt: Runtime, claims: AccessClaims, req: SubscriberTokenRequest
) -> dict[str, Any]:
    """Mint a subscriber token for one recipient, limited to patterns the app may use."""
    patterns = [TopicPattern.parse(t) for t in req.topics]
    for pattern in patterns:
        where = Resource(claims.tenant_id, pattern=pattern)
        if not allowed(claims.principal, Action.SUBSCRIBER_TOKEN_ISSUE, where):
            raise Forbidden(f"the token may not grant subscriptions to {pattern.text!r}")
    token, expires_in = rt.token_service().issue_subscriber(
        tenant_id=claims.tenant_id,
        client_id=claims.client_id,
        recipient=req.recipient,
        patterns=patterns,
        ttl=req.ttl,
    )
    rt.metrics.record_token("subscriber")
    return {
        "token": token,
        "expires_in": expires_in,
        "recipient": req.recipient,
        "topics": [p.text for p in patterns],
    }


async def issue_stream_ticket(rt: Runtime, claims: SubscriberClaims) -> dict[str, Any]:
    """Exchange a subscriber token for a single-use ticket valid 30 s."""
    ticket = await rt.tickets.issue(claims, limits.STREAM_TICKET_TTL)
    return {"ticket": ticket, "expires_in": limits.STREAM_TICKET_TTL}


async def authenticate_stream(
    rt: Runtime, *, bearer: str | None, ticket: str | None
) -> tuple[SubscriberClaims, dict[str, str]]:
    """A subscriber token from the header, or a ticket from the query (never both).

    Each connection with a token spends one of the subscriber's rate-limit tokens (429
    when none); returns the claims and the RateLimit fields to answer with.
    """
    if bearer is not None:
        claims = await rt.verify_subscriber(bearer)
        await revocation.ensure_live(rt, claims)
        return claims, await throttle.admit_subscriber(rt, claims)
    if ticket is not None and len(ticket) <= 128:
        redeemed = await rt.tickets.redeem(ticket)
        if redeemed is not None and redeemed.expires_at > utcnow().timestamp():
            # Paid for when it was issued; its token may have been revoked since.
            await revocation.ensure_live(rt, redeemed)
            return redeemed, {}
    raise InvalidToken("a subscriber token or a valid stream ticket is required")


def resolve_patterns(
    claims: SubscriberClaims, requested: str | list[str] | None
) -> list[TopicPattern]:
    """The session's patterns: each requested one must be covered by the token."""
    if requested is None or requested == "":
        return list(claims.patterns)
    texts = requested.split(",") if isinstance(requested, str) else requested
    if len(texts) > limits.TOPIC_PATTERNS_MAX:
        raise BadRequest(f"at most {limits.TOPIC_PATTERNS_MAX} topic patterns")
    patterns = [TopicPattern.parse(t.strip()) for t in texts]
    for pattern in patterns:
        where = Resource(claims.tenant_id, pattern=pattern)
        if not allowed(claims.principal, Action.STREAM_SUBSCRIBE, where):
            raise Forbidden(f"the subscriber token does not cover {pattern.text!r}")
    return patterns


async def catch_up(
    rt: Runtime, session: StreamSession, since: str
) -> AsyncIterator[tuple[int, str, bytes]]:
    """Yield ``(seq, frame, sse)`` of stored messages after ``since`` that the session wants.

    The session must already be registered with the hub, so nothing committed meanwhile is
    missed; the caller records ``last_seq`` so live copies are skipped.
    """
    cursor = await rt.store.message_seq(session.tenant_id, since)
    if cursor is None:
        raise invalid_cursor(since)
    await ensure_not_shredded(rt, session.tenant_id)
    now = utcnow()
    while True:
        page = await rt.store.messages_after(session.tenant_id, cursor, _CATCH_UP_PAGE)
        for record in page:
            cursor = record.seq
            if record.expires_at <= now:
                continue
            if record.recipients and session.recipient not in record.recipients:
                continue
            if not any(p.matches(record.topic) for p in session.patterns):
                continue
            live = _live(record, await open_content(rt, record))
            frame, sse = live.for_recipient(session.recipient)
            yield record.seq, frame, sse
        if len(page) < _CATCH_UP_PAGE:
            return


async def ack(rt: Runtime, session: StreamSession, message_id: str) -> None:
    """Mark the session recipient's in-app delivery of ``message_id`` delivered."""
    record = await rt.store.get_message(session.tenant_id, message_id)
    if (
        record is None
        or (record.recipients and session.recipient not in record.recipients)
        or not any(p.matches(record.topic) for p in session.patterns)
    ):
        raise NotFound(f"no message {message_id} on this stream")
    delivery = await rt.store.ack(session.tenant_id, message_id, session.recipient, utcnow())
    rt.metrics.record_delivery("inapp", "delivered")
    await audit.record(
        rt,
        tenant=session.tenant_id,
        actor=f"recipient:{session.recipient}",
        action="delivery.acked",
        obj=f"message:{message_id}",
        delivery=delivery.id,
        channel="inapp",
    )
