"""Operators: the people who run Herald, separate from apps.

An operator signs in with a name and a password at ``POST /v1/admin/login`` and gets a
short-lived operator token (its own ``typ`` and audience, so it is never an app token). A
*global* operator administers every tenant; a *tenant* operator only its own (see
:mod:`herald.core.policy`).

Passwords are hashed with Argon2id (argon2-cffi's defaults, RFC 9106's second recommended
option: t=3, m=64 MiB, p=4), off the event loop. An unknown name costs the same hash as a
wrong password, every failure is one :class:`~herald.errors.InvalidCredentials`, and the
token endpoint's lockout (per name and per address, exponential back-off) applies before
any hash is computed. Sign-ins, refusals, logouts and every change to an operator are audit
events.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import unicodedata
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from herald import limits
from herald.crypto.tokens import OperatorClaims
from herald.errors import BadRequest, Conflict, IntegrityConflict, InvalidCredentials, NotFound
from herald.service import audit, throttle
from herald.service.runtime import Runtime, utcnow
from herald.storage.base import OperatorRecord

__all__ = [
    "create_operator",
    "generate_password",
    "login",
    "logout",
    "operator_view",
    "set_disabled",
    "set_password",
]

_hasher = PasswordHasher()
#: Lockout keys of operator names never collide with app client ids.
_LOCKOUT_PREFIX = "operator:"


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the name is unknown (same cost, no name oracle)."""
    return _hasher.hash(secrets.token_urlsafe(24))


def generate_password() -> str:
    """A random password of 192 bits (shown once by ``herald admin create``)."""
    return secrets.token_urlsafe(24)


def _normalise(password: str) -> str:
    """NFKC, as NIST SP 800-63B §5.1.1.2 advises, so the same typed text always matches."""
    return unicodedata.normalize("NFKC", password)


def _check_password(password: str) -> str:
    if not isinstance(password, str):
        raise BadRequest("the password must be a string")
    text = _normalise(password)
    if not limits.OPERATOR_PASSWORD_MIN <= len(text) <= limits.OPERATOR_PASSWORD_MAX:
        raise BadRequest(
            f"a password has {limits.OPERATOR_PASSWORD_MIN}-{limits.OPERATOR_PASSWORD_MAX} "
            "characters"
        )
    return text


def _check_name(name: str) -> str:
    ok = (
        isinstance(name, str)
        and 0 < len(name) <= limits.OPERATOR_NAME_MAX
        and name.isascii()
        and all(c.isalnum() or c in "._-@" for c in name)
    )
    if not ok:
        raise BadRequest(
            f"an operator name has 1-{limits.OPERATOR_NAME_MAX} characters: "
            "letters, digits and . _ - @"
        )
    return name


async def _hash(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def operator_view(record: OperatorRecord) -> dict[str, Any]:
    """What the API and the CLI show of an operator (never the hash)."""
    return {
        "id": record.id,
        "name": record.name,
        "tenant": record.tenant_id,
        "role": "global" if record.tenant_id is None else "tenant",
        "disabled": record.disabled,
        "created_at": record.created_at.isoformat(),
    }


async def create_operator(
    rt: Runtime, name: str, password: str, *, tenant_id: str | None, actor: str
) -> OperatorRecord:
    """Create an operator (global when ``tenant_id`` is None).

    Raises:
        BadRequest: a bad name or password, or no such tenant.
        Conflict: the name is taken.
    """
    name = _check_name(name)
    text = _check_password(password)
    if tenant_id is not None and await rt.store.get_tenant(tenant_id) is None:
        raise BadRequest(f"no tenant {tenant_id[:64]!r}")
    record = OperatorRecord(
        id=f"op_{secrets.token_hex(10)}",
        name=name,
        tenant_id=tenant_id,
        password_hash=await _hash(text),
        disabled=False,
        created_at=utcnow(),
    )
    try:
        await rt.store.create_operator(record)
    except IntegrityConflict:
        raise Conflict(f"an operator named {name!r} exists already") from None
    await audit.record(
        rt,
        tenant=tenant_id,
        actor=actor,
        action="operator.created",
        obj=f"operator:{record.id}",
        name=name,
        role="global" if tenant_id is None else "tenant",
    )
    return record


async def _by_name(rt: Runtime, name: str) -> OperatorRecord:
    record = await rt.store.get_operator_by_name(name)
    if record is None:
        raise NotFound(f"no operator {name[:64]!r}")
    return record


async def set_disabled(rt: Runtime, name: str, *, disabled: bool, actor: str) -> OperatorRecord:
    """Disable an operator (its live tokens die at once) or enable it again."""
    record = await _by_name(rt, name)
    await rt.store.update_operator(record.id, utcnow(), disabled=disabled, revoke_tokens=disabled)
    rt.live.forget(operator_id=record.id)
    await audit.record(
        rt,
        tenant=record.tenant_id,
        actor=actor,
        action="operator.disabled" if disabled else "operator.enabled",
        obj=f"operator:{record.id}",
    )
    return await _by_name(rt, name)


async def set_password(rt: Runtime, name: str, password: str, *, actor: str) -> OperatorRecord:
    """A new password; tokens issued with the old one are refused from now."""
    record = await _by_name(rt, name)
    hashed = await _hash(_check_password(password))
    await rt.store.update_operator(record.id, utcnow(), password_hash=hashed, revoke_tokens=True)
    rt.live.forget(operator_id=record.id)
    await audit.record(
        rt,
        tenant=record.tenant_id,
        actor=actor,
        action="operator.password_changed",
        obj=f"operator:{record.id}",
    )
    return await _by_name(rt, name)


async def login(
    rt: Runtime, name: str, password: str, address: str | None, *, console: bool = False
) -> dict[str, Any]:
    """Check a name and password; an operator token, or one InvalidCredentials.

    ``console``: a web console session — the token carries a fresh CSRF value, returned as
    ``csrf_token`` (the console keeps the token itself in an ``HttpOnly`` cookie).

    Raises:
        RateLimited: the name or the address is locked out (nothing is hashed or audited).
        InvalidCredentials: unknown name, wrong password, disabled operator.
    """
    if not isinstance(name, str) or not isinstance(password, str):
        raise InvalidCredentials
    key = _LOCKOUT_PREFIX + name[: limits.OPERATOR_NAME_MAX]
    await throttle.check_lockout(rt, key, address)
    too_long = len(name) > limits.OPERATOR_NAME_MAX or len(password) > 4 * (
        limits.OPERATOR_PASSWORD_MAX
    )
    record = None if too_long else await rt.store.get_operator_by_name(name)
    stored = record.password_hash if record is not None else _dummy_hash()
    text = "" if too_long else _normalise(password)
    ok = await asyncio.to_thread(_verify, stored, text) and record is not None
    if record is None or not ok or record.disabled:
        await throttle.record_login(rt, key, address, ok=False)
        rt.metrics.record_auth_failure("invalid_credentials")
        await audit.record(
            rt,
            tenant=record.tenant_id if record is not None else None,
            actor=f"operator-name:{name[: limits.OPERATOR_NAME_MAX]}",
            action="operator.login_refused",
            obj=f"operator:{record.id}" if record is not None else "operator:unknown",
            reason="disabled" if record is not None and ok else "invalid_credentials",
        )
        raise InvalidCredentials
    await throttle.record_login(rt, key, address, ok=True)
    if _hasher.check_needs_rehash(record.password_hash):
        # Parameters were raised since the hash was made: upgrade it now we know the text.
        hashed = await _hash(text)
        await rt.store.update_operator(record.id, utcnow(), password_hash=hashed)
    csrf = secrets.token_urlsafe(24) if console else None
    token, expires_in = rt.token_service().issue_operator(
        operator_id=record.id,
        tenant_id=record.tenant_id,
        ttl=rt.settings.operator_token_ttl,
        csrf=csrf,
    )
    await audit.record(
        rt,
        tenant=record.tenant_id,
        actor=f"operator:{record.id}",
        action="operator.login",
        obj=f"operator:{record.id}",
        expires_in=expires_in,
        **({"via": "console"} if console else {}),
    )
    body: dict[str, Any] = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "operator": operator_view(record),
    }
    if csrf is not None:
        body["csrf_token"] = csrf
    return body


async def logout(rt: Runtime, claims: OperatorClaims) -> None:
    """Revoke the operator token presented (kept until it would have expired anyway)."""
    expires_at = datetime.fromtimestamp(claims.expires_at, UTC)
    with contextlib.suppress(IntegrityConflict):  # a concurrent logout: the same outcome
        await rt.store.revoke_token(claims.jti, claims.operator_id, expires_at, utcnow())
    rt.live.forget(jti=claims.jti)
    await audit.record(
        rt,
        tenant=claims.tenant_id,
        actor=f"operator:{claims.operator_id}",
        action="operator.logout",
        obj=f"operator:{claims.operator_id}",
    )
