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
from herald.errors import BadRequest, NotFound
from herald.service import audit
from herald.service.delivery import ENDPOINT_FIELD, open_endpoint
from herald.service.runtime import Runtime, utcnow
from herald.storage.base import EndpointRecord, RecipientRecord

__all__ = ["ENDPOINTS_MAX", "RecipientRequest", "get_recipient", "put_recipient"]

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
