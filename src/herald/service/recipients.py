"""Recipients and their endpoints (DESIGN §2, §7): contact data sealed at rest.

``PUT /v1/recipients/{id}`` replaces a recipient's endpoints and preferences. Each endpoint
is validated by its channel plugin, given an id, and its whole configuration (addresses,
URLs, secrets) is sealed with the tenant's data key (AAD binds tenant, endpoint id and the
field), so none of it is readable from the database. Views redact each channel's secret
fields.
"""

from __future__ import annotations

import json
import secrets
from typing import Annotated, Any

import msgspec

from herald import limits
from herald.channels.base import redact_endpoint
from herald.channels.registry import ChannelRegistry
from herald.core.preferences import parse_preferences
from herald.errors import BadRequest, Conflict, NotFound
from herald.service import audit
from herald.service.delivery import ENDPOINT_FIELD, open_endpoint
from herald.service.runtime import Runtime, utcnow
from herald.storage.base import DeliveryRecord, EndpointRecord, RecipientRecord

__all__ = [
    "ENDPOINTS_MAX",
    "RecipientRequest",
    "add_webpush",
    "get_recipient",
    "put_recipient",
    "retry_delivery",
]

#: Endpoints one recipient may have.
ENDPOINTS_MAX = 32


class RecipientRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``PUT /v1/recipients/{id}``: endpoints (each ``{"channel": …, …config}``)."""

    endpoints: Annotated[list[dict[str, Any]], msgspec.Meta(max_length=ENDPOINTS_MAX)]
    preferences: dict[str, Any] | None = None


def _check_recipient(recipient: str) -> str:
    if not recipient or len(recipient) > limits.RECIPIENT_ID_MAX or not recipient.isprintable():
        raise BadRequest("invalid recipient id")
    return recipient


async def put_recipient(
    rt: Runtime,
    channels: ChannelRegistry,
    tenant_id: str,
    recipient: str,
    req: RecipientRequest,
    *,
    actor: str,
) -> dict[str, Any]:
    """Validate, seal and store a recipient's endpoints; returns the redacted view."""
    _check_recipient(recipient)
    now = utcnow()
    records: list[EndpointRecord] = []
    views: list[dict[str, Any]] = []
    for raw in req.endpoints:
        name = raw.get("channel")
        if not isinstance(name, str):
            raise BadRequest("every endpoint names its channel")
        channel = channels.get(name)
        config = channel.validate({k: v for k, v in raw.items() if k != "channel"})
        endpoint_id = "ep_" + secrets.token_hex(10)
        sealed = await rt.keyring.seal(
            tenant_id, endpoint_id, ENDPOINT_FIELD, json.dumps(config).encode("utf-8")
        )
        records.append(EndpointRecord(endpoint_id, tenant_id, recipient, name, sealed, now))
        views.append(
            {
                "id": endpoint_id,
                "channel": name,
                **redact_endpoint(channel, config),
                "disabled": False,
            }
        )
    # Validated and normalised (unknown keys refused), so the router can trust them.
    preferences = msgspec.to_builtins(parse_preferences(req.preferences))
    await rt.store.put_recipient(
        RecipientRecord(tenant_id, recipient, json.dumps(preferences), now), records
    )
    await audit.record(
        rt,
        tenant=tenant_id,
        actor=actor,
        action="recipient.updated",
        obj=f"recipient:{recipient}",
        endpoints=[r.channel for r in records],
    )
    return {"recipient": recipient, "endpoints": views, "preferences": preferences}


async def get_recipient(
    rt: Runtime, channels: ChannelRegistry, tenant_id: str, recipient: str
) -> dict[str, Any]:
    """A recipient with its endpoints, secrets redacted."""
    found = await rt.store.get_recipient(tenant_id, _check_recipient(recipient))
    if found is None:
        raise NotFound(f"no recipient {recipient[:64]!r}")
    record, endpoints = found
    views = []
    for endpoint in endpoints:
        config = await open_endpoint(rt, tenant_id, endpoint.id, endpoint.config)
        shown = (
            redact_endpoint(channels.get(endpoint.channel), config)
            if endpoint.channel in channels
            else {}
        )
        views.append(
            {
                "id": endpoint.id,
                "channel": endpoint.channel,
                **shown,
                "disabled": endpoint.disabled_at is not None,
            }
        )
    return {
        "recipient": recipient,
        "endpoints": views,
        "preferences": json.loads(record.preferences),
    }


async def retry_delivery(
    rt: Runtime, tenant_id: str, delivery_id: str, *, actor: str
) -> DeliveryRecord:
    """Make a dead (or failed) delivery due again — a manual retry, audited.

    Raises:
        NotFound: no such dead or failed channel delivery of this tenant.
        Conflict: its endpoint was removed or disabled: retrying could not succeed.
    """
    current = await rt.store.get_delivery(tenant_id, delivery_id)
    if current is not None and current.channel != "inapp":
        endpoint = await rt.store.get_endpoint(tenant_id, current.endpoint)
        if endpoint is None or endpoint.disabled_at is not None:
            raise Conflict("the delivery's endpoint was removed or disabled; update the recipient")
    if not await rt.store.requeue_delivery(tenant_id, delivery_id, utcnow(), ("dead", "failed")):
        raise NotFound(f"no dead delivery {delivery_id[:64]}")
    if rt.dispatcher is not None:
        rt.dispatcher.wake()
    record = await rt.store.get_delivery(tenant_id, delivery_id)
    assert record is not None  # noqa: S101 - just requeued under this tenant
    await audit.record(
        rt,
        tenant=tenant_id,
        actor=actor,
        action="delivery.retried",
        obj=f"delivery:{delivery_id}",
        message=record.message_id,
        channel=record.channel,
    )
    return record


async def add_webpush(
    rt: Runtime,
    channels: ChannelRegistry,
    tenant_id: str,
    recipient: str,
    subscription: Any,
    *,
    actor: str,
) -> tuple[str, bool]:
    """Register one browser's push subscription for a recipient (its other endpoints stay).

    The same push endpoint URL registered again answers the endpoint it already has.

    Returns:
        ``(endpoint id, created)``.

    Raises:
        BadRequest: an invalid subscription, or the recipient has too many endpoints.
    """
    _check_recipient(recipient)
    channel = channels.get("webpush")
    config = channel.validate({"subscription": subscription})
    found = await rt.store.get_recipient(tenant_id, recipient)
    for endpoint in found[1] if found is not None else []:
        if endpoint.channel == "webpush" and endpoint.disabled_at is None:
            known = await open_endpoint(rt, tenant_id, endpoint.id, endpoint.config)
            if known.get("subscription", {}).get("endpoint") == config["subscription"]["endpoint"]:
                return endpoint.id, False
    now = utcnow()
    endpoint_id = "ep_" + secrets.token_hex(10)
    sealed = await rt.keyring.seal(
        tenant_id, endpoint_id, ENDPOINT_FIELD, json.dumps(config).encode("utf-8")
    )
    preferences = json.dumps(msgspec.to_builtins(parse_preferences(None)))
    added = await rt.store.add_endpoint(
        RecipientRecord(tenant_id, recipient, preferences, now),
        EndpointRecord(endpoint_id, tenant_id, recipient, "webpush", sealed, now),
        ENDPOINTS_MAX,
    )
    if not added:
        raise BadRequest(f"a recipient has at most {ENDPOINTS_MAX} endpoints")
    await audit.record(
        rt,
        tenant=tenant_id,
        actor=actor,
        action="recipient.endpoint_added",
        obj=f"recipient:{recipient}",
        channel="webpush",
        endpoint=endpoint_id,
    )
    return endpoint_id, True
