"""Durable state of Herald: the :class:`Store` Protocol, its records, and the SQL store.

:class:`SqlStore` serves SQLite (embedded, the default) and PostgreSQL (cluster);
:mod:`herald.storage.migrate` brings a database's schema to the newest revision.
"""

from __future__ import annotations

from herald.storage.base import (
    AppKeyRecord,
    AppRecord,
    AuditEntryRecord,
    AuditSink,
    DeliveryRecord,
    IdempotencyRecord,
    MessageRecord,
    PublishResult,
    SigningKeyRecord,
    Store,
    TenantKeyRecord,
    TenantRecord,
)
from herald.storage.sql import SqlStore

__all__ = [
    "AppKeyRecord",
    "AppRecord",
    "AuditEntryRecord",
    "AuditSink",
    "DeliveryRecord",
    "IdempotencyRecord",
    "MessageRecord",
    "PublishResult",
    "SigningKeyRecord",
    "SqlStore",
    "Store",
    "TenantKeyRecord",
    "TenantRecord",
]
