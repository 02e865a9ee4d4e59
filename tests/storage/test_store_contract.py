"""The contract of :class:`herald.storage.base.Store`, run against every backend.

Every test that takes ``store`` or ``store_url`` runs once on SQLite and once on PostgreSQL
(``-m postgres`` selects the latter; it skips when the server is unreachable unless
``HERALD_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import asyncio
import logging
import stat
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from subprocess import PIPE

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, MetaData, inspect
from tests.storage.factories import T0, message, new_tenant, sink, tenant, uid

from herald.errors import ConfigError, IntegrityConflict, NotFound, StorageError
from herald.storage import Store, migrate
from herald.storage.base import (
    AppKeyRecord,
    AppRecord,
    IdempotencyRecord,
    MessageRecord,
    PublishWrite,
    SigningKeyRecord,
    TenantKeyRecord,
    TenantRecord,
)
from herald.storage.schema import metadata
from herald.storage.sql import SqlStore

HEAD = migrate.head_revision()


async def publish(store: Store, *msgs: MessageRecord, idem: IdempotencyRecord | None = None):
    return await store.publish(list(msgs), [sink() for _ in msgs], idem)


def idem_record(key: str = "key-1") -> IdempotencyRecord:
    return IdempotencyRecord(
        app_id="app-1", key=key, request_hash=b"h" * 32, status=202, response=b"{}", created_at=T0
    )


# -- migrations -------------------------------------------------------------------------------
async def test_migration_status_is_head(store: SqlStore) -> None:
    current, head = await store.migration_status()
    assert current == head == migrate.head_revision() == HEAD


async def test_migration_is_idempotent(store: SqlStore) -> None:
    await store.migrate()
    assert (await store.migration_status())[0] == HEAD


async def test_status_of_empty_database(store_url: str, open_store) -> None:
    fresh = await open_store(store_url, migrate=False)
    assert await fresh.migration_status() == (None, HEAD)


async def test_concurrent_migrations_do_not_race(store_url: str, open_store) -> None:
    # Several nodes starting at once on an empty database (advisory lock / BEGIN IMMEDIATE).
    stores = await asyncio.gather(*(open_store(store_url) for _ in range(3)))
    for item in stores:
        assert (await item.migration_status())[0] == HEAD


_NODE = """
import asyncio, sys, uuid
from datetime import UTC, datetime
from herald.storage.sql import SqlStore

async def main(url: str) -> None:
    store = await SqlStore.open(
        url, new_id=lambda: str(uuid.uuid4()), clock=lambda: datetime.now(UTC)
    )
    try:
        print((await store.migration_status())[0])
    finally:
        await store.close()

print("ready", flush=True)
sys.stdin.readline()  # start together, once every process has done its imports
asyncio.run(main(sys.argv[1]))
"""


async def test_nodes_starting_together_migrate_without_racing(store_url: str) -> None:
    # Separate processes, as several `herald serve` nodes (or server + CLI) starting at once.
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _NODE, store_url, stdin=PIPE, stdout=PIPE, stderr=PIPE
        )
        for _ in range(3)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert await proc.stdout.readline() == b"ready\n"
    outputs = await asyncio.gather(*(proc.communicate(b"go\n") for proc in procs))
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
        assert out.decode().strip() == HEAD


def _schema_of(conn: Connection) -> tuple[dict[str, object], list[object]]:
    reflected = MetaData()
    reflected.reflect(conn)
    shape: dict[str, object] = {}
    inspector = inspect(conn)
    for name, table in reflected.tables.items():
        shape[name] = {
            "columns": {c.name: c.nullable for c in table.columns},
            "pk": [c.name for c in table.primary_key.columns],
            "indexes": sorted(
                i["name"] or ""
                for i in inspector.get_indexes(name)
                if not i.get("duplicates_constraint")  # PostgreSQL: a UNIQUE's own index
            ),
            "unique": sorted(u["name"] or "" for u in inspector.get_unique_constraints(name)),
            "fks": sorted(
                (tuple(fk["constrained_columns"]), fk["referred_table"])
                for fk in inspector.get_foreign_keys(name)
            ),
        }
    diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    return shape, diffs


async def test_migrated_schema_matches_schema_module(store: SqlStore) -> None:
    async with store._engine.connect() as conn:  # test-only peek at the engine
        shape, diffs = await conn.run_sync(_schema_of)
    assert diffs == []  # what `alembic check` would report
    assert set(shape) == {t.name for t in metadata.sorted_tables} | {"alembic_version"}
    for table in metadata.sorted_tables:
        got = shape[table.name]
        assert got["columns"] == {c.name: c.nullable for c in table.columns}, table.name
        assert got["pk"] == [c.name for c in table.primary_key.columns], table.name
        assert got["indexes"] == sorted(str(i.name) for i in table.indexes), table.name
    assert shape["deliveries"]["unique"] == ["uq_deliveries_message_id_channel_endpoint"]
    assert shape["tenants"]["unique"] == ["uq_tenants_name"]


# -- tenants, apps, keys ----------------------------------------------------------------------
async def test_tenants(store: Store) -> None:
    record, key = tenant("acme")
    await store.create_tenant(record, key)
    assert await store.get_tenant(record.id) == record
    assert await store.get_tenant_by_name("acme") == record
    assert await store.get_tenant("nope") is None
    assert await store.get_tenant_by_name("nope") is None
    assert await store.tenant_keys(record.id) == [key]
    assert await store.tenant_keys("nope") == []


async def test_duplicate_tenant_name_conflicts_and_keeps_nothing(store: Store) -> None:
    await new_tenant(store, "acme")
    dup, dup_key = tenant("acme")
    with pytest.raises(IntegrityConflict):
        await store.create_tenant(dup, dup_key)
    assert await store.get_tenant(dup.id) is None
    assert await store.tenant_keys(dup.id) == []


async def test_apps(store: Store) -> None:
    tid = await new_tenant(store)
    first = AppRecord("app-a", tid, "billing", b"hash", ("publish:orders.*", "admin"), False, T0)
    second = AppRecord("app-b", tid, "shop", b"hash2", (), True, T0 + timedelta(seconds=1))
    await store.create_app(second)
    await store.create_app(first)
    assert await store.get_app("app-a") == first
    assert await store.get_app("app-b") == second
    assert await store.get_app("nope") is None
    assert await store.list_apps(tid) == [first, second]
    assert await store.list_apps("other") == []
    with pytest.raises(IntegrityConflict):
        await store.create_app(first)
    with pytest.raises(IntegrityConflict):  # foreign keys are enforced (SQLite too)
        await store.create_app(AppRecord("app-c", "no-tenant", "x", b"", (), False, T0))
    with pytest.raises(ValueError, match="whitespace"):
        await store.create_app(AppRecord("app-d", tid, "x", b"", ("a b",), False, T0))


async def test_app_keys(store: Store) -> None:
    tid = await new_tenant(store)
    await store.create_app(AppRecord("app-k", tid, "k", b"h", (), False, T0))
    await store.create_app(AppRecord("app-l", tid, "l", b"h", (), False, T0))
    ed = AppKeyRecord("hk_1", "app-k", tid, "ed25519", b"p" * 32, b"", T0)
    mac = AppKeyRecord("hk_2", "app-k", tid, "hmac-sha256", b"", b"sealed", T0 + timedelta(1))
    await store.add_app_key(mac)
    await store.add_app_key(ed)
    assert await store.get_app_key("hk_1") == ed
    assert await store.get_app_key("nope") is None
    assert await store.list_app_keys("app-k") == [ed, mac]
    assert await store.list_app_keys("app-l") == []
    with pytest.raises(IntegrityConflict):
        await store.add_app_key(ed)
    # Revocation is scoped to the owning app and keeps the first revocation time.
    assert await store.revoke_app_key("app-l", "hk_1", T0 + timedelta(2)) is None
    assert (await store.get_app_key("hk_1")).revoked_at is None
    revoked = await store.revoke_app_key("app-k", "hk_1", T0 + timedelta(2))
    assert revoked is not None
    assert revoked.revoked_at == T0 + timedelta(2)
    again = await store.revoke_app_key("app-k", "hk_1", T0 + timedelta(3))
    assert again is not None
    assert again.revoked_at == T0 + timedelta(2)


async def test_purge_idempotency(store: Store) -> None:
    tid = await new_tenant(store)
    await publish(store, message(tid), idem=idem_record("old"))
    newer = IdempotencyRecord("app-1", "new", b"h" * 32, 202, b"{}", T0 + timedelta(days=2))
    await publish(store, message(tid), idem=newer)
    assert await store.purge_idempotency(T0 + timedelta(days=1)) == 1
    assert await store.get_idempotency("app-1", "old") is None
    assert await store.get_idempotency("app-1", "new") == newer


async def test_signing_keys(store: Store) -> None:
    old = SigningKeyRecord("k1", "token", "Ed25519", b"p" * 32, b"w1", T0, T0 + timedelta(days=1))
    new = SigningKeyRecord("k2", "token", "Ed25519", b"q" * 32, b"w2", T0 + timedelta(days=1))
    audit = SigningKeyRecord("a1", "audit", "Ed25519", b"r" * 32, b"w3", T0)
    for key in (old, audit, new):
        await store.add_signing_key(key)
    assert await store.signing_keys("token") == [new, old]
    assert await store.signing_keys("audit") == [audit]
    assert await store.signing_keys("vapid") == []
    with pytest.raises(IntegrityConflict):
        await store.add_signing_key(old)


# -- publishing -------------------------------------------------------------------------------
async def test_publish_with_recipients_creates_pending_deliveries(store: Store) -> None:
    tid = await new_tenant(store)
    msg = message(tid, recipients=("alice", "bob", "alice"))
    result = await publish(store, msg)
    assert result.seqs == (0,)
    entry, leaf = sink()(0)
    assert result.leaf_hashes == (leaf,)
    stored = await store.get_message(tid, msg.id)
    assert stored is not None
    assert stored.seq == 0
    assert stored.leaf_hash == leaf
    assert stored.recipients == ("alice", "bob", "alice")
    assert stored.content == msg.content
    assert (stored.created_at, stored.expires_at) == (msg.created_at, msg.expires_at)
    deliveries = await store.deliveries(tid, msg.id)
    assert sorted(d.endpoint for d in deliveries) == ["alice", "bob"]  # one per recipient
    for d in deliveries:
        assert (d.channel, d.state, d.attempts, d.last_error) == ("inapp", "pending", 0, None)
        assert (d.message_id, d.tenant_id) == (msg.id, tid)
    entries = await store.audit_entries(0, 10)
    assert [(e.index, e.entry, e.leaf_hash) for e in entries] == [(0, entry, leaf)]
    assert await store.message_seq(tid, msg.id) == 0


async def test_audit_indices_are_gap_free_across_calls(store: Store) -> None:
    tid = await new_tenant(store)
    assert await store.audit_size() == 0
    r1 = await publish(store, message(tid), message(tid))
    assert await store.append_audit([sink("key-created"), sink("app-created")]) == [2, 3]
    r2 = await publish(store, message(tid))
    r3 = await publish(store, message(tid), message(tid), message(tid))
    assert (r1.seqs, r2.seqs, r3.seqs) == ((0, 1), (4,), (5, 6, 7))
    assert await store.audit_size() == 8
    assert [e.index for e in await store.audit_entries(0, 100)] == list(range(8))
    assert [e.index for e in await store.audit_entries(3, 6)] == [3, 4, 5]
    assert await store.publish([], []) == type(r1)()


async def test_publish_needs_one_sink_per_message(store: Store) -> None:
    tid = await new_tenant(store)
    with pytest.raises(ValueError, match="one audit sink per message"):
        await store.publish([message(tid)], [])


async def test_publish_group_commits_writes_in_order_with_their_own_indices(
    store: Store,
) -> None:
    tid = await new_tenant(store)
    first, second, third = message(tid), message(tid), message(tid, recipients=("ann",))
    writes = [
        PublishWrite([first, second], [sink(), sink()], idem_record("k1")),
        PublishWrite([], []),
        PublishWrite([third], [sink()], idem_record("k2")),
    ]
    results = await store.publish_group(writes)
    assert [r.seqs for r in results] == [(0, 1), (), (2,)]
    assert [m.id for m in await store.messages_after(tid, -1, 10)] == [
        first.id,
        second.id,
        third.id,
    ]
    assert await store.get_idempotency("app-1", "k1") is not None
    assert await store.get_idempotency("app-1", "k2") is not None
    assert len(await store.deliveries(tid, third.id)) == 1
    assert await store.publish_group([]) == []


async def test_publish_group_with_one_bad_write_stores_nothing(store: Store) -> None:
    tid = await new_tenant(store)
    kept = message(tid)
    writes = [
        PublishWrite([kept], [sink()], idem_record("same")),
        PublishWrite([message(tid)], [sink()], idem_record("same")),  # the same key twice
    ]
    with pytest.raises(IntegrityConflict):
        await store.publish_group(writes)
    assert await store.messages_after(tid, -1, 10) == []
    assert await store.audit_size() == 0
    assert await store.get_idempotency("app-1", "same") is None


async def test_concurrent_publish_is_gap_free_and_ordered(store: Store) -> None:
    tid = await new_tenant(store)

    async def one() -> tuple[int, ...]:
        return (await publish(store, message(tid), message(tid))).seqs

    results = await asyncio.gather(*(one() for _ in range(50)))
    seqs = sorted(seq for pair in results for seq in pair)
    assert seqs == list(range(100))
    assert all(b == a + 1 for a, b in results)  # one call's messages are consecutive
    stored = await store.messages_after(tid, -1, 1000)
    assert [m.seq for m in stored] == list(range(100))
    assert [e.index for e in await store.audit_entries(0, 1000)] == list(range(100))


async def test_two_store_instances_share_one_gap_free_log(store_url: str, open_store) -> None:
    # Two processes (nodes, or the server and an admin command) on one database.
    first, second = await open_store(store_url), await open_store(store_url)
    tid = await new_tenant(first)

    async def one(target: Store) -> tuple[int, ...]:
        return (await publish(target, message(tid))).seqs

    results = await asyncio.gather(*(one(first if i % 2 else second) for i in range(20)))
    assert sorted(seq for (seq,) in results) == list(range(20))


async def test_idempotency_conflict_rolls_back_everything(store: Store) -> None:
    tid = await new_tenant(store)
    first = message(tid, recipients=("alice",))
    await publish(store, first, idem=idem_record())
    assert await store.get_idempotency("app-1", "key-1") == idem_record()
    assert await store.get_idempotency("app-1", "other") is None
    retry = message(tid, recipients=("bob",))
    with pytest.raises(IntegrityConflict):
        await publish(store, retry, idem=idem_record())
    assert await store.get_message(tid, retry.id) is None
    assert await store.deliveries(tid, retry.id) == []
    assert await store.audit_size() == 1
    # The next publish continues the log without a gap.
    assert (await publish(store, message(tid))).seqs == (1,)


async def test_duplicate_message_id_rolls_back(store: Store) -> None:
    tid = await new_tenant(store)
    msg = message(tid)
    await publish(store, msg)
    with pytest.raises(IntegrityConflict):
        await publish(store, message(tid), msg)
    assert await store.audit_size() == 1


async def test_messages_after_pages_and_filters(store: Store) -> None:
    tid, other = await new_tenant(store), await new_tenant(store)
    for i in range(10):
        await publish(store, message(tid, topic="a" if i % 2 else "b"))
        await publish(store, message(other, topic="a"))
    own = [m.seq for m in await store.messages_after(tid, -1, 100)]
    assert own == list(range(0, 20, 2))
    page1 = await store.messages_after(tid, -1, 4)
    page2 = await store.messages_after(tid, page1[-1].seq, 4)
    page3 = await store.messages_after(tid, page2[-1].seq, 4)
    assert [m.seq for m in page1 + page2 + page3] == own
    assert len(page3) == 2
    assert await store.messages_after(tid, own[-1], 4) == []
    topic_a = await store.messages_after(tid, -1, 100, topic="a")
    assert [m.topic for m in topic_a] == ["a"] * 5
    assert all(m.tenant_id == tid for m in topic_a)
    assert [m.seq for m in await store.messages_after(tid, topic_a[1].seq, 2, topic="a")] == [
        m.seq for m in topic_a[2:4]
    ]
    assert await store.messages_after(tid, -1, 100, topic="none") == []


async def test_the_cluster_bus_reads_every_tenants_seqs_in_order(store: Store) -> None:
    assert await store.last_message_seq() == -1
    assert await store.message_seqs_after(-1, 10) == []
    tid, other = await new_tenant(store), await new_tenant(store)
    ids = []
    for owner in (tid, other, tid, other):
        msg = message(owner)
        ids.append(msg.id)
        await publish(store, msg)
    assert await store.message_seqs_after(-1, 10) == list(enumerate(ids))
    assert await store.message_seqs_after(1, 10) == [(2, ids[2]), (3, ids[3])]
    assert await store.message_seqs_after(-1, 2) == [(0, ids[0]), (1, ids[1])]
    assert await store.last_message_seq() == 3
    found = await store.messages_by_seq([3, 0])
    assert [(m.seq, m.id) for m in found] == [(0, ids[0]), (3, ids[3])]
    assert await store.messages_by_seq([]) == []
    # Ids are global: taken whatever the tenant; a fresh one is free.
    assert await store.message_id_taken(ids[1])
    assert not await store.message_id_taken(uid())


async def test_reads_are_tenant_scoped(store: Store) -> None:
    tid, other = await new_tenant(store), await new_tenant(store)
    msg = message(tid, recipients=("alice",))
    await publish(store, msg)
    assert await store.get_message(other, msg.id) is None
    assert await store.message_seq(other, msg.id) is None
    assert await store.deliveries(other, msg.id) == []
    assert await store.messages_after(other, -1, 10) == []
    with pytest.raises(NotFound):
        await store.ack(other, msg.id, "alice", T0)
    with pytest.raises(NotFound):
        await store.ack(tid, "no-such-message", "alice", T0)
    (delivery,) = await store.deliveries(tid, msg.id)
    assert delivery.state == "pending"  # the refused acks changed nothing


async def test_ack_is_an_idempotent_upsert(store: Store) -> None:
    tid = await new_tenant(store)
    named = message(tid, recipients=("alice",))
    topical = message(tid)
    await publish(store, named, topical)
    acked = await store.ack(tid, named.id, "alice", T0 + timedelta(minutes=1))
    assert (acked.state, acked.endpoint, acked.channel) == ("delivered", "alice", "inapp")
    assert acked.updated_at == T0 + timedelta(minutes=1)
    again = await store.ack(tid, named.id, "alice", T0 + timedelta(minutes=2))
    assert again == acked  # unchanged, still one row
    assert await store.deliveries(tid, named.id) == [acked]
    assert await store.deliveries(tid, topical.id) == []
    created = await store.ack(tid, topical.id, "bob", T0)
    assert (created.state, created.attempts, created.tenant_id) == ("delivered", 0, tid)
    await store.ack(tid, topical.id, "bob", T0)
    assert await store.deliveries(tid, topical.id) == [created]


async def test_datetimes_round_trip_aware_utc(store: Store) -> None:
    plus8 = timezone(timedelta(hours=8))
    local = datetime(2026, 3, 1, 20, 0, 0, 654321, tzinfo=plus8)
    record = TenantRecord(id=uid(), name="tz", created_at=local)
    await store.create_tenant(record, TenantKeyRecord(record.id, 1, b"k", local))
    got = await store.get_tenant(record.id)
    assert got is not None
    assert got.created_at == local  # the same instant …
    assert got.created_at.utcoffset() == timedelta(0)  # … handed back in UTC
    assert got.created_at.tzinfo is not None
    naive = TenantRecord(id=uid(), name="naive", created_at=datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="naive datetime"):
        await store.create_tenant(naive, TenantKeyRecord(naive.id, 1, b"k", T0))


async def test_ping(store: Store) -> None:
    await store.ping()


# -- failures ---------------------------------------------------------------------------------
async def test_unreachable_postgresql_is_a_storage_error() -> None:
    url = "postgresql+asyncpg://herald:s3cret-pw@127.0.0.1:1/herald"
    with pytest.raises(StorageError) as info:
        await SqlStore.open(url, new_id=uid, clock=lambda: T0)
    assert type(info.value) is StorageError
    assert str(info.value) == "database unavailable"
    assert "s3cret" not in str(info.value)


async def test_unreachable_postgresql_without_migrating() -> None:
    url = "postgresql://herald:s3cret-pw@127.0.0.1:1/herald"
    with pytest.raises(StorageError, match=r"^database unavailable$"):
        await SqlStore.open(url, new_id=uid, clock=lambda: T0, migrate=False)


@pytest.mark.parametrize(
    "location",
    [
        pytest.param(lambda tmp: tmp / "a-file" / "sub" / "herald.db", id="under-a-file"),
        pytest.param(lambda _: Path("/proc/herald-no-such-dir/herald.db"), id="proc"),
    ],
)
async def test_unwritable_sqlite_location_is_a_storage_error(
    tmp_path: Path, location: Callable[[Path], Path]
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    path = location(tmp_path)
    with pytest.raises(StorageError, match=r"^database unavailable"):
        await SqlStore.open(f"sqlite+aiosqlite:///{path}", new_id=uid, clock=lambda: T0)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mysql://u:p@localhost/db", "unsupported database 'mysql'"),
        ("sqlite+aiosqlite://", "in-memory SQLite is not supported"),
        ("sqlite:///:memory:", "in-memory SQLite is not supported"),
        ("::not a url::", "cannot be parsed"),
    ],
)
def test_unusable_url_is_a_config_error(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        SqlStore(url, new_id=uid, clock=lambda: T0)
    assert "u:p" not in str(info.value)


async def test_migrating_leaves_logging_alone(store_url: str, open_store) -> None:
    # No logging.config.fileConfig: the application's logging stays as configured.
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    existing = logging.getLogger("herald.storage.some_module")
    await open_store(store_url)
    assert (list(root.handlers), root.level) == before
    assert not existing.disabled


# -- SQLite specifics -------------------------------------------------------------------------
async def test_sqlite_file_modes_and_pragmas(tmp_path: Path, open_store) -> None:
    path = tmp_path / "data" / "nested" / "herald.db"
    sqlite_store = await open_store(f"sqlite:///{path}")
    assert sqlite_store.dialect == "sqlite"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    async with sqlite_store._engine.connect() as conn:  # test-only peek at the engine
        pragmas = {
            name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        }
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 2,
        "foreign_keys": 1,
        "busy_timeout": 5000,
    }
