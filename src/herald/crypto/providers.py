"""Key-encryption providers as configured, and the router that names the KEK in every blob.

Every wrapped key Herald stores is ``0x02 || len(kek_id) || kek_id || provider blob``: the
blob says which KEK wrapped it (as AWS KMS, Tink and Vault ciphertexts carry a key id), so
during a KEK rotation old and new KEKs can both be configured and each blob goes to the
right one. The id is only a routing hint; the provider's own AEAD (local) or KMS decrypt
authenticates the blob together with its context.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from herald.config import Settings
from herald.crypto.masterkey import LocalKeyProvider, load_master_key
from herald.errors import ConfigError, DecryptionFailed

__all__ = [
    "KekProvider",
    "KekRouter",
    "build_router",
    "master_key_files",
]

_FORMAT = 0x02


class KekProvider(Protocol):
    """A key provider that names its KEK."""

    @property
    def kek_id(self) -> str:
        """A stable, non-secret identifier of the KEK."""
        ...

    @property
    def name(self) -> str:
        """The provider's kind (``local``, ``aws-kms``)."""
        ...

    async def wrap(self, plaintext_key: bytes, context: bytes) -> bytes:
        """Wrap a key, binding ``context``."""
        ...

    async def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """Unwrap a key wrapped with ``context``."""
        ...


Reload = Callable[[], tuple[KekProvider, list[KekProvider]]]


class KekRouter:
    """Wraps with the current KEK; unwraps with whichever configured KEK the blob names.

    With ``reload``, a blob naming an unknown KEK makes the router re-read its configuration
    (at most once per second) before giving up — so a running node follows a KEK rotation
    done by ``herald keys rotate-kek`` in another process without a restart.
    """

    def __init__(
        self,
        current: KekProvider,
        others: Iterable[KekProvider] = (),
        *,
        reload: Reload | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._set(current, others)
        self._reload = reload
        self._clock = clock
        self._reloaded_at = -1.0

    def _set(self, current: KekProvider, others: Iterable[KekProvider]) -> None:
        self.current = current
        self._by_id = {p.kek_id: p for p in (*others, current)}

    @property
    def name(self) -> str:
        """The current provider's kind."""
        return self.current.name

    @property
    def kek_id(self) -> str:
        """The KEK new wraps use."""
        return self.current.kek_id

    def providers(self) -> list[KekProvider]:
        """Every configured provider, the current one included."""
        return list(self._by_id.values())

    @property
    def kek_ids(self) -> frozenset[str]:
        """Every KEK this router can unwrap with."""
        return frozenset(self._by_id)

    async def wrap(self, plaintext_key: bytes, context: bytes) -> bytes:
        """Wrap with the current KEK and prefix its id.

        Wraps are rare (a tenant, a key rotation), so the configuration is re-read first:
        a node never wraps with a KEK that a rotation in another process replaced.
        """
        if self._reload is not None:
            self._set(*self._reload())
        kek_id = self.current.kek_id.encode("ascii")
        inner = await self.current.wrap(plaintext_key, context)
        return bytes([_FORMAT, len(kek_id)]) + kek_id + inner

    @staticmethod
    def kek_of(wrapped: bytes) -> str:
        """The KEK id a wrapped blob names (DecryptionFailed when malformed)."""
        if len(wrapped) < 2 or wrapped[0] != _FORMAT or len(wrapped) < 2 + wrapped[1]:
            raise DecryptionFailed
        try:
            return wrapped[2 : 2 + wrapped[1]].decode("ascii")
        except UnicodeDecodeError:
            raise DecryptionFailed from None

    async def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """Unwrap with the KEK the blob names; a clear error when it is not configured."""
        kek_id = self.kek_of(wrapped)
        provider = self._by_id.get(kek_id)
        if provider is None and self._reload is not None:
            now = self._clock()
            if now - self._reloaded_at >= 1.0:
                self._reloaded_at = now
                self._set(*self._reload())
                provider = self._by_id.get(kek_id)
        if provider is None:
            raise ConfigError(
                f"a stored key is wrapped by KEK {kek_id!r}, which is not configured "
                "(finish or undo the KEK rotation)"
            )
        return await provider.unwrap(wrapped[2 + wrapped[1] :], context)


def master_key_files(settings: Settings) -> tuple[Path, Path, Path]:
    """``(current, next, previous)`` master key files of the local provider."""
    current = settings.master_key_file
    return (
        current,
        current.with_name(current.name + ".next"),
        current.with_name(current.name + ".previous"),
    )


def _local_providers(settings: Settings) -> tuple[LocalKeyProvider, list[LocalKeyProvider]]:
    env = settings.master_key.get_secret_value() if settings.master_key else None
    current_file, next_file, previous_file = master_key_files(settings)
    current = LocalKeyProvider(load_master_key(path=current_file, env_value=env))
    others = [
        LocalKeyProvider(load_master_key(path=path, env_value=None))
        for path in (next_file, previous_file)
        if path.exists()
    ]
    return current, others


def build_router(settings: Settings) -> KekRouter:
    """The configured providers: the current KEK plus any still needed to unwrap."""
    current, others = _providers(settings)
    return KekRouter(current, others, reload=lambda: _providers(settings))


def _providers(settings: Settings) -> tuple[KekProvider, list[KekProvider]]:
    if settings.key_provider == "local":
        current, others = _local_providers(settings)
        return current, list(others)
    from herald.crypto.kms import AwsKmsProvider  # noqa: PLC0415 - optional dependency

    if not settings.aws_kms_key_id:
        raise ConfigError("HERALD_AWS_KMS_KEY_ID is required with HERALD_KEY_PROVIDER=aws-kms")
    key_ids = [settings.aws_kms_key_id, *settings.aws_kms_previous_key_ids.split(",")]
    kms = [
        AwsKmsProvider(
            key_id.strip(), region=settings.aws_region, endpoint_url=settings.aws_kms_endpoint_url
        )
        for key_id in key_ids
        if key_id.strip()
    ]
    extra: list[KekProvider] = list(kms[1:])
    # A deployment that moved from local to KMS still unwraps what the master key wrapped.
    if settings.master_key is not None or settings.master_key_file.exists():
        local, more = _local_providers(settings)
        extra.extend([local, *more])
    return kms[0], extra
