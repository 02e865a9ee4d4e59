"""End-to-end devices: recipients' X25519 public keys that publishers seal content to."""

from __future__ import annotations

import secrets
from typing import Any

from herald import limits
from herald.core.messages import DeviceRequest
from herald.crypto.e2e import b64url_encode, parse_public_key
from herald.errors import BadRequest
from herald.service import audit
from herald.service.runtime import Runtime, utcnow
from herald.storage.base import DeviceRecord

__all__ = ["device_view", "list_devices", "register_device"]


def device_view(device: DeviceRecord) -> dict[str, Any]:
    """The public JSON view of a device."""
    return {
        "device_id": device.device_id,
        "recipient": device.recipient,
        "public_key": b64url_encode(device.public_key),
        "label": device.label,
        "created_at": device.created_at.isoformat().replace("+00:00", "Z"),
    }


async def register_device(
    rt: Runtime, tenant_id: str, recipient: str, req: DeviceRequest, *, actor: str
) -> dict[str, Any]:
    """Register a device key for a recipient (at most 32 per recipient)."""
    if not recipient or len(recipient) > limits.RECIPIENT_ID_MAX:
        raise BadRequest("invalid recipient id")
    if req.label is not None and not req.label.isprintable():
        raise BadRequest("the label must be printable text")
    public_key = parse_public_key(req.public_key)
    existing = await rt.store.devices(tenant_id, recipient)
    if len(existing) >= limits.DEVICES_PER_RECIPIENT_MAX:
        raise BadRequest(f"a recipient has at most {limits.DEVICES_PER_RECIPIENT_MAX} devices")
    device = DeviceRecord(
        device_id="dev_" + secrets.token_hex(10),
        tenant_id=tenant_id,
        recipient=recipient,
        public_key=public_key,
        label=req.label,
        created_at=utcnow(),
    )
    await rt.store.add_device(device)
    await audit.record(
        rt,
        tenant=tenant_id,
        actor=actor,
        action="device.registered",
        obj=f"device:{device.device_id}",
        recipient=recipient,
    )
    return device_view(device)


async def list_devices(rt: Runtime, tenant_id: str, recipient: str) -> dict[str, Any]:
    """The devices of a recipient (public keys only)."""
    return {"devices": [device_view(d) for d in await rt.store.devices(tenant_id, recipient)]}
