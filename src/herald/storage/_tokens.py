"""Credentials of :class:`~herald.storage.sql.SqlStore`: app state, operators, revocations."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from herald.storage import schema as s
from herald.storage.base import OperatorRecord

__all__ = ["TokensMixin"]


class TokensMixin:
    """Disable/enable apps, replace secrets, operators, revoke tokens (needs ``_tx``)."""

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

    async def set_app_requires_bound_tokens(
        self, app_id: str, required: bool, now: datetime
    ) -> bool:
        """Require certificate-bound tokens (live tokens die: some may be unbound) or not."""
        t = s.apps
        values: dict[str, object] = {"require_bound_tokens": required}
        if required:
            values["tokens_not_before"] = now
        async with self._tx(write=True) as conn:
            result = await conn.execute(update(t).where(t.c.id == app_id).values(values))
        return bool(result.rowcount)

    async def set_app_scopes(self, app_id: str, scopes: tuple[str, ...], now: datetime) -> bool:
        """Replace an app's scopes; its live tokens (carrying the old scopes) die."""
        if any(not scope or len(scope.split()) != 1 for scope in scopes):
            raise ValueError("a scope is one non-empty word")
        t = s.apps
        text = " ".join(scopes)
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                update(t).where(t.c.id == app_id).values(scopes=text, tokens_not_before=now)
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

    # -- operators ------------------------------------------------------------------------
    async def create_operator(self, operator: OperatorRecord) -> None:
        """Create an operator; IntegrityConflict when the name (or id) is taken."""
        async with self._tx(write=True) as conn:
            await conn.execute(
                insert(s.operators).values(
                    {name: getattr(operator, name) for name in OperatorRecord.__slots__}
                )
            )

    async def _operators(self, where: Any) -> list[OperatorRecord]:
        t = s.operators
        async with self._tx() as conn:
            rows = (await conn.execute(select(t).where(where).order_by(t.c.created_at))).all()
        return [OperatorRecord(**row._asdict()) for row in rows]

    async def get_operator(self, operator_id: str) -> OperatorRecord | None:
        """The operator with this id, or None."""
        found = await self._operators(s.operators.c.id == operator_id)
        return found[0] if found else None

    async def get_operator_by_name(self, name: str) -> OperatorRecord | None:
        """The operator with this login name, or None."""
        found = await self._operators(s.operators.c.name == name)
        return found[0] if found else None

    async def list_operators(self) -> list[OperatorRecord]:
        """Every operator, oldest first."""
        return await self._operators(s.operators.c.id.is_not(None))

    async def update_operator(
        self,
        operator_id: str,
        now: datetime,
        *,
        disabled: bool | None = None,
        password_hash: str | None = None,
        revoke_tokens: bool = False,
    ) -> bool:
        """Change an operator; ``revoke_tokens`` refuses its tokens issued before ``now``."""
        t = s.operators
        values: dict[str, object] = {}
        if disabled is not None:
            values["disabled"] = disabled
        if password_hash is not None:
            values["password_hash"] = password_hash
        if revoke_tokens:
            values["tokens_not_before"] = now
        if not values:
            return await self.get_operator(operator_id) is not None
        async with self._tx(write=True) as conn:
            result = await conn.execute(update(t).where(t.c.id == operator_id).values(values))
        return bool(result.rowcount)
