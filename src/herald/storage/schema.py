"""The relational schema of Herald, as SQLAlchemy Core tables, for SQLite and PostgreSQL.

This module is the single description of the schema. Migrations under
``herald/storage/migrations`` create exactly these tables (a test reflects a migrated
database and compares it with :data:`metadata`).

Conventions:

- ids are ``TEXT`` (UUIDs and client ids in canonical text form); bytes are ``BLOB``/``BYTEA``;
- times are ``TIMESTAMP WITH TIME ZONE`` stored in UTC through :class:`UtcDateTime`, which
  also makes SQLite (which has no time-zone type) hand back aware UTC datetimes;
- every constraint and index has a deterministic name (:data:`NAMING_CONVENTION`) so that
  migrations can refer to them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)

__all__ = [
    "NAMING_CONVENTION",
    "JsonStrTuple",
    "UtcDateTime",
    "apps",
    "audit_entries",
    "deliveries",
    "idempotency",
    "messages",
    "metadata",
    "notify_log",
    "operators",
    "revoked_tokens",
    "scheduled",
    "signing_keys",
    "templates",
    "tenant_keys",
    "tenants",
]

#: Names of constraints and indexes, so that every backend gets the same, predictable ones.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored in UTC; naive datetimes are refused.

    PostgreSQL keeps ``timestamptz``; SQLite stores the UTC wall time as text, so values
    read back from it get ``tzinfo=UTC`` attached here.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC before storing; refuse naive values (their zone is unknown)."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: Herald stores only timezone-aware times")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Hand back an aware datetime in UTC."""
        del dialect  # part of the TypeDecorator API; the same for every backend
        if value is None:
            return None
        if not isinstance(value, datetime):  # pragma: no cover - driver contract
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JsonStrTuple(TypeDecorator[tuple[str, ...]]):
    """A tuple of strings stored as a JSON array in a ``TEXT`` column."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: tuple[str, ...] | None, dialect: Dialect) -> str | None:
        """Encode as compact JSON."""
        del dialect  # part of the TypeDecorator API; the same for every backend
        if value is None:
            return None
        return json.dumps(list(value), separators=(",", ":"), ensure_ascii=False)

    def process_result_value(self, value: Any, dialect: Dialect) -> tuple[str, ...] | None:
        """Decode the JSON array."""
        del dialect  # part of the TypeDecorator API; the same for every backend
        if value is None:
            return None
        return tuple(str(item) for item in json.loads(value))


metadata = MetaData(naming_convention=NAMING_CONVENTION)

tenants = Table(
    "tenants",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # Set when the tenant's data keys were destroyed (crypto-shredding).
    Column("shredded_at", UtcDateTime, nullable=True),
    UniqueConstraint("name"),
)

tenant_keys = Table(
    "tenant_keys",
    metadata,
    Column("tenant_id", Text, ForeignKey("tenants.id"), nullable=False),
    Column("version", Integer, nullable=False, autoincrement=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("tenant_id", "version"),
)

apps = Table(
    "apps",
    metadata,
    Column("id", Text, primary_key=True),
    Column("tenant_id", Text, ForeignKey("tenants.id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("secret_hash", LargeBinary, nullable=False),
    # Space-separated, as in the OAuth ``scope`` parameter (RFC 6749 §3.3).
    Column("scopes", Text, nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # Tokens of this app issued before this instant are refused (set when the app is
    # disabled or its secret rotated): live tokens die with the credential.
    Column("tokens_not_before", UtcDateTime, nullable=True),
    # RFC 8705 tls_client_certificate_bound_access_tokens: tokens only over mutual TLS.
    Column("require_bound_tokens", Boolean, nullable=False, server_default=false()),
    Index(None, "tenant_id"),
)

operators = Table(
    "operators",
    metadata,
    # People who run Herald. tenant_id NULL: a global operator (every tenant).
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("tenant_id", Text, ForeignKey("tenants.id"), nullable=True),
    # Argon2id PHC string (argon2-cffi), never the password.
    Column("password_hash", Text, nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # Operator tokens issued before this instant are refused (disable, new password).
    Column("tokens_not_before", UtcDateTime, nullable=True),
    UniqueConstraint("name"),
)

revoked_tokens = Table(
    "revoked_tokens",
    metadata,
    # RFC 7009 revocations, kept until the token would have expired anyway. app_id is the
    # credential holder: an app, or an operator for operator tokens (logout).
    Column("jti", Text, primary_key=True),
    Column("app_id", Text, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=False),
    Index(None, "expires_at"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", Text, primary_key=True),
    Column("purpose", Text, nullable=False),
    Column("algorithm", Text, nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("wrapped_private_key", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # Published (JWKS) from created_at, signs from activates_at (None: from created_at),
    # verifies and stays published until retired_at (None: for ever).
    Column("retired_at", UtcDateTime, nullable=True),
    Column("activates_at", UtcDateTime, nullable=True),
)

devices = Table(
    "devices",
    metadata,
    Column("device_id", Text, primary_key=True),
    Column("tenant_id", Text, ForeignKey("tenants.id"), nullable=False),
    Column("recipient", Text, nullable=False),
    Column("public_key", LargeBinary, nullable=False),  # raw X25519 public key (HPKE)
    Column("label", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Index(None, "tenant_id", "recipient"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("name", Text, nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("cursor", BigInteger, nullable=False),  # last message seq done
    Column("target", Integer, nullable=False),  # the key version rows move to
    Column("started_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("name", "tenant_id"),
)

app_keys = Table(
    "app_keys",
    metadata,
    Column("keyid", Text, primary_key=True),
    Column("app_id", Text, ForeignKey("apps.id"), nullable=False),
    Column("tenant_id", Text, ForeignKey("tenants.id"), nullable=False),
    Column("algorithm", Text, nullable=False),
    Column("public_key", LargeBinary, nullable=False),  # raw Ed25519 key, empty for HMAC
    Column("secret", LargeBinary, nullable=False),  # sealed HMAC secret, empty for Ed25519
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    Index(None, "app_id"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Text, primary_key=True),
    Column("tenant_id", Text, ForeignKey("tenants.id"), nullable=False),
    Column("app_id", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("priority", Text, nullable=False),
    Column("ttl", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("recipients", JsonStrTuple, nullable=False),
    # The audit index of the message's entry: gap-free, in commit order; the resume cursor.
    Column("seq", BigInteger, nullable=False, autoincrement=False),
    Column("leaf_hash", LargeBinary, nullable=False),
    # Metadata like the topic (not content): selects the recipients' category preferences.
    Column("category", Text, nullable=True),
    UniqueConstraint("seq"),
    Index(None, "tenant_id", "seq"),
    Index(None, "tenant_id", "topic", "seq"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Text, primary_key=True),
    Column("message_id", Text, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("tenant_id", Text, ForeignKey("tenants.id"), nullable=False),
    Column("channel", Text, nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Channel deliveries: the recipient, when the next attempt is due, and the node that
    # holds it (a lease: another node reclaims it once lease_until has passed).
    Column("recipient", Text, nullable=True),
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("lease_owner", Text, nullable=True),
    Column("lease_until", UtcDateTime, nullable=True),
    # Fallback: the plan step of this delivery (0 starts at once; later ones wait), and the
    # seconds the step waits for a delivery of an earlier step before it starts anyway.
    Column("step", Integer, nullable=False, server_default="0"),
    Column("fallback_after", Integer, nullable=True),
    UniqueConstraint("message_id", "channel", "endpoint"),
    Index(None, "tenant_id", "message_id"),
    Index(None, "state", "next_attempt_at"),
)

recipients = Table(
    "recipients",
    metadata,
    Column("tenant_id", Text, ForeignKey("tenants.id"), nullable=False),
    Column("id", Text, nullable=False),
    Column("preferences", Text, nullable=False),  # JSON; no contact data
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
)

endpoints = Table(
    "endpoints",
    metadata,
    Column("id", Text, primary_key=True),
    Column("tenant_id", Text, ForeignKey("tenants.id"), nullable=False),
    Column("recipient", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("config", LargeBinary, nullable=False),  # sealed: addresses, URLs, secrets
    Column("created_at", UtcDateTime, nullable=False),
    Column("disabled_at", UtcDateTime, nullable=True),
    Index(None, "tenant_id", "recipient"),
)

templates = Table(
    "templates",
    metadata,
    Column("tenant_id", Text, ForeignKey("tenants.id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("version", Integer, nullable=False, autoincrement=False),
    Column("spec", Text, nullable=False),  # JSON TemplateSpec; versions are never changed
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", Text, nullable=False),
    PrimaryKeyConstraint("tenant_id", "name", "version"),
)

scheduled = Table(
    "scheduled",
    metadata,
    # The id the message will have when it is published at deliver_at.
    Column("id", Text, primary_key=True),
    Column("tenant_id", Text, ForeignKey("tenants.id"), nullable=False),
    Column("app_id", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("deliver_at", UtcDateTime, nullable=False),
    Column("state", Text, nullable=False),  # scheduled | published | cancelled
    # The sealed publish request; emptied once published or cancelled.
    Column("request", LargeBinary, nullable=False),
    Column("reason", Text, nullable=True),
    Column("seq", BigInteger, nullable=False, autoincrement=False),  # the message.scheduled entry
    Column("leaf_hash", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("lease_owner", Text, nullable=True),
    Column("lease_until", UtcDateTime, nullable=True),
    Index(None, "state", "deliver_at"),
)

notify_log = Table(
    "notify_log",
    metadata,
    # One row per (message, recipient) notified: what frequency caps count and content
    # de-duplication compares. ``digest`` is a keyed hash of the content, never the content.
    Column("tenant_id", Text, nullable=False),
    Column("recipient", Text, nullable=False),
    Column("message_id", Text, nullable=False),
    Column("category", Text, nullable=True),
    Column("digest", LargeBinary, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("message_id", "recipient"),
    Index(None, "tenant_id", "recipient", "created_at"),
)

audit_entries = Table(
    "audit_entries",
    metadata,
    # 0-based leaf index of the RFC 9162 tree; assigned by the store, never by a sequence.
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("entry", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

audit_nodes = Table(
    "audit_nodes",
    metadata,
    # Hash of the perfect, aligned subtree covering leaves [idx·2^level, (idx+1)·2^level).
    Column("level", Integer, nullable=False, autoincrement=False),
    Column("idx", BigInteger, nullable=False, autoincrement=False),
    Column("hash", LargeBinary, nullable=False),
    PrimaryKeyConstraint("level", "idx"),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary, nullable=False),
    Column("note", Text, nullable=False),  # the signed C2SP checkpoint note
    Column("created_at", UtcDateTime, nullable=False),
)

idempotency = Table(
    "idempotency",
    metadata,
    Column("app_id", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("request_hash", LargeBinary, nullable=False),
    Column("status", Integer, nullable=False),
    Column("response", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("app_id", "key"),
    # Lets a sweeper delete records older than limits.IDEMPOTENCY_TTL without a scan.
    Index(None, "created_at"),
)
