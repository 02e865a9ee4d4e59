"""The storage Protocol: everything Herald keeps durably, behind one small interface.

Implementations: :class:`herald.storage.sql.SqlStore` over SQLAlchemy Core, which serves both
SQLite (embedded, the default) and PostgreSQL (cluster). One contract test suite
(``tests/storage``) runs against every implementation.

Records are plain frozen dataclasses; content fields of messages are stored only as the
opaque ``content`` ciphertext produced by :mod:`herald.crypto` — the store never sees
plaintext content. Every read is scoped by tenant: an object of another tenant is
indistinguishable from a missing one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from herald.core.nodes import QueueTotals

__all__ = [
    "ActivitySeries",
    "AppKeyRecord",
    "AppRecord",
    "AuditEntryRecord",
    "AuditSink",
    "CheckpointRecord",
    "DeliveryRecord",
    "DeviceRecord",
    "EndpointRecord",
    "IdempotencyRecord",
    "JobRecord",
    "MessageQuery",
    "MessageRecord",
    "NotifyRecord",
    "OperatorRecord",
    "PublishResult",
    "PublishWrite",
    "RecipientRecord",
    "ScheduledRecord",
    "SigningKeyRecord",
    "Store",
    "TemplateRecord",
    "TenantKeyRecord",
    "TenantRecord",
]


@dataclass(frozen=True, slots=True)
class TenantRecord:
    """An organisation: the isolation boundary."""

    id: str
    name: str
    created_at: datetime
    shredded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A recipient device's X25519 public key for end-to-end (HPKE) payloads."""

    device_id: str
    tenant_id: str
    recipient: str
    public_key: bytes
    label: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class JobRecord:
    """Progress of a resumable background job (e.g. re-encryption) for one tenant."""

    name: str
    tenant_id: str
    cursor: int
    target: int
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TenantKeyRecord:
    """A versioned per-tenant data-encryption key, stored only wrapped by a KEK."""

    tenant_id: str
    version: int
    wrapped_key: bytes
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AppRecord:
    """A publishing service of a tenant. ``id`` is the OAuth ``client_id``."""

    id: str
    tenant_id: str
    name: str
    secret_hash: bytes
    scopes: tuple[str, ...]
    disabled: bool
    created_at: datetime
    tokens_not_before: datetime | None = None
    #: RFC 8705: the app gets tokens only over mutual TLS, bound to its certificate.
    require_bound_tokens: bool = False


@dataclass(frozen=True, slots=True)
class OperatorRecord:
    """A person who runs Herald; ``tenant_id`` None means every tenant (global)."""

    id: str
    name: str
    tenant_id: str | None
    password_hash: str
    disabled: bool
    created_at: datetime
    tokens_not_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class AppKeyRecord:
    """A request-signing key of an app (RFC 9421 ``keyid``).

    Ed25519 keys keep the raw public key; HMAC keys keep only the secret sealed with the
    tenant's data key (AAD binds the keyid).
    """

    keyid: str
    app_id: str
    tenant_id: str
    algorithm: str  # "ed25519" | "hmac-sha256"
    public_key: bytes
    secret: bytes
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    """A server signing key (token or audit), private half wrapped by the master KEK."""

    kid: str
    purpose: str  # "token" | "audit"
    algorithm: str  # "Ed25519"
    public_key: bytes  # raw 32-byte Ed25519 public key
    wrapped_private_key: bytes
    created_at: datetime
    retired_at: datetime | None = None
    activates_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A published message. ``seq`` is its audit-log index: the commit order."""

    id: str  # UUIDv7, canonical text form
    tenant_id: str
    app_id: str
    topic: str
    priority: str
    ttl: int
    created_at: datetime
    expires_at: datetime
    content: bytes  # AEAD ciphertext of the content fields
    recipients: tuple[str, ...] = ()
    seq: int = 0  # filled by Store.publish
    leaf_hash: bytes = b""  # filled by Store.publish
    category: str | None = None


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """A console search over message metadata (every field optional but the tenant).

    Attributes:
        topic: Exact topic, or a prefix when it ends in ``.>`` (``orders.>``).
        recipient: Messages with a delivery to this recipient.
        state: Messages with a delivery in this state.
        since: Published at or after.
        until: Published before.
        before_seq: Only messages older than this audit index (the paging cursor).
    """

    tenant_id: str
    topic: str | None = None
    recipient: str | None = None
    state: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_seq: int | None = None


@dataclass(frozen=True, slots=True)
class ActivitySeries:
    """Counts per time bucket, oldest first; bucket ``i`` starts ``start + i * bucket`` s."""

    start: int  # Unix seconds, a multiple of ``bucket``
    bucket: int
    published: list[int]
    delivered: list[int]
    failed: list[int]


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One (message, endpoint) pair and its state."""

    id: str
    message_id: str
    tenant_id: str
    channel: str
    endpoint: str
    state: str
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    recipient: str | None = None
    next_attempt_at: datetime | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    step: int = 0  # fallback plan step (0: at once)
    fallback_after: int | None = None  # seconds the step waits before starting anyway


@dataclass(frozen=True, slots=True)
class TemplateRecord:
    """One version of a tenant's template (``spec`` is the JSON TemplateSpec)."""

    tenant_id: str
    name: str
    version: int
    spec: str
    created_at: datetime
    created_by: str


@dataclass(frozen=True, slots=True)
class ScheduledRecord:
    """A message accepted for publication at ``deliver_at`` (``request`` is sealed)."""

    id: str
    tenant_id: str
    app_id: str
    topic: str
    deliver_at: datetime
    state: str  # scheduled | published | cancelled
    request: bytes
    created_at: datetime
    updated_at: datetime
    reason: str | None = None
    seq: int = 0  # the message.scheduled audit entry; filled by Store.publish
    leaf_hash: bytes = b""
    lease_owner: str | None = None
    lease_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class NotifyRecord:
    """A recipient was notified of a message: counted by caps, compared by de-duplication."""

    tenant_id: str
    recipient: str
    message_id: str
    category: str | None
    digest: bytes | None  # keyed hash of the content, never the content
    created_at: datetime


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    """A recipient's address on one channel; ``config`` is sealed (contact data, secrets)."""

    id: str
    tenant_id: str
    recipient: str
    channel: str
    config: bytes
    created_at: datetime
    disabled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RecipientRecord:
    """A recipient's preferences (JSON text; contact data lives in sealed endpoints)."""

    tenant_id: str
    id: str
    preferences: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntryRecord:
    """One entry of the append-only audit log (canonical JSON, RFC 8785)."""

    index: int
    entry: bytes
    leaf_hash: bytes
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """A signed checkpoint (C2SP tlog-checkpoint in a signed note) of the audit log."""

    size: int
    root: bytes
    note: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The first answer to an ``Idempotency-Key``, replayed for retries."""

    app_id: str
    key: str
    request_hash: bytes
    status: int
    response: bytes
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What :meth:`Store.publish` assigned: the audit index and leaf hash of each message."""

    seqs: tuple[int, ...] = field(default_factory=tuple)
    leaf_hashes: tuple[bytes, ...] = field(default_factory=tuple)


class AuditSink(Protocol):
    """Builds audit entries inside the store's write transaction, once indices are known."""

    def __call__(self, index: int, /) -> tuple[bytes, bytes]:
        """Return ``(canonical_entry_bytes, leaf_hash)`` for the entry at ``index``."""
        ...


@dataclass(frozen=True, slots=True)
class PublishWrite:
    """What one publish request writes: the arguments of :meth:`Store.publish`.

    :meth:`Store.publish_group` commits several of them in one transaction (group commit).
    """

    messages: Sequence[MessageRecord]
    audit: Sequence[AuditSink]
    idempotency: IdempotencyRecord | None = None
    channel_deliveries: Sequence[DeliveryRecord] = ()
    scheduled: Sequence[ScheduledRecord] = ()
    notified: Sequence[NotifyRecord] = ()
    release: str | None = None


class Store(Protocol):
    """Durable state of Herald. All methods are coroutines; all are tenant-scoped reads."""

    dialect: str  # "sqlite" | "postgresql"

    async def migrate(self) -> None:
        """Bring the schema to the newest migration (Alembic ``upgrade head``)."""
        ...

    async def migration_status(self) -> tuple[str | None, str]:
        """Return ``(current_revision, head_revision)``."""
        ...

    async def ping(self) -> None:
        """Round-trip to the database; raises :class:`StorageError` when unreachable."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    # -- tenants, apps, keys --------------------------------------------------------------
    async def create_tenant(self, tenant: TenantRecord, key: TenantKeyRecord) -> None:
        """Create a tenant with its first data key; IntegrityConflict on a duplicate name."""
        ...

    async def get_tenant(self, tenant_id: str) -> TenantRecord | None:
        """The tenant with this id, or None."""
        ...

    async def get_tenant_by_name(self, name: str) -> TenantRecord | None:
        """The tenant with this name, or None."""
        ...

    async def tenant_keys(self, tenant_id: str) -> list[TenantKeyRecord]:
        """Every data-key version of a tenant, newest first."""
        ...

    async def add_tenant_key(self, key: TenantKeyRecord) -> None:
        """Store a new data-key version (rotation); IntegrityConflict if it exists."""
        ...

    async def rewrap_keys(
        self,
        tenant_keys: list[tuple[TenantKeyRecord, bytes]],
        signing_keys: list[tuple[SigningKeyRecord, bytes]],
    ) -> int:
        """Replace wrapped keys (KEK rotation) where they still hold the old bytes."""
        ...

    async def shred_tenant(self, tenant_id: str, now: datetime) -> bool:
        """Destroy every data key of a tenant and disable its apps, in one transaction.

        Returns False when the tenant does not exist.
        """
        ...

    async def list_tenants(self) -> list[TenantRecord]:
        """Every tenant, oldest first."""
        ...

    async def count_messages(self, tenant_id: str, after_seq: int | None = None) -> int:
        """How many messages a tenant has (with ``seq > after_seq`` when given)."""
        ...

    async def replace_contents(
        self, tenant_id: str, changes: list[tuple[str, bytes, bytes]], job: JobRecord
    ) -> int:
        """Swap message contents (id, old, new) where still ``old``, and save job progress.

        One transaction; returns how many rows changed (a row changed meanwhile is skipped).
        """
        ...

    async def get_job(self, name: str, tenant_id: str) -> JobRecord | None:
        """A job's progress, or None."""
        ...

    async def save_job(self, job: JobRecord) -> None:
        """Insert or update a job's progress."""
        ...

    async def replace_app_key_secret(self, keyid: str, old: bytes, new: bytes) -> bool:
        """Swap a sealed HMAC secret (re-encryption); False when it changed meanwhile."""
        ...

    async def add_device(self, device: DeviceRecord) -> None:
        """Register a recipient device key."""
        ...

    async def devices(self, tenant_id: str, recipient: str) -> list[DeviceRecord]:
        """The devices of one recipient, oldest first."""
        ...

    async def get_devices(self, tenant_id: str, device_ids: list[str]) -> list[DeviceRecord]:
        """The named devices of this tenant (missing ones are simply absent)."""
        ...

    async def create_app(self, app: AppRecord) -> None:
        """Create an app; IntegrityConflict when the id exists."""
        ...

    async def get_app(self, app_id: str) -> AppRecord | None:
        """The app with this client id, or None."""
        ...

    async def list_apps(self, tenant_id: str) -> list[AppRecord]:
        """The apps of one tenant, oldest first."""
        ...

    async def add_app_key(self, key: AppKeyRecord) -> None:
        """Store a request-signing key of an app."""
        ...

    async def get_app_key(self, keyid: str) -> AppKeyRecord | None:
        """The app key with this keyid (any app), or None."""
        ...

    async def list_app_keys(self, app_id: str) -> list[AppKeyRecord]:
        """Every key of one app, oldest first, revoked ones included."""
        ...

    async def revoke_app_key(self, app_id: str, keyid: str, now: datetime) -> AppKeyRecord | None:
        """Mark a key of ``app_id`` revoked (idempotent); None when it is not that app's."""
        ...

    async def add_signing_key(self, key: SigningKeyRecord) -> None:
        """Store a server signing key."""
        ...

    async def schedule_key_retirement(self, kid: str, retired_at: datetime) -> bool:
        """Set when a signing key stops verifying (never later than one already set)."""
        ...

    async def signing_keys(self, purpose: str) -> list[SigningKeyRecord]:
        """Signing keys of a purpose, newest first, retired ones included."""
        ...

    # -- messages ---------------------------------------------------------------------------
    async def publish(
        self,
        messages: list[MessageRecord],
        audit: list[AuditSink],
        idempotency: IdempotencyRecord | None = None,
        channel_deliveries: list[DeliveryRecord] | None = None,
        *,
        scheduled: list[ScheduledRecord] | None = None,
        notified: list[NotifyRecord] | None = None,
        release: str | None = None,
    ) -> PublishResult:
        """Persist messages, their in-app deliveries and audit entries in ONE transaction.

        Audit indices are assigned gap-free and in commit order while the store's write
        lock is held; ``audit[i]`` builds the entry of ``messages[i]``, and the entries of
        ``scheduled`` records follow (``audit[len(messages) + j]``). A recipient of a
        message gets one ``inapp`` delivery row in state ``pending``. When
        ``idempotency`` is given it is inserted in the same transaction; if a record for
        the same (app, key) exists the transaction is rolled back and
        IntegrityConflict is raised. ``release`` names a scheduled message these messages
        publish: it must still be ``scheduled`` (else IntegrityConflict, nothing stored)
        and becomes ``published`` in the same transaction.
        """
        ...

    async def publish_group(self, writes: Sequence[PublishWrite]) -> list[PublishResult]:
        """Commit several publish requests in ONE transaction (group commit), in order.

        Each write is what :meth:`publish` would store, with the same rules; their audit
        entries are appended in one batch, so indices follow the order of ``writes``. If
        any write breaks a rule (IntegrityConflict) nothing of any write is stored; the
        caller then commits them one by one to find the culprit.
        """
        ...

    # -- app credentials and token revocation (storage/_tokens.py) ----------------------------
    async def set_app_disabled(self, app_id: str, disabled: bool, now: datetime) -> bool:
        """Disable (live tokens die) or enable an app; False when there is no such app."""
        ...

    async def replace_app_secret(self, app_id: str, secret_hash: bytes, now: datetime) -> bool:
        """A new client secret; tokens issued before ``now`` are refused."""
        ...

    async def set_app_requires_bound_tokens(
        self, app_id: str, required: bool, now: datetime
    ) -> bool:
        """Require (its unbound live tokens die) or stop requiring certificate-bound tokens."""
        ...

    async def set_app_scopes(self, app_id: str, scopes: tuple[str, ...], now: datetime) -> bool:
        """Replace an app's scopes; tokens issued before ``now`` (with the old ones) die."""
        ...

    async def revoke_token(
        self, jti: str, app_id: str, expires_at: datetime, now: datetime
    ) -> None:
        """Record a revoked token id until ``expires_at``."""
        ...

    async def is_revoked(self, jti: str) -> bool:
        """Whether a token id was revoked."""
        ...

    async def purge_revocations(self, before: datetime) -> int:
        """Forget revocations of tokens that expired before ``before``."""
        ...

    # -- operators (storage/_tokens.py) ---------------------------------------------------------
    async def create_operator(self, operator: OperatorRecord) -> None:
        """Create an operator; IntegrityConflict when the name (or id) is taken."""
        ...

    async def get_operator(self, operator_id: str) -> OperatorRecord | None:
        """The operator with this id, or None."""
        ...

    async def get_operator_by_name(self, name: str) -> OperatorRecord | None:
        """The operator with this login name, or None."""
        ...

    async def list_operators(self) -> list[OperatorRecord]:
        """Every operator, oldest first."""
        ...

    async def update_operator(
        self,
        operator_id: str,
        now: datetime,
        *,
        disabled: bool | None = None,
        password_hash: str | None = None,
        revoke_tokens: bool = False,
    ) -> bool:
        """Change an operator; ``revoke_tokens`` refuses its tokens issued before ``now``.

        False when there is no such operator.
        """
        ...

    # -- templates, scheduled messages, notification log, fallback (storage/_plans.py) -----
    async def add_template(self, template: TemplateRecord) -> TemplateRecord:
        """Store the next version of a template (``version`` is assigned); returns it."""
        ...

    async def get_template(
        self, tenant_id: str, name: str, version: int | None = None
    ) -> TemplateRecord | None:
        """One version (the newest when ``version`` is None), or None."""
        ...

    async def list_templates(self, tenant_id: str) -> list[TemplateRecord]:
        """The newest version of each of a tenant's templates, by name."""
        ...

    async def get_scheduled(self, tenant_id: str, message_id: str) -> ScheduledRecord | None:
        """A scheduled message of this tenant, or None."""
        ...

    async def claim_scheduled(
        self, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[ScheduledRecord]:
        """Lease up to ``limit`` scheduled messages that are due."""
        ...

    async def release_scheduled(self, owner: str) -> int:
        """Give back the scheduled-message leases of ``owner``."""
        ...

    async def cancel_scheduled(
        self, tenant_id: str, message_id: str, reason: str, now: datetime, owner: str | None = None
    ) -> bool:
        """``scheduled`` → ``cancelled`` (request erased); with ``owner``, only under its lease."""
        ...

    async def recipient_preferences(self, tenant_id: str, recipients: list[str]) -> dict[str, str]:
        """The stored preferences (JSON text) of those recipients that exist."""
        ...

    async def notifications_since(
        self, tenant_id: str, recipients: list[str], since: datetime
    ) -> list[NotifyRecord]:
        """What these recipients were notified of since ``since``, oldest first."""
        ...

    async def purge_notifications(self, before: datetime) -> int:
        """Forget notification-log rows older than ``before``."""
        ...

    async def due_fallbacks(self, now: datetime, limit: int) -> list[tuple[str, str, str]]:
        """(tenant, message, recipient) groups with a waiting step due by ``now``."""
        ...

    async def start_step(
        self,
        tenant_id: str,
        message_id: str,
        recipient: str,
        step: int,
        *,
        at: datetime,
        next_deadline: datetime | None,
        now: datetime,
    ) -> int:
        """Start a fallback step: its waiting rows become pending at ``at``.

        The waiting rows of ``step + 1`` then wait until ``next_deadline``. Returns how
        many rows started (0: another node did it first).
        """
        ...

    async def close_waiting(
        self,
        tenant_id: str,
        message_id: str,
        recipient: str,
        *,
        state: str,
        reason: str,
        now: datetime,
    ) -> list[DeliveryRecord]:
        """Every waiting row of the group → ``state`` (skipped/expired); returns them."""
        ...

    # -- recipients, endpoints, delivery queue (storage/_queue.py) -------------------------
    async def put_recipient(
        self, recipient: RecipientRecord, endpoints: list[EndpointRecord]
    ) -> None:
        """Create or replace a recipient's preferences and endpoints."""
        ...

    async def add_endpoint(
        self, recipient: RecipientRecord, endpoint: EndpointRecord, cap: int
    ) -> bool:
        """Add one endpoint (the recipient is created if new); False at ``cap`` endpoints."""
        ...

    async def get_recipient(
        self, tenant_id: str, recipient: str
    ) -> tuple[RecipientRecord, list[EndpointRecord]] | None:
        """A recipient and its endpoints, or None."""
        ...

    async def active_endpoints(self, tenant_id: str, recipients: list[str]) -> list[EndpointRecord]:
        """The enabled endpoints of these recipients."""
        ...

    async def get_endpoint(self, tenant_id: str, endpoint_id: str) -> EndpointRecord | None:
        """One endpoint of this tenant, or None."""
        ...

    async def disable_endpoint(self, endpoint_id: str, now: datetime) -> None:
        """Stop delivering to an endpoint."""
        ...

    async def claim_deliveries(
        self, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[DeliveryRecord]:
        """Lease due channel deliveries to ``owner``."""
        ...

    async def finish_delivery(
        self,
        delivery_id: str,
        owner: str,
        *,
        state: str,
        attempts: int,
        last_error: str | None,
        next_attempt_at: datetime | None,
        now: datetime,
    ) -> bool:
        """Record an attempt's result while ``owner`` holds the lease."""
        ...

    async def release_leases(self, owner: str, now: datetime) -> int:
        """Give back every lease of ``owner``."""
        ...

    async def count_leases(self, owner: str, now: datetime) -> int:
        """Delivery leases ``owner`` holds now."""
        ...

    async def queue_totals(self, now: datetime) -> QueueTotals:
        """The channel-delivery queue by state, expired leases, live leases by owner."""
        ...

    async def list_deliveries(
        self, tenant_id: str, state: str | None, limit: int, after_id: str | None = None
    ) -> list[DeliveryRecord]:
        """A tenant's deliveries, optionally in one state."""
        ...

    # -- what operators look at (storage/_reports.py) ----------------------------------------
    async def activity(
        self, tenant_id: str, end: datetime, bucket: int, count: int
    ) -> ActivitySeries:
        """Published messages and finished deliveries per bucket, ``count`` buckets to ``end``."""
        ...

    async def delivery_counts(self, tenant_id: str) -> list[tuple[str, str, int]]:
        """``(channel, state, count)`` of every delivery of the tenant."""
        ...

    async def search_messages(self, query: MessageQuery, limit: int) -> list[MessageRecord]:
        """Messages matching ``query``, newest first (metadata; content is not decrypted)."""
        ...

    async def delivery_states(
        self, tenant_id: str, message_ids: Sequence[str]
    ) -> dict[str, dict[str, int]]:
        """Per message, how many of its deliveries are in each state."""
        ...

    async def get_delivery(self, tenant_id: str, delivery_id: str) -> DeliveryRecord | None:
        """One delivery of this tenant, or None."""
        ...

    async def requeue_delivery(
        self, tenant_id: str, delivery_id: str, now: datetime, from_states: tuple[str, ...]
    ) -> bool:
        """Make a finished delivery due again."""
        ...

    async def append_audit(self, audit: list[AuditSink]) -> list[int]:
        """Append non-message audit entries; returns their indices."""
        ...

    async def get_message(self, tenant_id: str, message_id: str) -> MessageRecord | None:
        """One message of this tenant, or None."""
        ...

    async def message_seq(self, tenant_id: str, message_id: str) -> int | None:
        """The ``seq`` of one message of this tenant (a resume cursor), or None."""
        ...

    async def messages_after(
        self, tenant_id: str, after_seq: int, limit: int, topic: str | None = None
    ) -> list[MessageRecord]:
        """Messages of a tenant with ``seq > after_seq`` in seq order (one topic if given)."""
        ...

    async def message_seqs_after(self, after_seq: int, limit: int) -> list[tuple[int, str]]:
        """``(seq, id)`` of every message (all tenants) above ``after_seq``, by seq.

        Commit order equals seq order (indices are assigned under the audit lock held until
        commit), so a message seen here has every lower-seq message committed before it.
        """
        ...

    async def count_messages_after(self, after_seq: int, cap: int) -> int:
        """Messages (all tenants) above ``after_seq``, counted up to ``cap``."""
        ...

    async def messages_by_seq(self, seqs: list[int]) -> list[MessageRecord]:
        """The messages with these seqs (all tenants), in seq order."""
        ...

    async def message_id_taken(self, message_id: str) -> bool:
        """Whether a message or scheduled message of any tenant has this id."""
        ...

    async def last_message_seq(self) -> int:
        """The highest message seq, or -1 when there is none."""
        ...

    async def deliveries(self, tenant_id: str, message_id: str) -> list[DeliveryRecord]:
        """The deliveries of one message, oldest first."""
        ...

    async def ack(
        self, tenant_id: str, message_id: str, recipient: str, now: datetime
    ) -> DeliveryRecord:
        """Mark the in-app delivery of ``message_id`` to ``recipient`` delivered.

        Creates the row (state ``delivered``) for topic messages without named recipients.
        Idempotent: acking twice leaves one delivered row.
        """
        ...

    async def get_idempotency(self, app_id: str, key: str) -> IdempotencyRecord | None:
        """The stored first answer for (app, key), or None."""
        ...

    async def purge_idempotency(self, before: datetime) -> int:
        """Delete idempotency records older than ``before``; returns how many."""
        ...

    async def audit_nodes(self, nodes: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Stored perfect-subtree hashes by (level, index); absent ones are left out."""
        ...

    async def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """Store a signed checkpoint; IntegrityConflict when one exists for that size."""
        ...

    async def checkpoints(
        self, *, after_size: int = -1, limit: int = 1000
    ) -> list[CheckpointRecord]:
        """Checkpoints with ``size > after_size``, smallest first."""
        ...

    async def latest_checkpoint(self) -> CheckpointRecord | None:
        """The checkpoint with the largest size, or None."""
        ...

    async def audit_size(self) -> int:
        """Number of audit entries."""
        ...

    async def audit_entries(self, start: int, end: int) -> list[AuditEntryRecord]:
        """Entries with ``start <= index < end``."""
        ...
