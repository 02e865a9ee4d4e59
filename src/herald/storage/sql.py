"""The SQL implementation of :class:`herald.storage.base.Store`, for SQLite and PostgreSQL.

One class serves both databases through SQLAlchemy Core on asyncio drivers (``aiosqlite``,
``asyncpg``); the differences are confined to engine set-up and write serialisation:

SQLite (embedded):
    ``journal_mode=WAL`` so readers never block the writer; ``synchronous=FULL`` so that a
    committed transaction (and so every answered 202) survives power loss — in WAL mode
    ``NORMAL`` survives a process crash but may lose the last commits on power failure;
    ``foreign_keys=ON``; ``busy_timeout=5000``. SQLAlchemy, not the ``sqlite3`` module,
    emits ``BEGIN`` (the module skips it before ``SELECT``), and write transactions use
    ``BEGIN IMMEDIATE`` so that ``max(idx) + 1`` is read under the write lock even when
    another process (an admin command) writes too. Within one process writes are also
    serialised by one :class:`asyncio.Lock`, so coroutines queue instead of hitting
    ``SQLITE_BUSY``. The database file's directory is created with mode 0700, the file 0600.

PostgreSQL (cluster):
    audit indices are assigned under ``pg_advisory_xact_lock(AUDIT_LOCK_KEY)``, held until
    the transaction ends, so indices are gap-free and in commit order across all nodes.

Driver exceptions never leave this module: connection failures become
``StorageError("database unavailable")``, uniqueness and reference violations
:class:`~herald.errors.IntegrityConflict`. Messages never contain the database URL, and
the engine hides bound parameters from SQLAlchemy's error texts.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, nullcontext
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic.util import CommandError
from sqlalchemy import (
    Connection,
    Select,
    Table,
    and_,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from herald.audit import merkle
from herald.errors import ConfigError, IntegrityConflict, NotFound, StorageError
from herald.storage import migrate as _migrate
from herald.storage import schema as s
from herald.storage._plans import PlansMixin
from herald.storage._queue import QueueMixin
from herald.storage._reports import ReportsMixin
from herald.storage._tokens import TokensMixin
from herald.storage.base import (
    AppKeyRecord,
    AppRecord,
    AuditEntryRecord,
    AuditSink,
    CheckpointRecord,
    DeliveryRecord,
    DeviceRecord,
    IdempotencyRecord,
    JobRecord,
    MessageRecord,
    NotifyRecord,
    PublishResult,
    PublishWrite,
    ScheduledRecord,
    SigningKeyRecord,
    Store,
    TenantKeyRecord,
    TenantRecord,
)

__all__ = [
    "AUDIT_LOCK_KEY",
    "PG_CONNECT_TIMEOUT",
    "SQLITE_BUSY_TIMEOUT_MS",
    "SqlStore",
    "nodes_query",
]

#: ``pg_advisory_xact_lock`` key that serialises audit-index assignment ("HRLDAUDT").
AUDIT_LOCK_KEY = int.from_bytes(b"HRLDAUDT", "big", signed=True)
#: How long a SQLite connection waits for another process's write lock (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 5000
#: Seconds to wait for a PostgreSQL connection before reporting the database unavailable.
PG_CONNECT_TIMEOUT = 10.0

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
_SQLITE_PRAGMAS = (
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",  # first: switching to WAL may wait
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
)
_INAPP = "inapp"
_PENDING = "pending"
_DELIVERED = "delivered"
_UNAVAILABLE = "database unavailable"

_R = TypeVar("_R")


class SqlStore(QueueMixin, PlansMixin, TokensMixin, ReportsMixin):
    """:class:`~herald.storage.base.Store` over SQLAlchemy Core (SQLite or PostgreSQL).

    Args:
        url: an SQLAlchemy URL, ``sqlite+aiosqlite:///path`` or
            ``postgresql+asyncpg://user@host/db`` (plain ``sqlite:``/``postgresql:`` schemes
            are given the async driver).
        new_id: makes ids for rows the store creates itself (deliveries).
        clock: the current time, timezone-aware.

    Raises:
        ConfigError: the URL names an unsupported database.
        StorageError: the SQLite database file or its directory cannot be created.
    """

    dialect: str

    def __init__(
        self, url: str, *, new_id: Callable[[], str], clock: Callable[[], datetime]
    ) -> None:
        parsed = _normalise_url(url)
        if parsed.get_backend_name() == "sqlite":
            _prepare_sqlite_file(parsed.database)
        self._engine = _create_engine(parsed)
        self._write_engine = self._engine.execution_options(**{_migrate.WRITE_TRANSACTION: True})
        self.dialect = self._engine.dialect.name
        self._sqlite_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self._new_id = new_id
        self._clock = clock

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        new_id: Callable[[], str],
        clock: Callable[[], datetime],
        migrate: bool = True,
    ) -> SqlStore:
        """Create a store, check the database answers and (by default) migrate it to head.

        Raises:
            StorageError: the database is unreachable or cannot be migrated.
        """
        store = cls(url, new_id=new_id, clock=clock)
        try:
            await (store.migrate() if migrate else store.ping())
        except BaseException:
            await store.close()
            raise
        return store

    # -- plumbing ----------------------------------------------------------------------------
    def _lock(self) -> AbstractAsyncContextManager[Any]:
        return self._sqlite_lock if self._sqlite_lock is not None else nullcontext()

    @asynccontextmanager
    async def _tx(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction; writes on SQLite hold the lock and start ``BEGIN IMMEDIATE``."""
        engine = self._write_engine if write else self._engine
        async with self._lock() if write else nullcontext():
            with _mapped_errors():
                try:
                    conn = await engine.connect()
                except (OSError, sqlite3.Error, sa_exc.SQLAlchemyError) as exc:
                    raise StorageError(_UNAVAILABLE) from exc
                try:
                    async with conn.begin():
                        yield conn
                finally:
                    await conn.close()

    async def _next_audit_index(self, conn: AsyncConnection) -> int:
        if self.dialect == "postgresql":
            # Held until commit/rollback: indices are gap-free and in commit order.
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})
        last = await conn.scalar(select(func.max(s.audit_entries.c.idx)))
        return 0 if last is None else int(last) + 1

    async def _append(
        self, conn: AsyncConnection, audit: Sequence[AuditSink], now: datetime
    ) -> tuple[list[int], list[bytes]]:
        start = await self._next_audit_index(conn)
        indices = list(range(start, start + len(audit)))
        rows: list[dict[str, Any]] = []
        leaves: list[bytes] = []
        for index, sink in zip(indices, audit, strict=True):
            entry, leaf_hash = sink(index)
            rows.append({"idx": index, "entry": entry, "leaf_hash": leaf_hash, "created_at": now})
            leaves.append(leaf_hash)
        await _insert_many(conn, s.audit_entries, rows)
        await self._grow_tree(conn, start, leaves)
        return indices, leaves

    async def _grow_tree(self, conn: AsyncConnection, start: int, leaves: list[bytes]) -> None:
        """Store the perfect subtrees the new leaves complete (amortised < 2 per leaf).

        The left siblings they need come from earlier appends (one query for the batch)
        or from this batch; nothing is ever recomputed from the leaves.
        """
        wanted = {
            node
            for offset in range(len(leaves))
            for node in merkle.append_requires(start + offset)
            # Complete before this batch; siblings completed within it are computed below.
            if (node[1] + 1) << node[0] <= start
        }
        lookup = await self._nodes(conn, wanted)
        new: dict[tuple[int, int], bytes] = {}
        for offset, leaf in enumerate(leaves):
            made = merkle.new_node_hashes(start + offset, leaf, lookup)
            lookup.update(made)
            new.update(made)
        await _insert_many(
            conn,
            s.audit_nodes,
            [{"level": level, "idx": idx, "hash": digest} for (level, idx), digest in new.items()],
        )

    # -- lifecycle ---------------------------------------------------------------------------
    async def migrate(self) -> None:
        """Bring the schema to the newest migration (Alembic ``upgrade head``)."""
        async with self._lock():
            with _mapped_errors():
                await _migrate.upgrade(self._engine)

    async def migration_status(self) -> tuple[str | None, str]:
        """Return ``(current_revision, head_revision)``."""
        with _mapped_errors():
            return await _migrate.status(self._engine)

    async def ping(self) -> None:
        """Round-trip to the database; raises :class:`StorageError` when unreachable."""
        async with self._tx() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        """Release connections. Safe to call more than once."""
        await self._engine.dispose()

    # -- tenants, apps, keys -----------------------------------------------------------------
    async def create_tenant(self, tenant: TenantRecord, key: TenantKeyRecord) -> None:
        """Create a tenant with its first data key; IntegrityConflict on a duplicate name."""
        async with self._tx(write=True) as conn:
            await conn.execute(insert(s.tenants).values(_fields(tenant)))
            await conn.execute(insert(s.tenant_keys).values(_fields(key)))

    async def get_tenant(self, tenant_id: str) -> TenantRecord | None:
        """The tenant with this id, or None."""
        return await self._first(select(s.tenants).where(s.tenants.c.id == tenant_id), TenantRecord)

    async def get_tenant_by_name(self, name: str) -> TenantRecord | None:
        """The tenant with this name, or None."""
        return await self._first(select(s.tenants).where(s.tenants.c.name == name), TenantRecord)

    async def tenant_keys(self, tenant_id: str) -> list[TenantKeyRecord]:
        """Every data-key version of a tenant, newest first."""
        t = s.tenant_keys
        query = select(t).where(t.c.tenant_id == tenant_id).order_by(t.c.version.desc())
        return await self._fetch(query, TenantKeyRecord)

    async def add_tenant_key(self, key: TenantKeyRecord) -> None:
        """Store a new data-key version; IntegrityConflict when the version exists."""
        async with self._tx(write=True) as conn:
            await conn.execute(insert(s.tenant_keys).values(_fields(key)))

    async def rewrap_keys(
        self,
        tenant_keys: list[tuple[TenantKeyRecord, bytes]],
        signing_keys: list[tuple[SigningKeyRecord, bytes]],
    ) -> int:
        """Compare-and-swap wrapped keys (KEK rotation) in one transaction."""
        changed = 0
        tk, sk = s.tenant_keys, s.signing_keys
        async with self._tx(write=True) as conn:
            for key, new in tenant_keys:
                result = await conn.execute(
                    update(tk)
                    .where(
                        tk.c.tenant_id == key.tenant_id,
                        tk.c.version == key.version,
                        tk.c.wrapped_key == key.wrapped_key,
                    )
                    .values(wrapped_key=new)
                )
                changed += result.rowcount or 0
            for skey, new in signing_keys:
                result = await conn.execute(
                    update(sk)
                    .where(
                        sk.c.kid == skey.kid, sk.c.wrapped_private_key == skey.wrapped_private_key
                    )
                    .values(wrapped_private_key=new)
                )
                changed += result.rowcount or 0
        return changed

    async def shred_tenant(self, tenant_id: str, now: datetime) -> bool:
        """Delete the tenant's data keys, mark it shredded and disable its apps."""
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                update(s.tenants).where(s.tenants.c.id == tenant_id).values(shredded_at=now)
            )
            if not result.rowcount:
                return False
            await conn.execute(delete(s.tenant_keys).where(s.tenant_keys.c.tenant_id == tenant_id))
            await conn.execute(
                update(s.apps).where(s.apps.c.tenant_id == tenant_id).values(disabled=True)
            )
        return True

    async def list_tenants(self) -> list[TenantRecord]:
        """Every tenant, oldest first."""
        t = s.tenants
        return await self._fetch(select(t).order_by(t.c.created_at, t.c.id), TenantRecord)

    async def count_messages(self, tenant_id: str, after_seq: int | None = None) -> int:
        """How many messages a tenant has (with ``seq > after_seq`` when given)."""
        t = s.messages
        query = select(func.count()).where(t.c.tenant_id == tenant_id)
        if after_seq is not None:
            query = query.where(t.c.seq > after_seq)
        async with self._tx() as conn:
            value = await conn.scalar(query)
        return int(value or 0)

    async def replace_contents(
        self, tenant_id: str, changes: list[tuple[str, bytes, bytes]], job: JobRecord
    ) -> int:
        """Swap contents where unchanged and record the job's progress, atomically."""
        t = s.messages
        changed = 0
        async with self._tx(write=True) as conn:
            for message_id, old, new in changes:
                result = await conn.execute(
                    update(t)
                    .where(t.c.tenant_id == tenant_id, t.c.id == message_id, t.c.content == old)
                    .values(content=new)
                )
                changed += result.rowcount or 0
            await self._save_job(conn, job)
        return changed

    async def get_job(self, name: str, tenant_id: str) -> JobRecord | None:
        """A job's progress, or None."""
        t = s.jobs
        return await self._first(
            select(t).where(t.c.name == name, t.c.tenant_id == tenant_id), JobRecord
        )

    async def save_job(self, job: JobRecord) -> None:
        """Insert or update a job's progress."""
        async with self._tx(write=True) as conn:
            await self._save_job(conn, job)

    async def _save_job(self, conn: AsyncConnection, job: JobRecord) -> None:
        t = s.jobs
        result = await conn.execute(
            update(t)
            .where(t.c.name == job.name, t.c.tenant_id == job.tenant_id)
            .values(_fields(job))
        )
        if not result.rowcount:
            await conn.execute(insert(t).values(_fields(job)))

    async def replace_app_key_secret(self, keyid: str, old: bytes, new: bytes) -> bool:
        """Compare-and-swap a sealed HMAC secret."""
        t = s.app_keys
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                update(t).where(t.c.keyid == keyid, t.c.secret == old).values(secret=new)
            )
        return bool(result.rowcount)

    async def add_device(self, device: DeviceRecord) -> None:
        """Register a recipient device key; IntegrityConflict when the id exists."""
        async with self._tx(write=True) as conn:
            await conn.execute(insert(s.devices).values(_fields(device)))

    async def devices(self, tenant_id: str, recipient: str) -> list[DeviceRecord]:
        """The devices of one recipient, oldest first."""
        t = s.devices
        query = (
            select(t)
            .where(t.c.tenant_id == tenant_id, t.c.recipient == recipient)
            .order_by(t.c.created_at, t.c.device_id)
        )
        return await self._fetch(query, DeviceRecord)

    async def get_devices(self, tenant_id: str, device_ids: list[str]) -> list[DeviceRecord]:
        """The named devices of this tenant."""
        if not device_ids:
            return []
        t = s.devices
        query = select(t).where(t.c.tenant_id == tenant_id, t.c.device_id.in_(device_ids))
        return await self._fetch(query, DeviceRecord)

    async def create_app(self, app: AppRecord) -> None:
        """Create an app; IntegrityConflict when the id exists or the tenant does not."""
        if any(not scope or len(scope.split()) != 1 for scope in app.scopes):
            raise ValueError("a scope must be a non-empty string without whitespace")
        async with self._tx(write=True) as conn:
            await conn.execute(
                insert(s.apps).values(_fields(app) | {"scopes": " ".join(app.scopes)})
            )

    async def get_app(self, app_id: str) -> AppRecord | None:
        """The app with this client id, or None."""
        return await self._first(select(s.apps).where(s.apps.c.id == app_id), _app)

    async def list_apps(self, tenant_id: str) -> list[AppRecord]:
        """The apps of one tenant, oldest first."""
        t = s.apps
        query = select(t).where(t.c.tenant_id == tenant_id).order_by(t.c.created_at, t.c.id)
        return await self._fetch(query, _app)

    async def add_app_key(self, key: AppKeyRecord) -> None:
        """Store a request-signing key; IntegrityConflict when the keyid exists."""
        async with self._tx(write=True) as conn:
            await conn.execute(insert(s.app_keys).values(_fields(key)))

    async def get_app_key(self, keyid: str) -> AppKeyRecord | None:
        """The app key with this keyid, or None."""
        return await self._first(
            select(s.app_keys).where(s.app_keys.c.keyid == keyid), AppKeyRecord
        )

    async def list_app_keys(self, app_id: str) -> list[AppKeyRecord]:
        """Every key of one app, oldest first."""
        t = s.app_keys
        query = select(t).where(t.c.app_id == app_id).order_by(t.c.created_at, t.c.keyid)
        return await self._fetch(query, AppKeyRecord)

    async def revoke_app_key(self, app_id: str, keyid: str, now: datetime) -> AppKeyRecord | None:
        """Set ``revoked_at`` once; later calls keep the first revocation time."""
        t = s.app_keys
        mine = (t.c.keyid == keyid) & (t.c.app_id == app_id)
        async with self._tx(write=True) as conn:
            await conn.execute(
                update(t).where(mine & t.c.revoked_at.is_(None)).values(revoked_at=now)
            )
            row = (await conn.execute(select(t).where(mine))).first()
        return AppKeyRecord(**row._asdict()) if row is not None else None

    async def add_signing_key(self, key: SigningKeyRecord) -> None:
        """Store a server signing key; IntegrityConflict when the kid exists."""
        async with self._tx(write=True) as conn:
            await conn.execute(insert(s.signing_keys).values(_fields(key)))

    async def schedule_key_retirement(self, kid: str, retired_at: datetime) -> bool:
        """Set when a signing key stops verifying and leaves the JWKS (may be in the future).

        An earlier retirement already set is kept (a key is never un-retired or extended).
        """
        t = s.signing_keys
        later = t.c.retired_at.is_(None) | (t.c.retired_at > retired_at)
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                update(t).where(t.c.kid == kid, later).values(retired_at=retired_at)
            )
        return bool(result.rowcount)

    async def signing_keys(self, purpose: str) -> list[SigningKeyRecord]:
        """Signing keys of a purpose, newest first, retired ones included."""
        t = s.signing_keys
        order = (t.c.created_at.desc(), t.c.kid.desc())
        return await self._fetch(
            select(t).where(t.c.purpose == purpose).order_by(*order), SigningKeyRecord
        )

    # -- messages ----------------------------------------------------------------------------
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

        One executemany INSERT per table. The idempotency record is inserted before the
        audit sinks are called, so a conflicting retry fails without building any entry;
        whatever fails, nothing of the transaction is kept. ``audit`` holds one sink per
        message, then one per scheduled record.

        Raises:
            IntegrityConflict: the (app, key) idempotency record exists, a message id
                or reference is invalid, or ``release`` is no longer scheduled. Nothing
                was stored.
            StorageError: the database is unavailable.
        """
        write = PublishWrite(
            messages,
            audit,
            idempotency,
            channel_deliveries or (),
            scheduled or (),
            notified or (),
            release,
        )
        return (await self.publish_group([write]))[0]

    async def publish_group(self, writes: Sequence[PublishWrite]) -> list[PublishResult]:
        """Several publish requests in ONE transaction (group commit), in order.

        The rules of :meth:`publish` hold for each write; every table gets one executemany
        INSERT for the whole group and the audit entries one append, so a group of n
        requests costs about one commit instead of n.
        """
        for write in writes:
            if len(write.messages) + len(write.scheduled) != len(write.audit):
                raise ValueError("publish() needs exactly one audit sink per message")
        if not writes:
            return []
        now = self._clock()
        async with self._tx(write=True) as conn:
            for write in writes:
                if write.release is not None and not await self._release(conn, write.release, now):
                    raise IntegrityConflict("the scheduled message was cancelled or published")
            await _insert_many(
                conn,
                s.idempotency,
                [_fields(w.idempotency) for w in writes if w.idempotency is not None],
            )
            seqs, leaves = await self._append(conn, [a for w in writes for a in w.audit], now)
            rows: list[dict[str, Any]] = []
            deliveries: list[dict[str, Any]] = []
            later: list[dict[str, Any]] = []
            results: list[PublishResult] = []
            offset = 0
            for write in writes:
                mine = slice(offset, offset + len(write.audit))
                offset = mine.stop
                w_seqs, w_leaves = seqs[mine], leaves[mine]
                results.append(PublishResult(seqs=tuple(w_seqs), leaf_hashes=tuple(w_leaves)))
                for message, seq, leaf_hash in zip(write.messages, w_seqs, w_leaves, strict=False):
                    rows.append(_fields(message) | {"seq": seq, "leaf_hash": leaf_hash})
                    deliveries.extend(
                        self._delivery(message.tenant_id, message.id, recipient, _PENDING, now)
                        for recipient in dict.fromkeys(message.recipients)  # unique, in order
                    )
                deliveries.extend(_fields(x) for x in write.channel_deliveries)
                first = len(write.messages)
                later.extend(
                    _fields(x) | {"seq": w_seqs[first + i], "leaf_hash": w_leaves[first + i]}
                    for i, x in enumerate(write.scheduled)
                )
            await _insert_many(conn, s.messages, rows)
            await _insert_many(conn, s.deliveries, deliveries)
            await _insert_many(conn, s.notify_log, [_fields(x) for w in writes for x in w.notified])
            await _insert_many(conn, s.scheduled, later)
        return results

    async def append_audit(self, audit: list[AuditSink]) -> list[int]:
        """Append non-message audit entries; returns their indices."""
        async with self._tx(write=True) as conn:
            indices, _ = await self._append(conn, audit, self._clock())
        return indices

    async def get_message(self, tenant_id: str, message_id: str) -> MessageRecord | None:
        """One message of this tenant, or None."""
        t = s.messages
        query = select(t).where(t.c.id == message_id, t.c.tenant_id == tenant_id)
        return await self._first(query, MessageRecord)

    async def message_seq(self, tenant_id: str, message_id: str) -> int | None:
        """The ``seq`` of one message of this tenant (a resume cursor), or None."""
        t = s.messages
        query = select(t.c.seq).where(t.c.id == message_id, t.c.tenant_id == tenant_id)
        async with self._tx() as conn:
            seq = await conn.scalar(query)
        return None if seq is None else int(seq)

    async def messages_after(
        self, tenant_id: str, after_seq: int, limit: int, topic: str | None = None
    ) -> list[MessageRecord]:
        """Messages of a tenant with ``seq > after_seq`` in seq order (one topic if given).

        Served by the ``(tenant_id, seq)`` or ``(tenant_id, topic, seq)`` index.
        """
        t = s.messages
        query = select(t).where(t.c.tenant_id == tenant_id, t.c.seq > after_seq)
        if topic is not None:
            query = query.where(t.c.topic == topic)
        return await self._fetch(query.order_by(t.c.seq).limit(max(limit, 0)), MessageRecord)

    async def message_seqs_after(self, after_seq: int, limit: int) -> list[tuple[int, str]]:
        """``(seq, id)`` above ``after_seq`` in every tenant, by seq (the ``seq`` unique index)."""
        t = s.messages
        query = (
            select(t.c.seq, t.c.id)
            .where(t.c.seq > after_seq)
            .order_by(t.c.seq)
            .limit(max(limit, 0))
        )
        async with self._tx() as conn:
            return [(int(seq), str(id_)) for seq, id_ in (await conn.execute(query)).all()]

    async def count_messages_after(self, after_seq: int, cap: int) -> int:
        """Messages (all tenants) above ``after_seq``, counted up to ``cap``."""
        t = s.messages
        above = select(t.c.seq).where(t.c.seq > after_seq).limit(max(cap, 0)).subquery()
        async with self._tx() as conn:
            return int(await conn.scalar(select(func.count()).select_from(above)) or 0)

    async def messages_by_seq(self, seqs: list[int]) -> list[MessageRecord]:
        """The messages with these seqs, in seq order."""
        if not seqs:
            return []
        t = s.messages
        query = select(t).where(t.c.seq.in_(seqs)).order_by(t.c.seq)
        return await self._fetch(query, MessageRecord)

    async def message_id_taken(self, message_id: str) -> bool:
        """Whether a message or scheduled message of any tenant has this id."""
        m, q = s.messages, s.scheduled
        async with self._tx() as conn:
            if await conn.scalar(select(m.c.id).where(m.c.id == message_id)) is not None:
                return True
            return await conn.scalar(select(q.c.id).where(q.c.id == message_id)) is not None

    async def last_message_seq(self) -> int:
        """The highest message seq, or -1."""
        t = s.messages
        async with self._tx() as conn:
            found = await conn.scalar(select(func.max(t.c.seq)))
        return -1 if found is None else int(found)

    async def deliveries(self, tenant_id: str, message_id: str) -> list[DeliveryRecord]:
        """The deliveries of one message, oldest first."""
        t = s.deliveries
        query = select(t).where(t.c.tenant_id == tenant_id, t.c.message_id == message_id)
        return await self._fetch(query.order_by(t.c.created_at, t.c.id), DeliveryRecord)

    async def ack(
        self, tenant_id: str, message_id: str, recipient: str, now: datetime
    ) -> DeliveryRecord:
        """Mark the in-app delivery of ``message_id`` to ``recipient`` delivered (an upsert).

        Raises:
            NotFound: the tenant has no such message.
        """
        m, d = s.messages, s.deliveries
        row = self._delivery(tenant_id, message_id, recipient, _DELIVERED, now)
        upsert = (pg_insert if self.dialect == "postgresql" else sqlite_insert)(d).values(row)
        upsert = upsert.on_conflict_do_update(
            index_elements=[d.c.message_id, d.c.channel, d.c.endpoint],
            set_={"state": _DELIVERED, "updated_at": now},
            where=d.c.state != _DELIVERED,  # a second ack changes nothing
        )
        owner = select(m.c.id).where(m.c.id == message_id, m.c.tenant_id == tenant_id)
        key = (d.c.message_id == message_id, d.c.channel == _INAPP, d.c.endpoint == recipient)
        async with self._tx(write=True) as conn:
            if await conn.scalar(owner) is None:
                raise NotFound("message not found")
            await conn.execute(upsert)
            stored = (await conn.execute(select(d).where(*key))).one()
        return DeliveryRecord(**stored._asdict())

    async def get_idempotency(self, app_id: str, key: str) -> IdempotencyRecord | None:
        """The stored first answer for (app, key), or None."""
        t = s.idempotency
        query = select(t).where(t.c.app_id == app_id, t.c.key == key)
        return await self._first(query, IdempotencyRecord)

    async def purge_idempotency(self, before: datetime) -> int:
        """Delete idempotency records created before ``before``; returns how many."""
        t = s.idempotency
        async with self._tx(write=True) as conn:
            result = await conn.execute(delete(t).where(t.c.created_at < before))
        return int(result.rowcount or 0)

    async def audit_nodes(self, nodes: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Stored subtree hashes for ``nodes`` (one query)."""
        async with self._tx() as conn:
            return await self._nodes(conn, nodes)

    async def _nodes(
        self, conn: AsyncConnection, nodes: set[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        if not nodes:
            return {}
        found: dict[tuple[int, int], bytes] = {}
        ordered = sorted(nodes)
        # Bounded queries: proofs need O(log n) nodes, appends a handful per entry.
        for chunk in range(0, len(ordered), 500):
            query = nodes_query(ordered[chunk : chunk + 500])
            for level, idx, digest in (await conn.execute(query)).all():
                found[(int(level), int(idx))] = bytes(digest)
        return found

    async def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """Store a signed checkpoint; IntegrityConflict when that size has one."""
        async with self._tx(write=True) as conn:
            await conn.execute(insert(s.audit_checkpoints).values(_fields(checkpoint)))

    async def checkpoints(
        self, *, after_size: int = -1, limit: int = 1000
    ) -> list[CheckpointRecord]:
        """Checkpoints with ``size > after_size``, smallest first."""
        t = s.audit_checkpoints
        query = select(t).where(t.c.size > after_size).order_by(t.c.size).limit(limit)
        return await self._fetch(query, CheckpointRecord)

    async def latest_checkpoint(self) -> CheckpointRecord | None:
        """The largest checkpoint, or None."""
        t = s.audit_checkpoints
        return await self._first(select(t).order_by(t.c.size.desc()), CheckpointRecord)

    async def audit_size(self) -> int:
        """Number of audit entries (``max(idx) + 1``: indices are gap-free)."""
        async with self._tx() as conn:
            last = await conn.scalar(select(func.max(s.audit_entries.c.idx)))
        return 0 if last is None else int(last) + 1

    async def audit_entries(self, start: int, end: int) -> list[AuditEntryRecord]:
        """Entries with ``start <= index < end``, in index order."""
        t = s.audit_entries
        query = select(t).where(t.c.idx >= start, t.c.idx < end).order_by(t.c.idx)
        return await self._fetch(query, _audit_entry)

    # -- helpers -----------------------------------------------------------------------------
    def _delivery(
        self, tenant_id: str, message_id: str, endpoint: str, state: str, now: datetime
    ) -> dict[str, Any]:
        return {
            "id": self._new_id(),
            "message_id": message_id,
            "tenant_id": tenant_id,
            "channel": _INAPP,
            "endpoint": endpoint,
            "state": state,
            "attempts": 0,
            "last_error": None,
            "created_at": now,
            "updated_at": now,
            # Every row of one executemany must name the same columns.
            "recipient": endpoint,
            "next_attempt_at": None,
            "lease_owner": None,
            "lease_until": None,
            "step": 0,
            "fallback_after": None,
        }

    async def _fetch(self, query: Select[Any], make: Callable[..., _R]) -> list[_R]:
        async with self._tx() as conn:
            rows = (await conn.execute(query)).all()
        return [make(**row._asdict()) for row in rows]

    async def _first(self, query: Select[Any], make: Callable[..., _R]) -> _R | None:
        found = await self._fetch(query.limit(1), make)
        return found[0] if found else None


# -- module helpers ---------------------------------------------------------------------------
def nodes_query(nodes: Sequence[tuple[int, int]]) -> Select[Any]:
    """The query for stored tree nodes: one ``level = ? AND idx IN (…)`` term per level.

    SQLite plans a row-value ``IN`` over ``(level, idx)`` as a full table scan, but this form
    as primary-key searches (the audit benchmark prints the plan as a regression guard).
    """
    t = s.audit_nodes
    by_level: dict[int, list[int]] = {}
    for level, idx in nodes:
        by_level.setdefault(level, []).append(idx)
    terms = [and_(t.c.level == lvl, t.c.idx.in_(idxs)) for lvl, idxs in by_level.items()]
    return select(t.c.level, t.c.idx, t.c.hash).where(or_(*terms))


def _fields(record: Any) -> dict[str, Any]:
    """A record (dataclass) as a column dict, without deep-copying its values."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


def _app(*, scopes: str, **values: Any) -> AppRecord:
    return AppRecord(scopes=tuple(scopes.split()), **values)


def _audit_entry(*, idx: int, **values: Any) -> AuditEntryRecord:
    return AuditEntryRecord(index=idx, **values)


async def _insert_many(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> None:
    """One executemany INSERT for all rows (batched rows are ~4x faster on SQLite)."""
    if rows:
        await conn.execute(insert(table), rows)


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """Translate driver and SQLAlchemy exceptions into Herald's :class:`StorageError` tree."""
    try:
        yield
    except sa_exc.IntegrityError as exc:
        raise IntegrityConflict("a uniqueness or reference rule of the store was hit") from exc
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        ):
            raise StorageError(_UNAVAILABLE) from exc
        raise StorageError("database error") from exc
    except sa_exc.StatementError as exc:
        # Not from the driver: one of our column types refused a value (a naive datetime).
        orig = exc.orig
        if isinstance(orig, ValueError | TypeError):
            raise orig from None
        raise StorageError("database error") from exc
    except (
        OSError,
        sa_exc.TimeoutError,
        sa_exc.DisconnectionError,
        sqlite3.OperationalError,
    ) as exc:
        raise StorageError(_UNAVAILABLE) from exc
    except sqlite3.Error as exc:
        raise StorageError("database error") from exc
    # Other SQLAlchemyErrors (ArgumentError, CompileError, …) are bugs, not outages: they
    # propagate unchanged so that they are answered 500, not a retryable 503.
    except CommandError as exc:
        # Alembic: e.g. the database is at a revision this version does not know (newer).
        raise StorageError(f"cannot migrate the database: {exc}") from exc


def _normalise_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        raise ConfigError("the database URL cannot be parsed") from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ConfigError(f"unsupported database {parsed.drivername!r}: use sqlite or postgresql")
    if parsed.get_backend_name() == "sqlite" and parsed.database in {None, "", ":memory:"}:
        # One shared connection cannot hold concurrent transactions; tests use tmp files.
        raise ConfigError("in-memory SQLite is not supported: give a database file path")
    return parsed.set(drivername=driver)


def _prepare_sqlite_file(database: str | None) -> None:
    """Create the database's directory (0700) and an empty file (0600) if they are missing.

    SQLite creates the ``-wal`` and ``-shm`` files with the main file's permissions.
    """
    if database is None or database.startswith("file:"):  # URI filenames: left to SQLite
        return
    path = Path(database)
    try:
        missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
        for directory in reversed(missing):
            directory.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StorageError(f"{_UNAVAILABLE}: cannot create the database file") from exc


#: SQLite connections kept open (as many again may open for a burst).
_SQLITE_POOL = 32


def _create_engine(url: URL) -> AsyncEngine:
    if url.get_backend_name() == "sqlite":
        # Each aiosqlite connection is a thread: connections opened past the pool (the
        # default keeps 5) were closed after one use, a new thread and PRAGMAs per read
        # under load. Idle ones cost a parked thread each.
        engine = create_async_engine(
            url, hide_parameters=True, pool_size=_SQLITE_POOL, max_overflow=_SQLITE_POOL
        )
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        return engine
    return create_async_engine(
        url,
        hide_parameters=True,
        pool_pre_ping=True,  # a restarted server costs one retry, not one failed request
        connect_args={
            "timeout": PG_CONNECT_TIMEOUT,
            "server_settings": {"application_name": "herald"},
        },
    )


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from the sqlite3 module (it skips it before SELECT and DDL); the
    # "begin" listener below emits it instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(_migrate.WRITE_TRANSACTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _implements_store(store: SqlStore) -> Store:  # lets mypy check SqlStore against Store
    return store
