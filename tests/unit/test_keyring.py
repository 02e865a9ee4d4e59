"""herald.crypto.keyring and herald.crypto.masterkey: envelope encryption and the local provider."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from herald.crypto import keyring, masterkey
from herald.crypto.aead import open_sealed, peek_key_version
from herald.crypto.keyring import (
    RELOAD_MIN_INTERVAL,
    KeyProvider,
    NoDataKey,
    TenantKeyRing,
    dek_context,
    new_data_key,
    wrap_new_data_key,
)
from herald.crypto.masterkey import (
    MASTER_KEY_ENV,
    LocalKeyProvider,
    generate_master_key_file,
    load_master_key,
)
from herald.errors import ConfigError, DecryptionFailed

MASTER = bytes(range(100, 132))


def counter_randbytes() -> Callable[[int], bytes]:
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingProvider:
    """A LocalKeyProvider that counts unwraps and yields to the loop inside each one."""

    name = "counting"

    def __init__(self) -> None:
        self.inner = LocalKeyProvider(MASTER, randbytes=counter_randbytes())
        self.unwraps = 0
        self.fail_next = 0

    async def wrap(self, plaintext_key: bytes, context: bytes) -> bytes:
        return await self.inner.wrap(plaintext_key, context)

    async def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        self.unwraps += 1
        for _ in range(3):
            await asyncio.sleep(0)  # let concurrent callers pile up
        if self.fail_next:
            self.fail_next -= 1
            raise DecryptionFailed()
        return await self.inner.unwrap(wrapped, context)


class Store:
    """Wrapped DEKs by tenant, as the storage layer would return them."""

    def __init__(self, provider: KeyProvider) -> None:
        self.provider = provider
        self.rows: dict[str, list[tuple[int, bytes]]] = {}
        self.loads = 0

    async def add_version(self, tenant_id: str) -> int:
        version = max((v for v, _ in self.rows.get(tenant_id, [])), default=0) + 1
        wrapped = await wrap_new_data_key(self.provider, tenant_id, version, os.urandom)
        self.rows.setdefault(tenant_id, []).append((version, wrapped))
        return version

    async def load(self, tenant_id: str) -> list[tuple[int, bytes]]:
        self.loads += 1
        return list(self.rows.get(tenant_id, []))


@pytest.fixture
def provider() -> CountingProvider:
    return CountingProvider()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(provider: CountingProvider) -> Store:
    store = Store(provider)
    for tenant in ("t1", "t2", "t3"):
        await store.add_version(tenant)
    return store


def make_ring(
    provider: CountingProvider,
    store: Store,
    clock: FakeClock,
    *,
    max_tenants: int = 1024,
    ttl: float = 300.0,
) -> TenantKeyRing:
    return TenantKeyRing(
        provider, store.load, max_tenants=max_tenants, ttl=ttl, clock=clock, randbytes=os.urandom
    )


# --- data keys and contexts -------------------------------------------------------------------


def test_exports() -> None:
    for module in (keyring, masterkey):
        for name in module.__all__:
            assert hasattr(module, name)


def test_new_data_key() -> None:
    assert len(new_data_key(os.urandom)) == 32
    with pytest.raises(ValueError, match="wrong number"):
        new_data_key(lambda n: b"\x00" * (n - 1))


def test_dek_context_layout_and_binding() -> None:
    assert dek_context("ab", 258) == b"herald/dek/v1\x00\x02ab\x00\x00\x01\x02"
    contexts = {dek_context(t, v) for t in ("a", "b", "ab") for v in (0, 1, 2)}
    assert len(contexts) == 9
    with pytest.raises(ValueError, match="out of range"):
        dek_context("a", -1)
    with pytest.raises(ValueError, match="out of range"):
        dek_context("a", 2**32)
    with pytest.raises(ValueError, match="too long"):
        dek_context("x" * 0x10000, 1)


async def test_wrapped_data_key_is_bound_to_tenant_and_version() -> None:
    local = LocalKeyProvider(MASTER)
    wrapped = await wrap_new_data_key(local, "t1", 1, os.urandom)
    assert len(await local.unwrap(wrapped, dek_context("t1", 1))) == 32
    for context in (dek_context("t2", 1), dek_context("t1", 2)):
        with pytest.raises(DecryptionFailed):
            await local.unwrap(wrapped, context)


# --- LocalKeyProvider ---------------------------------------------------------------------------


def test_local_provider_satisfies_the_protocol() -> None:
    provider: KeyProvider = LocalKeyProvider(MASTER)
    assert provider.name == "local"
    assert repr(provider) == "LocalKeyProvider()"
    with pytest.raises(ValueError, match="32 bytes"):
        LocalKeyProvider(MASTER[:31])


async def test_local_provider_round_trip_and_wrong_context() -> None:
    local = LocalKeyProvider(MASTER)
    wrapped = await local.wrap(b"k" * 32, b"context-a")
    assert peek_key_version(wrapped) == 0
    assert await local.unwrap(wrapped, b"context-a") == b"k" * 32
    with pytest.raises(DecryptionFailed):
        await local.unwrap(wrapped, b"context-b")
    with pytest.raises(DecryptionFailed):
        await local.unwrap(wrapped[:-1] + bytes([wrapped[-1] ^ 1]), b"context-a")
    with pytest.raises(DecryptionFailed):
        await LocalKeyProvider(bytes(32)).unwrap(wrapped, b"context-a")


async def test_local_provider_uses_an_hkdf_derived_kek_not_the_master_key() -> None:
    local = LocalKeyProvider(MASTER, randbytes=lambda n: b"\x07" * n)
    wrapped = await local.wrap(b"dek", b"ctx")
    assert wrapped[5:17] == b"\x07" * 12
    with pytest.raises(DecryptionFailed):
        open_sealed(MASTER, wrapped, b"ctx")
    # RFC 5869 HKDF-SHA256 with the documented salt and info, computed independently.
    kek = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"herald/kek/v1",
        info=b"herald key-encryption key v1",
    ).derive(MASTER)
    assert open_sealed(kek, wrapped, b"ctx") == b"dek"


# --- master key file --------------------------------------------------------------------------


def test_generate_master_key_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    old_umask = os.umask(0)  # the file must still be 0600 under a permissive umask
    try:
        generate_master_key_file(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert text.endswith("\n")
    assert len(base64.b64decode(text.strip(), validate=True)) == 32
    assert load_master_key(path=path, env_value=None) == base64.b64decode(text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]  # no temp files left


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    generate_master_key_file(path)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        generate_master_key_file(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]


def test_generate_refuses_a_dangling_symlink(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="already exists"):
        generate_master_key_file(path)
    assert not (tmp_path / "elsewhere").exists()


def test_generate_in_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot create"):
        generate_master_key_file(tmp_path / "missing" / "master.key")


def test_generate_reports_other_link_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "link", refuse)
    with pytest.raises(ConfigError, match="cannot create master key file"):
        generate_master_key_file(tmp_path / "master.key")
    assert list(tmp_path.iterdir()) == []


def test_load_reports_an_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "master.key"
    real_open = os.open

    def refuse(target: object, *args: int) -> int:
        if target == path:
            raise PermissionError(13, "Permission denied")
        return real_open(target, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(ConfigError, match=r"cannot open master key file .*Permission denied"):
        load_master_key(path=path, env_value=None)


def test_two_generated_keys_differ(tmp_path: Path) -> None:
    generate_master_key_file(tmp_path / "a")
    generate_master_key_file(tmp_path / "b")
    assert (tmp_path / "a").read_bytes() != (tmp_path / "b").read_bytes()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o620, 0o602, 0o610, 0o700 | 0o001])
def test_load_refuses_group_or_world_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    generate_master_key_file(path)
    path.chmod(mode)
    with pytest.raises(ConfigError, match="group or others") as info:
        load_master_key(path=path, env_value=None)
    assert path.read_text().strip() not in str(info.value)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_load_accepts_owner_only_modes(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    path.write_text(base64.b64encode(MASTER).decode() + "\n")
    path.chmod(mode)
    assert load_master_key(path=path, env_value=None) == MASTER


def test_load_missing_file_says_run_herald_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="herald init") as info:
        load_master_key(path=tmp_path / "master.key", env_value=None)
    assert MASTER_KEY_ENV in str(info.value)


def test_load_refuses_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "master.key"
    directory.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="regular file"):
        load_master_key(path=directory, env_value=None)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not base64!!\n",
        base64.b64encode(MASTER[:31]) + b"\n",
        base64.b64encode(MASTER + b"x") + b"\n",
        base64.b64encode(MASTER) * 10,
    ],
    ids=["empty", "not-base64", "short", "long", "huge"],
)
def test_load_refuses_malformed_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="malformed") as info:
        load_master_key(path=path, env_value=None)
    assert base64.b64encode(MASTER).decode() not in str(info.value)


def test_env_value_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    generate_master_key_file(path)
    env = base64.b64encode(MASTER).decode()
    assert load_master_key(path=path, env_value=env) == MASTER
    # The file is not consulted at all: missing or badly permissioned does not matter.
    path.chmod(0o644)
    assert load_master_key(path=path, env_value=env) == MASTER
    assert load_master_key(path=tmp_path / "nope", env_value=env + "\n") == MASTER


@pytest.mark.parametrize(
    "env",
    [
        "",
        "%%%not-base64%%%",
        base64.b64encode(MASTER[:16]).decode(),
        base64.b64encode(MASTER + MASTER).decode(),
        base64.urlsafe_b64encode(b"\xff" * 32).decode(),  # url-safe alphabet is not accepted
        "é" * 44,
    ],
    ids=["empty", "garbage", "short", "long", "urlsafe", "non-ascii"],
)
def test_bad_env_value_is_refused_even_with_a_good_file(tmp_path: Path, env: str) -> None:
    path = tmp_path / "master.key"
    generate_master_key_file(path)
    with pytest.raises(ConfigError, match=MASTER_KEY_ENV) as info:
        load_master_key(path=path, env_value=env)
    if env:
        assert env not in str(info.value)


# --- TenantKeyRing ------------------------------------------------------------------------------


async def test_ring_round_trip(provider: CountingProvider, store: Store, clock: FakeClock) -> None:
    ring = make_ring(provider, store, clock)
    blob = await ring.seal("t1", "m1", "body", b"hello")
    assert peek_key_version(blob) == 1
    assert await ring.open("t1", "m1", "body", blob) == b"hello"
    contact = await ring.seal("t1", "u1", "email", b"a@b.c", purpose="contact")
    assert await ring.open("t1", "u1", "email", contact, purpose="contact") == b"a@b.c"
    with pytest.raises(DecryptionFailed):
        await ring.open("t1", "u1", "email", contact)


@pytest.mark.parametrize(
    "where",
    [("t2", "m1", "body"), ("t1", "m2", "body"), ("t1", "m1", "title")],
    ids=["another-tenant", "another-row", "another-field"],
)
async def test_ring_moved_ciphertext_fails(
    provider: CountingProvider, store: Store, clock: FakeClock, where: tuple[str, str, str]
) -> None:
    ring = make_ring(provider, store, clock)
    blob = await ring.seal("t1", "m1", "body", b"hello")
    with pytest.raises(DecryptionFailed):
        await ring.open(*where, blob)


async def test_ring_tenants_have_distinct_keys(
    provider: CountingProvider, store: Store, clock: FakeClock
) -> None:
    ring = make_ring(provider, store, clock)
    t1, t2 = await ring.sealer("t1"), await ring.sealer("t2")
    # Same AAD forced through both sealers: only a different key can make this fail.
    blob = t1.seal(b"x", b"aad")
    with pytest.raises(DecryptionFailed):
        t2.open(blob, b"aad")


async def test_ring_caches_until_the_ttl(
    provider: CountingProvider, store: Store, clock: FakeClock
) -> None:
    ring = make_ring(provider, store, clock, ttl=60.0)
    first = await ring.sealer("t1")
    clock.now += 59.9
    assert await ring.sealer("t1") is first
    assert provider.unwraps == 1
    clock.now += 0.1
    second = await ring.sealer("t1")
    assert second is not first
    assert provider.unwraps == 2


async def test_ring_lru_bound(provider: CountingProvider, store: Store, clock: FakeClock) -> None:
    ring = make_ring(provider, store, clock, max_tenants=2)
    await ring.sealer("t1")
    await ring.sealer("t2")
    await ring.sealer("t1")  # t1 is now the most recently used
    await ring.sealer("t3")  # evicts t2
    assert len(ring) == 2
    assert provider.unwraps == 3
    await ring.sealer("t1")
    assert provider.unwraps == 3
    await ring.sealer("t2")
    assert provider.unwraps == 4


async def test_ring_unwraps_once_under_concurrency(
    provider: CountingProvider, store: Store, clock: FakeClock
) -> None:
    await store.add_version("t1")  # two versions: two unwraps per load
    ring = make_ring(provider, store, clock)
    sealers = await asyncio.gather(*(ring.sealer("t1") for _ in range(50)))
    assert all(s is sealers[0] for s in sealers)
    assert provider.unwraps == 2
    assert store.loads == 1
    blobs = await asyncio.gather(*(ring.seal("t2", f"m{i}", "body", b"x") for i in range(20)))
    assert len(set(blobs)) == 20
    assert store.loads == 2


async def test_ring_failed_load_is_shared_then_retried(
    provider: CountingProvider, store: Store, clock: FakeClock
) -> None:
    ring = make_ring(provider, store, clock)
    provider.fail_next = 1
    results = await asyncio.gather(*(ring.sealer("t1") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, DecryptionFailed) for r in results)
    assert provider.unwraps == 1
    assert len(ring) == 0
    await ring.sealer("t1")  # not cached as a failure
    assert provider.unwraps == 2


async def test_ring_cancelled_caller_does_not_cancel_the_load(
    provider: CountingProvider, store: Store, clock: FakeClock
) -> None:
    ring = make_ring(provider, store, clock)
    first = asyncio.create_task(ring.sealer("t1"))
    second = asyncio.create_task(ring.sealer("t1"))
    await asyncio.sleep(0)
    first.cancel()
    sealer = await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await ring.sealer("t1") is sealer
    assert provider.unwraps == 1


async def test_ring_rotation(provider: CountingProvider, store: Store, clock: FakeClock) -> None:
    ring = make_ring(provider, store, clock)
    old_blob = await ring.seal("t1", "m1", "body", b"old")
    await store.add_version("t1")
    # Still cached: new writes keep using version 1 until invalidated or expired.
    assert peek_key_version(await ring.seal("t1", "m2", "body", b"x")) == 1
    ring.invalidate("t1")
    new_blob = await ring.seal("t1", "m3", "body", b"new")
    assert peek_key_version(new_blob) == 2
    assert await ring.open("t1", "m1", "body", old_blob) == b"old"
    assert await ring.open("t1", "m3", "body", new_blob) == b"new"


async def test_ring_reloads_for_a_newer_version_at_most_once_a_second(
    provider: CountingProvider, store: Store, clock: FakeClock
) -> None:
    ring = make_ring(provider, store, clock)
    other_node = make_ring(provider, store, clock)
    await ring.sealer("t1")
    await store.add_version("t1")
    blob = await other_node.seal("t1", "m1", "body", b"rotated elsewhere")
    clock.now += RELOAD_MIN_INTERVAL
    loads = store.loads
    assert await ring.open("t1", "m1", "body", blob) == b"rotated elsewhere"
    assert store.loads == loads + 1
    # A version newer than any stored one: no reload within the interval, then one.
    forged = blob[:1] + (9).to_bytes(4, "big") + blob[5:]
    for _ in range(5):
        with pytest.raises(DecryptionFailed):
            await ring.open("t1", "m1", "body", forged)
    assert store.loads == loads + 1
    clock.now += RELOAD_MIN_INTERVAL
    with pytest.raises(DecryptionFailed):
        await ring.open("t1", "m1", "body", forged)
    assert store.loads == loads + 2


async def test_ring_tenant_without_keys(
    provider: CountingProvider, store: Store, clock: FakeClock
) -> None:
    ring = make_ring(provider, store, clock)
    with pytest.raises(NoDataKey):
        await ring.seal("nobody", "m1", "body", b"x")
    blob = await ring.seal("t1", "m1", "body", b"x")
    with pytest.raises(DecryptionFailed):
        await ring.open("nobody", "m1", "body", blob)


async def test_ring_crypto_shredding(
    provider: CountingProvider, store: Store, clock: FakeClock
) -> None:
    ring = make_ring(provider, store, clock)
    blob = await ring.seal("t1", "m1", "body", b"secret")
    del store.rows["t1"]
    ring.invalidate("t1")
    with pytest.raises(DecryptionFailed):
        await ring.open("t1", "m1", "body", blob)


async def test_ring_invalidate_during_a_load_is_not_cached(
    provider: CountingProvider, store: Store, clock: FakeClock
) -> None:
    ring = make_ring(provider, store, clock)
    pending = asyncio.create_task(ring.sealer("t1"))
    await asyncio.sleep(0)
    ring.invalidate("t1")
    stale = await pending
    assert len(ring) == 0
    fresh = await ring.sealer("t1")
    assert fresh is not stale
    assert provider.unwraps == 2


async def test_ring_rejects_duplicate_versions(
    provider: CountingProvider, store: Store, clock: FakeClock
) -> None:
    store.rows["t1"].append(store.rows["t1"][0])
    ring = make_ring(provider, store, clock)
    with pytest.raises(ValueError, match="duplicate"):
        await ring.sealer("t1")


@pytest.mark.parametrize(("max_tenants", "ttl"), [(0, 300.0), (10, 0.0), (10, -1.0)])
def test_ring_rejects_bad_bounds(
    provider: CountingProvider, clock: FakeClock, max_tenants: int, ttl: float
) -> None:
    with pytest.raises(ValueError, match="must be"):
        TenantKeyRing(
            provider,
            Store(provider).load,
            max_tenants=max_tenants,
            ttl=ttl,
            clock=clock,
            randbytes=os.urandom,
        )
