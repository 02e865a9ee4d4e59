"""Recipients, endpoints and deliveries (dead letters and manual retries)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald import limits
from herald.channels.registry import ChannelRegistry
from herald.channels.webpush import vapid_public_key_b64url
from herald.core.delivery import DeliveryState
from herald.core.messages import decode_json
from herald.core.policy import Action
from herald.errors import BadRequest, Conflict, NotFound, ServiceUnavailable
from herald.server.api import app_allowed, runtime, verify_signature
from herald.server.requests import read_body, require_json
from herald.server.responses import json_response
from herald.service import recipients
from herald.service.messages import delivery_view
from herald.service.runtime import Runtime, utcnow

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


async def list_deliveries(request: Request) -> Response:
    """``GET /v1/deliveries?state=dead&limit=&after=``: dead letters and the rest."""
    rt = runtime(request)
    claims = await app_allowed(request, Action.DELIVERY_LIST)
    state = request.query_params.get("state")
    if state is not None and state not in _STATES:
        raise BadRequest(f"state must be one of {', '.join(_STATES)}")
    text = request.query_params.get("limit", "100")
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= limits.HISTORY_PAGE_MAX:
        raise BadRequest(f"limit must be an integer from 1 to {limits.HISTORY_PAGE_MAX}")
    after = request.query_params.get("after")
    found = await rt.store.list_deliveries(claims.tenant_id, state, int(text), after)
    views = [delivery_view(d) for d in found]
    return json_response({"deliveries": views, "next": views[-1]["id"] if views else None})


async def retry_delivery(request: Request) -> Response:
    """``POST /v1/deliveries/{id}:retry``: a dead delivery is due again.

    409 when its endpoint was removed or disabled: retrying could not succeed.
    """
    rt = runtime(request)
    claims = await app_allowed(request, Action.DELIVERY_RETRY)
    raw = await read_body(request, 1024)
    await verify_signature(request, raw, tenant_id=claims.tenant_id, app_id=claims.client_id)
    delivery_id = request.path_params["delivery_id"]
    current = await rt.store.get_delivery(claims.tenant_id, delivery_id)
    if current is not None and current.channel != "inapp":
        endpoint = await rt.store.get_endpoint(claims.tenant_id, current.endpoint)
        if endpoint is None or endpoint.disabled_at is not None:
            raise Conflict("the delivery's endpoint was removed or disabled; update the recipient")
    if not await rt.store.requeue_delivery(
        claims.tenant_id, delivery_id, utcnow(), ("dead", "failed")
    ):
        raise NotFound(f"no dead delivery {delivery_id[:64]}")
    if rt.dispatcher is not None:
        rt.dispatcher.wake()
    record = await rt.store.get_delivery(claims.tenant_id, delivery_id)
    assert record is not None  # noqa: S101 - just requeued under this tenant
    return json_response(delivery_view(record), 202)


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
    ]
