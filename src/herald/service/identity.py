"""Tenants, apps and OAuth client-credentials tokens.

Client secrets are 256-bit random strings; only their SHA-256 is stored and comparison is
constant-time. A slow password hash would add nothing against guessing a 256-bit secret and
would cost CPU on every token request, so none is used (passwords of human operators, a
later feature, get Argon2id).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import timedelta

from herald import limits
from herald.core.scopes import ScopeSet
from herald.crypto.keyring import wrap_new_data_key
from herald.crypto.signing import (
    PURPOSE_AUDIT,
    PURPOSE_TOKEN,
    PURPOSE_VAPID,
    new_signing_key,
    new_vapid_key,
)
from herald.errors import BadRequest, Conflict, IntegrityConflict, InvalidClient
from herald.service import audit
from herald.service.runtime import Runtime, utcnow
from herald.storage.base import AppRecord, TenantKeyRecord, TenantRecord

__all__ = [
    "CreatedApp",
    "app_view",
    "authenticate_client",
    "create_app",
    "create_tenant",
    "ensure_signing_keys",
    "hash_secret",
    "issue_access_token",
    "min_prepublication",
    "new_client_secret",
    "rotate_token_key",
    "tenant_view",
]

#: Tenant names: what operators type; ids are generated.
_NAME_MAX = 64


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def new_client_secret() -> str:
    """A new client secret: 256 random bits, shown once, stored only as :func:`hash_secret`."""
    return "hsec_" + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> bytes:
    """SHA-256 of a high-entropy client secret (see the module docstring)."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def _check_name(name: str) -> str:
    if not name or len(name) > _NAME_MAX or not name.isprintable() or name != name.strip():
        raise BadRequest(f"names are 1-{_NAME_MAX} printable characters without edge spaces")
    return name


async def ensure_signing_keys(rt: Runtime) -> list[str]:
    """Create the token, audit and VAPID keys that do not exist yet; return new kids.

    Idempotent: the server runs it at start-up, so a data dir made by an older version
    gains the keys it lacks.
    """
    created = []
    for purpose in (PURPOSE_TOKEN, PURPOSE_AUDIT, PURPOSE_VAPID):
        if await rt.store.signing_keys(purpose):
            continue
        if purpose == PURPOSE_VAPID:
            record, _ = await new_vapid_key(rt.provider, utcnow())
        else:
            record, _ = await new_signing_key(rt.provider, purpose, utcnow())
        await rt.store.add_signing_key(record)
        await audit.record(
            rt,
            tenant=None,
            actor="operator",
            action="key.created",
            obj=f"signing-key:{record.kid}",
            purpose=purpose,
            algorithm=record.algorithm,
        )
        created.append(record.kid)
    await rt.reload_token_keys()
    await rt.load_audit_key()
    return created


def min_prepublication(rt: Runtime) -> float:
    """The shortest pre-publication a rotation may use, in seconds.

    Every node and every JWKS cache must know the new key before it signs: two reload
    intervals, and the JWKS max-age.
    """
    return max(2 * rt.settings.key_reload_interval, float(rt.settings.jwks_max_age))


async def rotate_token_key(
    rt: Runtime, *, prepublish: float | None = None, actor: str = "operator:cli"
) -> dict[str, object]:
    """Rotate the token-signing key with pre-publication (RFC 7517 key rollover).

    The new key is published in the JWKS at once and signs from ``now + prepublish``; every
    older key keeps verifying (and stays published) until the last token it can have signed
    has expired — ``activation + the longest token lifetime + leeway`` — and is then retired.
    """
    floor = min_prepublication(rt)
    wait = floor if prepublish is None else prepublish
    if wait < floor:
        raise BadRequest(
            f"pre-publication must be at least {floor:g} s (two key reloads and the JWKS "
            "max-age), so that every verifier knows the key before it signs"
        )
    now = utcnow()
    activates = now + timedelta(seconds=wait)
    record, _ = await new_signing_key(rt.provider, PURPOSE_TOKEN, now)
    record = dataclasses.replace(record, activates_at=activates)
    lifetime = max(limits.ACCESS_TOKEN_TTL_MAX, limits.SUBSCRIBER_TOKEN_TTL_MAX)
    retire = activates + timedelta(seconds=lifetime + limits.JWT_LEEWAY)
    older = [k for k in await rt.store.signing_keys(PURPOSE_TOKEN) if k.retired_at is None]
    await rt.store.add_signing_key(record)
    for key in older:
        await rt.store.schedule_key_retirement(key.kid, retire)
    await audit.record(
        rt,
        tenant=None,
        actor=actor,
        action="key.rotated",
        obj=f"signing-key:{record.kid}",
        purpose=PURPOSE_TOKEN,
        activates_at=activates.isoformat(),
        retires=[k.kid for k in older],
    )
    await rt.reload_token_keys()
    return {
        "kid": record.kid,
        "activates_at": activates.isoformat(),
        "retiring": [{"kid": k.kid, "retires_at": retire.isoformat()} for k in older],
    }


async def create_tenant(rt: Runtime, name: str, *, actor: str = "operator:cli") -> TenantRecord:
    """Create a tenant and its first data-encryption key (wrapped by the KEK)."""
    now = utcnow()
    tenant = TenantRecord(id=_new_id("tnt"), name=_check_name(name), created_at=now)
    wrapped = await wrap_new_data_key(rt.provider, tenant.id, 1, os.urandom)
    try:
        await rt.store.create_tenant(tenant, TenantKeyRecord(tenant.id, 1, wrapped, now))
    except IntegrityConflict:
        # Names are unique (the id is new): the name is taken, which the caller may know.
        raise Conflict(f"a tenant named {name!r} exists already") from None
    await audit.record(
        rt, tenant=tenant.id, actor=actor, action="tenant.created", obj=f"tenant:{tenant.id}"
    )
    return tenant


def tenant_view(tenant: TenantRecord) -> dict[str, object]:
    """What the admin API and the CLI show of a tenant."""
    return {
        "id": tenant.id,
        "name": tenant.name,
        "created_at": tenant.created_at.isoformat(),
        "shredded": tenant.shredded_at is not None,
    }


def app_view(app: AppRecord) -> dict[str, object]:
    """What the admin API and the CLI show of an app (never its secret or hash)."""
    return {
        "client_id": app.id,
        "tenant": app.tenant_id,
        "name": app.name,
        "scopes": " ".join(app.scopes),
        "disabled": app.disabled,
        "require_bound_tokens": app.require_bound_tokens,
        "created_at": app.created_at.isoformat(),
    }


@dataclass(frozen=True, slots=True)
class CreatedApp:
    """A new app and its client secret, which is shown once and never stored."""

    app: AppRecord
    client_secret: str


async def create_app(
    rt: Runtime, tenant_id: str, name: str, scopes: ScopeSet, *, actor: str = "operator:cli"
) -> CreatedApp:
    """Create an app of ``tenant_id`` with ``scopes``; the secret is returned once."""
    if await rt.store.get_tenant(tenant_id) is None:
        raise BadRequest(f"no tenant {tenant_id!r}")
    secret = new_client_secret()
    now = utcnow()
    app = AppRecord(
        id=_new_id("app"),
        tenant_id=tenant_id,
        name=_check_name(name),
        secret_hash=hash_secret(secret),
        scopes=tuple(str(scopes).split()),
        disabled=False,
        created_at=now,
    )
    await rt.store.create_app(app)
    await audit.record(
        rt,
        tenant=tenant_id,
        actor=actor,
        action="app.created",
        obj=f"app:{app.id}",
        scopes=str(scopes),
    )
    return CreatedApp(app, secret)


# A valid-looking hash to compare against when the client id is unknown, so that unknown
# and wrong-secret clients take the same time (no client-id enumeration by timing).
_DUMMY_HASH = hash_secret(secrets.token_urlsafe(32))


async def authenticate_client(rt: Runtime, client_id: str, client_secret: str) -> AppRecord:
    """``client_secret_basic`` (RFC 6749 §2.3.1); every failure is one InvalidClient."""
    app = await rt.store.get_app(client_id) if len(client_id) <= 128 else None
    expected = app.secret_hash if app is not None else _DUMMY_HASH
    ok = hmac.compare_digest(expected, hash_secret(client_secret))
    if app is None or not ok or app.disabled:
        rt.metrics.record_auth_failure("invalid_client")
        # The client id is what the caller claimed; no secret is ever recorded.
        await audit.record(
            rt,
            tenant=app.tenant_id if app is not None else None,
            actor=f"client:{client_id[:64]}",
            action="token.refused",
            obj=f"app:{client_id[:64]}",
            reason="disabled" if app is not None and ok else "invalid_client",
        )
        raise InvalidClient
    return app


async def issue_access_token(
    rt: Runtime,
    app: AppRecord,
    requested_scope: str | None,
    *,
    auth_method: str = "client_secret_basic",
    bound_to: str | None = None,
) -> dict[str, object]:
    """Issue an access token for an authenticated app (RFC 6749 §4.4.3, §5.1).

    ``auth_method`` (how the client authenticated) is noted in the audit entry only: the
    token is the same whichever method was used. ``bound_to`` is the ``x5t#S256`` thumbprint
    of the client certificate the token request came with, if any: the token is then
    certificate-bound (RFC 8705 §3).
    """
    if app.require_bound_tokens and bound_to is None:
        await audit.record(
            rt,
            tenant=app.tenant_id,
            actor=f"app:{app.id}",
            action="token.refused",
            obj=f"app:{app.id}",
            reason="certificate_required",
        )
        raise BadRequest(
            "this app gets tokens only over mutual TLS, bound to its client certificate "
            "(RFC 8705): present the certificate to a server with HERALD_TLS_CLIENT_CA_FILE",
            extra={"error": "invalid_request"},
        )
    granted = ScopeSet.parse(" ".join(app.scopes))
    scopes = granted.narrow(ScopeSet.parse(requested_scope)) if requested_scope else granted
    token, expires_in = rt.token_service().issue_access(
        tenant_id=app.tenant_id,
        client_id=app.id,
        scopes=scopes,
        ttl=rt.settings.access_token_ttl,
        bound_to=bound_to,
    )
    rt.metrics.record_token("access")
    # The thumbprint is public (a hash of a certificate): recorded so a bound token can be
    # traced to the certificate it needs.
    binding = {"cnf_x5t_s256": bound_to} if bound_to is not None else {}
    await audit.record(
        rt,
        tenant=app.tenant_id,
        actor=f"app:{app.id}",
        action="token.issued",
        obj=f"app:{app.id}",
        scope=str(scopes),
        expires_in=expires_in,
        method=auth_method,
        **binding,
    )
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": str(scopes),
    }
