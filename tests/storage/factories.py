"""Record factories shared by the storage contract tests."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import UTC, datetime, timedelta

from herald.storage import Store
from herald.storage.base import AuditSink, MessageRecord, TenantKeyRecord, TenantRecord

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def uid() -> str:
    return str(uuid.uuid4())


def tenant(name: str | None = None) -> tuple[TenantRecord, TenantKeyRecord]:
    tid = uid()
    return (
        TenantRecord(id=tid, name=name or f"tenant-{tid[:8]}", created_at=T0),
        TenantKeyRecord(tenant_id=tid, version=1, wrapped_key=b"\x00wrapped", created_at=T0),
    )


async def new_tenant(store: Store, name: str | None = None) -> str:
    record, key = tenant(name)
    await store.create_tenant(record, key)
    return record.id


def message(
    tenant_id: str, *, topic: str = "orders.shipped", recipients: tuple[str, ...] = ()
) -> MessageRecord:
    return MessageRecord(
        id=uid(),
        tenant_id=tenant_id,
        app_id="app-1",
        topic=topic,
        priority="normal",
        ttl=3600,
        created_at=T0,
        expires_at=T0 + timedelta(hours=1),
        content=os.urandom(48),
        recipients=recipients,
    )


def sink(tag: str = "m") -> AuditSink:
    def build(index: int) -> tuple[bytes, bytes]:
        entry = f'{{"index":{index},"tag":"{tag}"}}'.encode()
        return entry, hashlib.sha256(b"\x00" + entry).digest()  # RFC 9162 §2.1.1 leaf

    return build
