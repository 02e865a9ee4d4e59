"""App credential state and token revocations of :class:`~herald.storage.sql.SqlStore`."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.storage import schema as s

__all__ = ["TokensMixin"]


class TokensMixin:
    """Disable/enable apps, replace secrets, revoke tokens (needs ``_tx``)."""

    _tx: Callable[..., AbstractAsyncContextManager[AsyncConnection]]

    async def set_app_disabled(self, app_id: str, disabled: bool, now: datetime) -> bool:
        """Disable (its live tokens die: ``tokens_not_before = now``) or enable an app."""
        t = s.apps
        values: dict[str, object] = {"disabled": disabled}
        if disabled:
            values["tokens_not_before"] = now
        async with self._tx(write=True) as conn:
            result = await conn.execute(update(t).where(t.c.id == app_id).values(values))
        return bool(result.rowcount)

    async def replace_app_secret(self, app_id: str, secret_hash: bytes, now: datetime) -> bool:
        """A new client secret; tokens issued with the old one are refused from ``now``."""
        t = s.apps
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                update(t)
                .where(t.c.id == app_id)
                .values(secret_hash=secret_hash, tokens_not_before=now)
            )
        return bool(result.rowcount)

    async def revoke_token(
        self, jti: str, app_id: str, expires_at: datetime, now: datetime
    ) -> None:
        """Record a revoked token id (a repeat changes nothing).

        Raises:
            IntegrityConflict: another request revoked it at the same moment (the same
                outcome; callers may ignore it).
        """
        t = s.revoked_tokens
        async with self._tx(write=True) as conn:
            found = await conn.scalar(select(t.c.jti).where(t.c.jti == jti))
            if found is None:
                await conn.execute(
                    insert(t).values(jti=jti, app_id=app_id, expires_at=expires_at, revoked_at=now)
                )

    async def is_revoked(self, jti: str) -> bool:
        """Whether a token id was revoked."""
        t = s.revoked_tokens
        async with self._tx() as conn:
            return await conn.scalar(select(t.c.jti).where(t.c.jti == jti)) is not None

    async def purge_revocations(self, before: datetime) -> int:
        """Forget revocations of tokens that expired before ``before``."""
        t = s.revoked_tokens
        async with self._tx(write=True) as conn:
            result = await conn.execute(delete(t).where(t.c.expires_at < before))
        return int(result.rowcount or 0)
