"""The runtime: every adapter of one Herald node, wired from the settings.

Both ``herald serve`` and the administrative CLI commands open a :class:`Runtime`; the
administrative ones simply never start a listener.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec

from herald import limits
from herald.audit.log import AuditLog, DirectoryWitness
from herald.audit.note import NoteSigner
from herald.bus.base import Bus, LiveMessage
from herald.bus.memory import MemoryBus
from herald.bus.redis import RedisBus
from herald.channels.registry import ChannelRegistry
from herald.config import Settings
from herald.core.ids import UUIDv7Generator, default_generator
from herald.core.lru import Lru
from herald.core.templates import CompiledTemplate
from herald.crypto.keyring import TenantKeyRing
from herald.crypto.providers import KekRouter, build_router
from herald.crypto.signing import (
    PURPOSE_AUDIT,
    PURPOSE_TOKEN,
    PURPOSE_VAPID,
    unwrap_signing_key,
    unwrap_vapid_key,
)
from herald.crypto.tokens import AccessClaims, OperatorClaims, SubscriberClaims, TokenService
from herald.errors import ConfigError, DecryptionFailed, InvalidToken, StorageError
from herald.observability.logging import get_logger
from herald.observability.metrics import Metrics
from herald.state._redis import connect
from herald.state.live import LiveCheck
from herald.state.lockout import Lockout, LockoutPolicy, MemoryLockout, RedisLockout
from herald.state.nonces import MemoryNonceStore, NonceStore, RedisNonceStore
from herald.state.ratelimit import Bucket, MemoryRateLimiter, RateLimiter, RedisRateLimiter
from herald.state.tickets import MemoryTicketStore, RedisTicketStore, TicketStore
from herald.storage.base import PublishResult, Store
from herald.storage.sql import SqlStore
from herald.streams.hub import Hub

if TYPE_CHECKING:  # the dispatcher and the planner import the runtime
    from herald.core.grouping import GroupRunner
    from herald.service.audit import AuditGroup
    from herald.service.delivery import Dispatcher
    from herald.service.plans import Planner

__all__ = ["Runtime", "utcnow"]

_log = get_logger("herald.runtime")
_Claims = TypeVar("_Claims", AccessClaims, SubscriberClaims, OperatorClaims)


@dataclass(frozen=True, slots=True)
class Lockouts:
    """Token-endpoint lockouts by client id and by source address."""

    client: Lockout
    address: Lockout

    async def close(self) -> None:
        """Release both stores."""
        await self.client.close()
        await self.address.close()


@dataclass(frozen=True, slots=True)
class Buckets:
    """The rate-limit policies of this node."""

    app: Bucket
    subscriber: Bucket


def utcnow() -> datetime:
    """The wall clock, timezone-aware UTC (the one place services read it)."""
    return datetime.now(UTC)


@dataclass(eq=False)
class Runtime:
    """The wired adapters of one node."""

    settings: Settings
    store: Store
    provider: KekRouter
    keyring: TenantKeyRing
    ids: UUIDv7Generator
    metrics: Metrics
    hub: Hub
    bus: Bus
    tickets: TicketStore[SubscriberClaims]
    nonces: NonceStore
    limiter: RateLimiter
    lockouts: Lockouts
    buckets: Buckets
    live: LiveCheck
    #: Requests signed before this instant are refused when the nonce store forgets on
    #: restart (embedded mode); None with a durable shared store (Redis).
    nonce_not_before: float | None
    tokens: TokenService | None = None
    _token_key_state: tuple[object, ...] = ()
    audit: AuditLog | None = None
    #: Channel plugins and the delivery worker; set by the server (not admin commands).
    channels: ChannelRegistry | None = None
    dispatcher: Dispatcher | None = None
    planner: Planner | None = None
    #: Compiled template versions by (tenant, name, version); versions never change.
    templates: Lru[tuple[str, str, int], CompiledTemplate] = field(default_factory=lambda: Lru(256))
    #: Serialises commit + fan-out on this node so that live order equals commit order.
    publish_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    started_at: float = field(default_factory=time.time)
    #: The monotonic clock of the unknown-kid reload throttle (injectable for tests).
    clock: Callable[[], float] = time.monotonic
    #: Token-key reloads caused by unknown kids since start (at most one per interval).
    unknown_kid_reloads: int = 0
    _unknown_kid_reload_at: float = -math.inf
    _unknown_kid_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Groups concurrent ``audit.record`` calls into one append (made on first use).
    audit_group: AuditGroup | None = None
    #: Groups concurrent publishes into one transaction (``herald.service.messages``).
    publish_group: GroupRunner[Any, PublishResult] | None = None

    @classmethod
    async def open(cls, settings: Settings, *, migrate: bool = True) -> Runtime:
        """Open the store (migrating it), load keys, and wire the adapters."""
        provider = build_router(settings)
        ids = default_generator()
        store = await SqlStore.open(
            settings.sqlalchemy_url, new_id=ids.new_str, clock=utcnow, migrate=migrate
        )

        async def load_wrapped(tenant_id: str) -> list[tuple[int, bytes]]:
            return [(k.version, k.wrapped_key) for k in await store.tenant_keys(tenant_id)]

        keyring = TenantKeyRing(
            provider,
            load_wrapped,
            ttl=settings.key_cache_ttl,
            clock=time.monotonic,
            randbytes=os.urandom,
        )
        nonces: NonceStore
        limiter: RateLimiter
        lockouts: Lockouts
        cap = max(settings.lockout_cap, settings.lockout_base)
        by_client = LockoutPolicy(settings.lockout_threshold, settings.lockout_base, cap)
        by_address = LockoutPolicy(settings.lockout_address_threshold, settings.lockout_base, cap)
        if settings.redis_url is not None:
            url = settings.redis_url.get_secret_value()
            redis_nonces = RedisNonceStore.from_url(url)
            # Best effort: the epoch exists before the first request (None: Redis is down,
            # and the first claim after it is back writes the epoch instead).
            await redis_nonces.epoch()
            nonces = redis_nonces
            limiter = RedisRateLimiter.from_url(url)
            lockouts = Lockouts(
                RedisLockout.from_url(url, by_client, prefix="herald:lock:client:"),
                RedisLockout.from_url(url, by_address, prefix="herald:lock:addr:"),
            )
        else:
            nonces = MemoryNonceStore(clock=time.monotonic, capacity=settings.nonce_capacity)
            limiter = MemoryRateLimiter()
            lockouts = Lockouts(MemoryLockout(by_client), MemoryLockout(by_address))
        hub = Hub()
        bus: Bus
        tickets: TicketStore[SubscriberClaims]
        runtime_ref: list[Runtime] = []
        if settings.cluster_mode:
            assert settings.redis_url is not None  # noqa: S101 - the settings check it
            url = settings.redis_url.get_secret_value()

            async def load(seqs: list[int]) -> list[LiveMessage]:
                from herald.service.messages import live_messages  # noqa: PLC0415 - cycle

                return await live_messages(runtime_ref[0], seqs)

            bus = RedisBus(
                connect(url),
                index=store.message_seqs_after,
                load=load,
                start_after=await store.last_message_seq(),
            )
            tickets = RedisTicketStore.from_url(
                url, encode=SubscriberClaims.to_bytes, decode=SubscriberClaims.from_bytes
            )
        else:
            bus = MemoryBus()
            tickets = MemoryTicketStore(clock=time.monotonic)
        bus.subscribe(hub.dispatch)
        runtime = cls(
            settings=settings,
            store=store,
            provider=provider,
            keyring=keyring,
            ids=ids,
            metrics=Metrics(),
            hub=hub,
            bus=bus,
            tickets=tickets,
            nonces=nonces,
            limiter=limiter,
            lockouts=lockouts,
            live=LiveCheck(store),
            buckets=Buckets(
                app=Bucket(settings.rate_limit_app_rate, settings.rate_limit_app_burst, name="app"),
                subscriber=Bucket(
                    settings.rate_limit_subscriber_rate,
                    settings.rate_limit_subscriber_burst,
                    name="subscriber",
                ),
            ),
            # created is whole seconds: the first whole second after start is the earliest
            # one this process can vouch for.
            nonce_not_before=float(math.ceil(time.time())) if nonces.volatile else None,
        )
        runtime_ref.append(runtime)
        runtime.metrics.watch_stream_queues(hub.queue_depths)
        await runtime.reload_token_keys()
        await runtime.load_audit_key()
        return runtime

    async def load_audit_key(self) -> None:
        """Load the audit-signing key (newest) and wire the audit log."""
        records = [r for r in await self.store.signing_keys(PURPOSE_AUDIT) if r.retired_at is None]
        if records:
            key = await unwrap_signing_key(self.provider, records[0])
            # The origin names the log and the key; derived from the key itself unless set,
            # so a new host, port or public URL never changes either.
            origin = self.settings.audit_origin or f"herald-audit/{key.kid[:16]}"
            self.audit = AuditLog(
                store=self.store,
                signer=NoteSigner(origin, key.private_key),
                origin=origin,
                witness=DirectoryWitness(self.settings.witness_dir),
            )

    async def vapid_key(self) -> ec.EllipticCurvePrivateKey | None:
        """The newest Web Push VAPID key, unwrapped (None before it exists)."""
        records = [r for r in await self.store.signing_keys(PURPOSE_VAPID) if r.retired_at is None]
        return await unwrap_vapid_key(self.provider, records[0]) if records else None

    def audit_log(self) -> AuditLog:
        """The audit log; a clear error when ``herald init`` has not been run."""
        if self.audit is None:
            raise ConfigError("no audit-signing key in the database: run `herald init` first")
        return self.audit

    async def reload_token_keys(self) -> None:
        """(Re)load the token-signing keys; without one, token routes are unavailable."""
        records = await self.store.signing_keys(PURPOSE_TOKEN)
        now = utcnow()
        live = [r for r in records if r.retired_at is None or r.retired_at > now]
        state = tuple((r.kid, r.activates_at, r.retired_at) for r in live)
        if self.tokens is not None and state == self._token_key_state:
            return  # nothing changed: no unwrapping (a KMS call per key)
        keys = [await unwrap_signing_key(self.provider, r) for r in live]
        if keys:
            self._token_key_state = state
            self.tokens = TokenService(
                issuer=self.settings.base_url,
                keys=keys,
                clock=time.time,
                new_jti=self.ids.new_str,
            )

    async def verify_access(self, token: str) -> AccessClaims:
        """Verify an access token, knowing keys rotated in elsewhere (see :meth:`_verify`)."""
        return await self._verify(token, TokenService.verify_access)

    async def verify_subscriber(self, token: str) -> SubscriberClaims:
        """Verify a subscriber token, knowing keys rotated in elsewhere (see :meth:`_verify`)."""
        return await self._verify(token, TokenService.verify_subscriber)

    async def verify_operator(self, token: str) -> OperatorClaims:
        """Verify an operator token, knowing keys rotated in elsewhere (see :meth:`_verify`)."""
        return await self._verify(token, TokenService.verify_operator)

    async def _verify(self, token: str, verify: Callable[[TokenService, str], _Claims]) -> _Claims:
        """Verify, reloading the keys once first when the token names a kid this node lacks.

        A token that still fails is answered with the same :class:`InvalidToken`.
        """
        tokens = self.token_service()
        try:
            return verify(tokens, token)
        except InvalidToken:
            if not tokens.names_unknown_kid(token):
                raise
        await self.reload_for_unknown_kid()
        return verify(self.token_service(), token)

    async def reload_for_unknown_kid(self) -> None:
        """Re-read the token keys because a token named an unknown kid.

        At most once per :data:`~herald.limits.UNKNOWN_KID_RELOAD_INTERVAL`: callers that
        arrive while a reload runs wait for it and share it, and later ones within the
        interval change nothing, so a flood of made-up kids costs one read per interval.
        A failing database or key provider is logged; the token is then simply unknown.
        """
        async with self._unknown_kid_lock:
            if self.clock() - self._unknown_kid_reload_at < limits.UNKNOWN_KID_RELOAD_INTERVAL:
                return
            self._unknown_kid_reload_at = self.clock()
            self.unknown_kid_reloads += 1
            try:
                await self.reload_token_keys()
            except (StorageError, DecryptionFailed):
                _log.warning("token keys not reloaded: database or key provider unavailable")

    def token_service(self) -> TokenService:
        """The token service; a clear error when ``herald init`` has not been run."""
        if self.tokens is None:
            raise ConfigError("no token-signing key in the database: run `herald init` first")
        return self.tokens

    async def close(self) -> None:
        """Stop streams and release connections."""
        self.hub.shutdown()
        await self.bus.close()
        await self.tickets.close()
        await self.nonces.close()
        await self.limiter.close()
        await self.lockouts.close()
        await self.store.close()
