"""Recipients, endpoints and deliveries (dead letters and manual retries)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald import limits
from herald.channels.registry import ChannelRegistry
from herald.channels.webpush import vapid_public_key_b64url
from herald.core.delivery import DeliveryState
from herald.core.messages import decode_json
from herald.core.policy import Action, Resource, authorize
from herald.errors import BadRequest, InvalidToken, ServiceUnavailable
from herald.server.api import app_allowed, runtime, subscriber_claims, verify_signature
from herald.server.requests import bearer_token, int_param, read_body, require_json
from herald.server.responses import json_response
from herald.service import recipients
from herald.service.messages import delivery_view
from herald.service.runtime import Runtime

__all__ = ["recipient_routes"]

_STATES = tuple(state.value for state in DeliveryState)


def _channels(rt: Runtime) -> ChannelRegistry:
    if rt.channels is None:
        raise ServiceUnavailable("delivery channels are not running on this node")
    return rt.channels


async def put_recipient(request: Request) -> Response:
    """``PUT /v1/recipients/{recipient}`` (``admin`` scope, signed)."""
    rt = runtime(request)
    claims = await app_allowed(request, Action.RECIPIENT_WRITE)
    raw = await read_body(request, rt.settings.max_body_bytes)
    await verify_signature(request, raw, tenant_id=claims.tenant_id, app_id=claims.client_id)
    require_json(request)
    req = decode_json(raw, recipients.RecipientRequest)
    body = await recipients.put_recipient(
        rt,
        _channels(rt),
        claims.tenant_id,
        request.path_params["recipient"],
        req,
        actor=f"app:{claims.client_id}",
    )
    return json_response(body)


async def get_recipient(request: Request) -> Response:
    """``GET /v1/recipients/{recipient}`` (``admin`` or ``messages:read``)."""
    rt = runtime(request)
    claims = await app_allowed(request, Action.RECIPIENT_READ)
    body = await recipients.get_recipient(
        rt, _channels(rt), claims.tenant_id, request.path_params["recipient"]
    )
    return json_response(body)


def delivery_state(request: Request) -> str | None:
    """The ``state`` query parameter: one of the delivery states, or None."""
    state = request.query_params.get("state") or None
    if state is not None and state not in _STATES:
        raise BadRequest(f"state must be one of {', '.join(_STATES)}")
    return state


def page_limit(request: Request, default: int = 100) -> int:
    """The ``limit`` query parameter: 1 to :data:`herald.limits.HISTORY_PAGE_MAX`."""
    return int_param(request, "limit", default, 1, limits.HISTORY_PAGE_MAX)


async def delivery_page(rt: Runtime, request: Request, tenant_id: str) -> Response:
    """One page of a tenant's deliveries (``state``, ``limit``, ``after``)."""
    state, limit = delivery_state(request), page_limit(request)
    after = request.query_params.get("after")
    found = await rt.store.list_deliveries(tenant_id, state, limit, after)
    views = [delivery_view(d) for d in found]
    return json_response({"deliveries": views, "next": views[-1]["id"] if views else None})


async def list_deliveries(request: Request) -> Response:
    """``GET /v1/deliveries?state=dead&limit=&after=``: dead letters and the rest."""
    rt = runtime(request)
    claims = await app_allowed(request, Action.DELIVERY_LIST)
    return await delivery_page(rt, request, claims.tenant_id)


async def retry_delivery(request: Request) -> Response:
    """``POST /v1/deliveries/{id}:retry``: a dead delivery is due again.

    409 when its endpoint was removed or disabled: retrying could not succeed.
    """
    rt = runtime(request)
    claims = await app_allowed(request, Action.DELIVERY_RETRY)
    raw = await read_body(request, 1024)
    await verify_signature(request, raw, tenant_id=claims.tenant_id, app_id=claims.client_id)
    record = await recipients.retry_delivery(
        rt, claims.tenant_id, request.path_params["delivery_id"], actor=f"app:{claims.client_id}"
    )
    return json_response(delivery_view(record), 202)


class WebPushRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/webpush/subscriptions``: ``PushSubscription.toJSON()`` of a browser."""

    subscription: dict[str, Any]


async def add_webpush_subscription(request: Request) -> Response:
    """``POST /v1/webpush/subscriptions``: a browser registers Web Push for its recipient.

    With the recipient's subscriber token (unsigned, like stream tickets: browsers hold no
    app key); the recipient is the token's. 201 with the new endpoint id, 200 with the
    existing one when this push endpoint URL was registered before.
    """
    rt = runtime(request)
    token = bearer_token(request)
    if token is None or rt.token_service().kind_of(token) != "subscriber":
        raise InvalidToken("a subscriber token is required (Authorization: Bearer …)")
    claims = await subscriber_claims(request, token)
    where = Resource(claims.tenant_id, recipient=claims.recipient)
    authorize(claims.principal, Action.DEVICE_REGISTER, where)
    raw = await read_body(request, 4096)
    require_json(request)
    req = decode_json(raw, WebPushRequest)
    endpoint_id, created = await recipients.add_webpush(
        rt,
        _channels(rt),
        claims.tenant_id,
        claims.recipient,
        req.subscription,
        actor=claims.principal.actor,
    )
    return json_response({"endpoint_id": endpoint_id}, 201 if created else 200)


async def vapid_key(request: Request) -> Response:
    """``GET /v1/webpush/vapid-key``: the applicationServerKey for ``pushManager.subscribe``."""
    rt = runtime(request)
    key = await rt.vapid_key()
    if key is None:
        raise ServiceUnavailable("no VAPID key yet")
    return json_response(
        {"public_key": vapid_public_key_b64url(key)}, headers={"Cache-Control": "max-age=300"}
    )


def recipient_routes() -> list[Route]:
    """The recipient and delivery routes."""
    return [
        Route("/v1/recipients/{recipient}", put_recipient, methods=["PUT"]),
        Route("/v1/recipients/{recipient}", get_recipient, methods=["GET"]),
        Route("/v1/deliveries", list_deliveries, methods=["GET"]),
        Route("/v1/deliveries/{delivery_id}:retry", retry_delivery, methods=["POST"]),
        Route("/v1/webpush/vapid-key", vapid_key, methods=["GET"]),
        Route("/v1/webpush/subscriptions", add_webpush_subscription, methods=["POST"]),
    ]
