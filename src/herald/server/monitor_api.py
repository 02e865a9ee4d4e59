"""What operators watch (the web console's dashboard and messages pages), per tenant.

* ``GET /v1/admin/tenants/{tenant}/overview`` — activity over time, deliveries by channel
  and state, live streams, dead letters;
* ``GET /v1/admin/tenants/{tenant}/messages`` and ``…/messages/{id}`` — message *metadata*
  and every delivery with its attempts and last error (operators never see content: it
  stays sealed);
* ``GET /v1/admin/tenants/{tenant}/deliveries`` and ``POST …/deliveries/{id}:retry`` —
  dead letters and manual retries (audited, naming the operator).

Operator tokens only (bearer, or the console's session cookie); the policy decides per
tenant, and another tenant's objects answer 404 like missing ones.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald.core.ids import parse_message_id
from herald.core.policy import Action, Principal, Resource, authorize
from herald.core.topics import validate_topic
from herald.errors import BadRequest, NotFound
from herald.server.api import runtime
from herald.server.auth import authenticate
from herald.server.recipients import delivery_page, delivery_state, page_limit
from herald.server.requests import int_param
from herald.server.responses import json_response
from herald.service import recipients
from herald.service.messages import delivery_view, metadata_view
from herald.service.runtime import Runtime, utcnow
from herald.storage.base import MessageQuery

__all__ = ["monitor_routes", "path_tenant"]

#: Bounds of the activity series: bucket seconds and how many buckets.
_BUCKET_MIN, _BUCKET_MAX = 10, 86_400
_BUCKETS_MAX = 360
_SEARCH_PAGE = 200


async def path_tenant(request: Request, action: Action) -> tuple[Runtime, Principal, str]:
    """The caller, authorised for ``action`` on the path's ``{tenant}``, which must exist.

    A tenant that does not exist is 404 exactly like another operator's.
    """
    rt = runtime(request)
    principal = await authenticate(request, action)
    tenant = request.path_params["tenant"]
    resource = Resource(tenant, name=f"tenant {tenant[:64]}")
    authorize(principal, action, resource)
    if len(tenant) > 128 or await rt.store.get_tenant(tenant) is None:
        raise NotFound(f"no {resource.name}")
    return rt, principal, tenant


def _time(request: Request, name: str) -> datetime | None:
    """An RFC 3339 time with an offset (``Z`` or ``+hh:mm``), or None when absent."""
    text = request.query_params.get(name) or None
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text) if len(text) <= 40 else None
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: the offset leaves years 1-9999
        pass
    raise BadRequest(f"{name} must be an RFC 3339 time with an offset, e.g. 2026-01-31T08:00Z")


async def overview(request: Request) -> Response:
    """``GET /v1/admin/tenants/{tenant}/overview?window=3600&bucket=60``."""
    rt, _, tenant = await path_tenant(request, Action.TENANT_MONITOR)
    bucket = int_param(request, "bucket", 60, _BUCKET_MIN, _BUCKET_MAX)
    window = int_param(request, "window", 3600, bucket, bucket * _BUCKETS_MAX)
    series = await rt.store.activity(tenant, utcnow(), bucket, window // bucket)
    counts = await rt.store.delivery_counts(tenant)
    return json_response(
        {
            "window": window,
            "bucket": bucket,
            "start": datetime.fromtimestamp(series.start, UTC).isoformat(),
            "series": {
                "published": series.published,
                "delivered": series.delivered,
                "failed": series.failed,
            },
            "deliveries": [{"channel": c, "state": s, "count": n} for c, s, n in counts],
            "dead_letters": sum(n for _, s, n in counts if s == "dead"),
            # This node's streams; other nodes count their own (herald cluster status).
            "streams": rt.hub.tenant_streams(tenant),
            "nodes": None,
        }
    )


def _topic(request: Request) -> str | None:
    text = request.query_params.get("topic") or None
    if text is None:
        return None
    try:
        validate_topic(text[:-2] if text.endswith(".>") else text)
    except BadRequest:
        raise BadRequest("topic must be a topic, or a prefix ending in .> (orders.>)") from None
    return text


async def search(request: Request) -> Response:
    """``GET /v1/admin/tenants/{tenant}/messages?topic=&recipient=&state=&since=&until=``."""
    rt, _, tenant = await path_tenant(request, Action.MESSAGE_SEARCH)
    before = request.query_params.get("before") or None
    if before is not None and not (before.isascii() and before.isdigit() and len(before) < 19):
        raise BadRequest("before must be the next cursor of an earlier page")
    recipient = request.query_params.get("recipient") or None
    query = MessageQuery(
        tenant,
        topic=_topic(request),
        recipient=recipient[:256] if recipient is not None else None,
        state=delivery_state(request),
        since=_time(request, "since"),
        until=_time(request, "until"),
        before_seq=int(before) if before is not None else None,
    )
    limit = min(page_limit(request, 50), _SEARCH_PAGE)
    found = await rt.store.search_messages(query, limit)
    states = await rt.store.delivery_states(tenant, [m.id for m in found])
    views = [metadata_view(m) | {"deliveries": states.get(m.id, {})} for m in found]
    more = len(found) == limit
    return json_response({"messages": views, "next": str(found[-1].seq) if more else None})


async def message(request: Request) -> Response:
    """``GET /v1/admin/tenants/{tenant}/messages/{id}``: metadata and every delivery."""
    rt, _, tenant = await path_tenant(request, Action.MESSAGE_SEARCH)
    text = request.path_params["message_id"]
    name = f"message {text[:64]}"
    try:
        message_id = parse_message_id(text)
    except BadRequest:
        raise NotFound(f"no {name}") from None
    record = await rt.store.get_message(tenant, message_id)
    if record is None:
        raise NotFound(f"no {name}")
    deliveries = await rt.store.deliveries(tenant, message_id)
    return json_response(
        metadata_view(record) | {"deliveries": [delivery_view(d) for d in deliveries]}
    )


async def deliveries(request: Request) -> Response:
    """``GET /v1/admin/tenants/{tenant}/deliveries?state=dead&limit=&after=``."""
    rt, _, tenant = await path_tenant(request, Action.DELIVERY_LIST)
    return await delivery_page(rt, request, tenant)


async def retry(request: Request) -> Response:
    """``POST /v1/admin/tenants/{tenant}/deliveries/{id}:retry`` (audited)."""
    rt, principal, tenant = await path_tenant(request, Action.DELIVERY_RETRY)
    delivery_id = request.path_params["delivery_id"]
    record = await recipients.retry_delivery(rt, tenant, delivery_id, actor=principal.actor)
    return json_response(delivery_view(record), 202)


def monitor_routes() -> list[Route]:
    """The operator monitoring routes."""
    base = "/v1/admin/tenants/{tenant}"
    return [
        Route(f"{base}/overview", overview, methods=["GET"]),
        Route(f"{base}/messages", search, methods=["GET"]),
        Route(f"{base}/messages/{{message_id}}", message, methods=["GET"]),
        Route(f"{base}/deliveries", deliveries, methods=["GET"]),
        Route(f"{base}/deliveries/{{delivery_id}}:retry", retry, methods=["POST"]),
    ]
