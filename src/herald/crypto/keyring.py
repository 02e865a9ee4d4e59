"""Per-tenant data keys: envelope encryption over a :class:`KeyProvider`.

Each tenant has versioned data-encryption keys (DEKs). A DEK is stored only wrapped by the
provider's key-encryption key (KEK), with :func:`dek_context` as the wrapping AAD so that a
wrapped key copied to another tenant or version does not unwrap. :class:`TenantKeyRing`
unwraps a tenant's DEKs on first use and keeps the resulting :class:`~herald.crypto.aead.Sealer`
in memory only — bounded in count (LRU) and in time (TTL) — and never writes it anywhere.

The newest version seals; every version opens. Destroying a tenant's wrapped DEKs makes its
content unrecoverable (crypto-shredding); opening then fails with
:class:`~herald.errors.DecryptionFailed`.

Nothing here reads the clock or the RNG directly: both are injected.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

from herald.crypto.aead import (
    KEY_LEN,
    KEY_VERSION_MAX,
    RandBytes,
    Sealer,
    aad_for,
    peek_key_version,
)
from herald.errors import DecryptionFailed, HeraldError

__all__ = [
    "RELOAD_MIN_INTERVAL",
    "KeyProvider",
    "NoDataKey",
    "TenantKeyRing",
    "dek_context",
    "new_data_key",
    "wrap_new_data_key",
]

_DEK_DOMAIN = b"herald/dek/v1"
_TENANT_ID_MAX = 0xFFFF  # the tenant id's length must fit its 2-byte prefix

LoadWrapped = Callable[[str], Awaitable[list[tuple[int, bytes]]]]


class KeyProvider(Protocol):
    """Holds a key-encryption key and wraps/unwraps data keys with it."""

    @property
    def name(self) -> str:
        """The provider's configuration name, e.g. ``"local"``."""
        ...

    async def wrap(self, plaintext_key: bytes, context: bytes) -> bytes:
        """Encrypt a data key, binding ``context`` as associated data."""
        ...

    async def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """Decrypt a wrapped data key; ``DecryptionFailed`` on any failure."""
        ...


class NoDataKey(HeraldError):
    """A tenant has no data key to seal with (never created, or destroyed)."""


def new_data_key(randbytes: RandBytes) -> bytes:
    """Draw a fresh 32-byte AES-256 data key.

    Args:
        randbytes: A CSPRNG (``os.urandom`` in production).

    Returns:
        The key bytes.

    Raises:
        ValueError: ``randbytes`` returned the wrong number of bytes.
    """
    key = randbytes(KEY_LEN)
    if len(key) != KEY_LEN:
        raise ValueError("randbytes returned the wrong number of bytes")
    return key


def dek_context(tenant_id: str, version: int) -> bytes:
    """The associated data that binds a wrapped DEK to its tenant and version.

    Encoding: ``b"herald/dek/v1" || len(tenant) (2 bytes) || tenant (UTF-8) || version
    (4 bytes)``, big-endian; a distinct domain from :func:`~herald.crypto.aead.aad_for`.

    Args:
        tenant_id: The tenant owning the key.
        version: The key's version number.

    Returns:
        The context bytes to pass to :meth:`KeyProvider.wrap` and :meth:`KeyProvider.unwrap`.

    Raises:
        ValueError: The tenant id is longer than 65,535 bytes or the version out of range.
    """
    raw = tenant_id.encode("utf-8")
    if len(raw) > _TENANT_ID_MAX or not 0 <= version <= KEY_VERSION_MAX:
        raise ValueError("tenant id too long or key version out of range")
    return _DEK_DOMAIN + len(raw).to_bytes(2, "big") + raw + version.to_bytes(4, "big")


async def wrap_new_data_key(
    provider: KeyProvider, tenant_id: str, version: int, randbytes: RandBytes
) -> bytes:
    """Create a data key and return it wrapped, ready to store as ``(tenant, version)``.

    The plaintext key is not returned: the key ring unwraps what was stored, so a key that
    was never persisted is never used.

    Args:
        provider: The key provider holding the KEK.
        tenant_id: The tenant the key is for.
        version: The new key's version (one above the tenant's newest).
        randbytes: A CSPRNG for the key (``os.urandom`` in production).

    Returns:
        The wrapped key bytes.
    """
    return await provider.wrap(new_data_key(randbytes), dek_context(tenant_id, version))


#: A blob naming a key version newer than the cached ones reloads the tenant's keys, but at
#: most once per this many seconds, so unreadable blobs cannot drive provider calls.
RELOAD_MIN_INTERVAL: Final = 1.0


@dataclass(slots=True)
class _Entry:
    sealer: Sealer
    loaded_at: float
    expires_at: float


class TenantKeyRing:
    """Caches each tenant's unwrapped data keys as a :class:`Sealer`, bounded and expiring.

    Concurrent first uses of a tenant share one load, so its keys are unwrapped once. A
    failed load is not cached. A blob naming a key version newer than the cached ones (a
    rotation on another node) triggers a reload, at most once per
    :data:`RELOAD_MIN_INTERVAL`.

    Args:
        provider: Unwraps the stored DEKs.
        load_wrapped: ``await load_wrapped(tenant_id)`` returns ``[(version, wrapped), ...]``.
        max_tenants: Tenants kept unwrapped at once; the least recently used is dropped.
        ttl: Seconds an unwrapped tenant stays cached, so rotations and shredding elsewhere
            are picked up and keys do not linger.
        clock: Monotonic seconds (``time.monotonic`` in production).
        randbytes: Nonce source for the sealers (``os.urandom`` in production).
    """

    def __init__(
        self,
        provider: KeyProvider,
        load_wrapped: LoadWrapped,
        *,
        max_tenants: int = 1024,
        ttl: float = 300.0,
        clock: Callable[[], float],
        randbytes: RandBytes,
    ) -> None:
        if max_tenants < 1:
            raise ValueError("max_tenants must be at least 1")
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._provider = provider
        self._load_wrapped = load_wrapped
        self._max_tenants = max_tenants
        self._ttl = ttl
        self._clock = clock
        self._randbytes = randbytes
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._pending: dict[str, asyncio.Task[Sealer]] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def invalidate(self, tenant_id: str) -> None:
        """Forget a tenant's unwrapped keys (after rotation or shredding).

        A load already in flight still answers its waiters but is not cached.

        Args:
            tenant_id: The tenant whose keys to drop.
        """
        self._cache.pop(tenant_id, None)
        self._pending.pop(tenant_id, None)

    async def sealer(self, tenant_id: str) -> Sealer:
        """The tenant's sealer: newest version seals, every version opens.

        Args:
            tenant_id: The tenant.

        Returns:
            The cached sealer, or a freshly unwrapped one.

        Raises:
            NoDataKey: The tenant has no stored data key.
            DecryptionFailed: A stored key did not unwrap.
        """
        entry = self._cache.get(tenant_id)
        if entry is not None:
            if self._clock() < entry.expires_at:
                self._cache.move_to_end(tenant_id)
                return entry.sealer
            del self._cache[tenant_id]
        task = self._pending.get(tenant_id)
        if task is None:
            task = asyncio.create_task(self._load(tenant_id))
            self._pending[tenant_id] = task
            task.add_done_callback(lambda done: self._forget_pending(tenant_id, done))
        # shield: a cancelled caller must not cancel the load the other callers wait for.
        return await asyncio.shield(task)

    async def seal(
        self,
        tenant_id: str,
        record_id: str,
        field: str,
        plaintext: bytes,
        *,
        purpose: str = "content",
    ) -> bytes:
        """Seal a field value of a tenant's record with the tenant's newest data key.

        Args:
            tenant_id: The owning tenant.
            record_id: The row the value is stored in.
            field: The column or attribute name.
            plaintext: The value.
            purpose: Domain separation label passed to :func:`~herald.crypto.aead.aad_for`.

        Returns:
            The sealed blob to store.

        Raises:
            NoDataKey: The tenant has no data key.
            KeyExhausted: The newest key reached its seal limit in this process.
        """
        sealer = await self.sealer(tenant_id)
        aad = aad_for(tenant_id=tenant_id, record_id=record_id, field=field, purpose=purpose)
        return sealer.seal(plaintext, aad)

    async def digest(self, tenant_id: str, data: bytes) -> bytes:
        """A keyed digest of ``data`` for this tenant (see :meth:`Sealer.digest`)."""
        return (await self.sealer(tenant_id)).digest(data)

    async def open(
        self, tenant_id: str, record_id: str, field: str, blob: bytes, *, purpose: str = "content"
    ) -> bytes:
        """Open a field value sealed by :meth:`seal` for the same tenant, record and field.

        Args:
            tenant_id: The owning tenant.
            record_id: The row the value was stored in.
            field: The column or attribute name.
            blob: The sealed blob.
            purpose: The label given to :meth:`seal`.

        Returns:
            The plaintext.

        Raises:
            DecryptionFailed: For every failure, including a tenant without keys.
        """
        aad = aad_for(tenant_id=tenant_id, record_id=record_id, field=field, purpose=purpose)
        try:
            sealer = await self.sealer(tenant_id)
            if peek_key_version(blob) > sealer.current_version and self._may_reload(tenant_id):
                # Rotated elsewhere since we cached; older unknown versions were destroyed.
                self.invalidate(tenant_id)
                sealer = await self.sealer(tenant_id)
        except NoDataKey:
            raise DecryptionFailed() from None
        return sealer.open(blob, aad)

    def _may_reload(self, tenant_id: str) -> bool:
        entry = self._cache.get(tenant_id)
        return entry is None or self._clock() - entry.loaded_at >= RELOAD_MIN_INTERVAL

    def _forget_pending(self, tenant_id: str, task: asyncio.Task[Sealer]) -> None:
        if self._pending.get(tenant_id) is task:
            del self._pending[tenant_id]
        if not task.cancelled():
            task.exception()  # mark retrieved: every caller may have been cancelled

    async def _load(self, tenant_id: str) -> Sealer:
        rows = await self._load_wrapped(tenant_id)
        if not rows:
            raise NoDataKey(f"tenant {tenant_id!r} has no data key")
        keys: dict[int, bytes] = {}
        for version, wrapped in rows:
            if version in keys:
                raise ValueError("duplicate data key version")
            keys[version] = await self._provider.unwrap(wrapped, dek_context(tenant_id, version))
        sealer = Sealer(keys, max(keys), self._randbytes)
        if self._pending.get(tenant_id) is asyncio.current_task():  # not invalidated meanwhile
            now = self._clock()
            self._cache[tenant_id] = _Entry(sealer, now, now + self._ttl)
            self._cache.move_to_end(tenant_id)
            while len(self._cache) > self._max_tenants:
                self._cache.popitem(last=False)
        return sealer
