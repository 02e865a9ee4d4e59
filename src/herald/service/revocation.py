"""Token revocation (RFC 7009) and the live-credential check every token passes.

A token is refused when its ``jti`` was revoked (``POST /oauth/revoke``), when its app is
disabled, or when it was issued at or before the app's ``tokens_not_before`` (set when the
app is disabled or its secret rotated): live tokens die with the credential that got them.

State lives in the database, so it holds across restarts and nodes. Each node caches what
it read for a second (:mod:`herald.state.live`), so a revocation takes effect everywhere
within that time without a database read per request.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from herald.core.scopes import ScopeSet
from herald.crypto.tokens import AccessClaims, OperatorClaims, SubscriberClaims
from herald.errors import Forbidden, IntegrityConflict, InvalidToken, NotFound
from herald.service import audit
from herald.service.identity import hash_secret, new_client_secret
from herald.service.runtime import Runtime, utcnow
from herald.storage.base import AppRecord

__all__ = [
    "disable_app",
    "ensure_live",
    "require_bound_tokens",
    "revoke",
    "rotate_secret",
    "set_scopes",
]


async def ensure_live(
    rt: Runtime, claims: AccessClaims | SubscriberClaims | OperatorClaims
) -> None:
    """401 ``invalid-token`` for a revoked token, or one of a disabled or re-keyed holder."""
    if isinstance(claims, OperatorClaims):
        missing, not_before = await rt.live.operator_state(claims.operator_id)
    else:
        missing, not_before = await rt.live.app_state(claims.client_id)
    # Whole seconds: a token issued in the very second of the change is refused too.
    stale = not_before is not None and claims.issued_at <= int(not_before)
    if missing or stale or await rt.live.revoked(claims.jti):
        rt.metrics.record_auth_failure("revoked_token")
        raise InvalidToken("the token was revoked, or its app disabled or re-keyed")


async def revoke(rt: Runtime, app: AppRecord, token: str) -> None:
    """RFC 7009 §2.1: revoke one of ``app``'s tokens (access or subscriber).

    A token that does not verify (expired, garbage, not ours) needs no revocation and is
    answered like a success (§2.2); a valid token of another app is refused.
    """
    tokens = rt.token_service()
    claims: AccessClaims | SubscriberClaims
    try:
        if tokens.kind_of(token) == "subscriber":
            claims = await rt.verify_subscriber(token)
        else:
            claims = await rt.verify_access(token)
    except InvalidToken:
        return
    if claims.client_id != app.id:
        raise Forbidden(
            "a client may revoke only its own tokens", extra={"error": "invalid_request"}
        )
    expires_at = datetime.fromtimestamp(claims.expires_at, UTC)
    with contextlib.suppress(IntegrityConflict):  # revoked concurrently: the same outcome
        await rt.store.revoke_token(claims.jti, app.id, expires_at, utcnow())
    rt.live.forget(jti=claims.jti)
    await audit.record(
        rt,
        tenant=app.tenant_id,
        actor=f"app:{app.id}",
        action="token.revoked",
        obj=f"app:{app.id}",
        jti=claims.jti,
    )


async def _app(rt: Runtime, app_id: str) -> AppRecord:
    app = await rt.store.get_app(app_id)
    if app is None:
        raise NotFound(f"no app {app_id[:64]!r}")
    return app


async def disable_app(rt: Runtime, app_id: str, *, disabled: bool, actor: str) -> AppRecord:
    """Disable an app (its live tokens are refused from now) or enable it again."""
    app = await _app(rt, app_id)
    await rt.store.set_app_disabled(app_id, disabled, utcnow())
    rt.live.forget(app_id=app_id)
    await audit.record(
        rt,
        tenant=app.tenant_id,
        actor=actor,
        action="app.disabled" if disabled else "app.enabled",
        obj=f"app:{app_id}",
    )
    return await _app(rt, app_id)


async def set_scopes(rt: Runtime, app_id: str, scopes: ScopeSet, *, actor: str) -> AppRecord:
    """Replace an app's scopes; its live tokens die.

    They carry the scopes they were issued with: a narrowed app must not keep its old reach
    until they expire.
    """
    app = await _app(rt, app_id)
    await rt.store.set_app_scopes(app_id, tuple(str(scopes).split()), utcnow())
    rt.live.forget(app_id=app_id)
    await audit.record(
        rt,
        tenant=app.tenant_id,
        actor=actor,
        action="app.scopes_changed",
        obj=f"app:{app_id}",
        scopes=str(scopes),
        previous=" ".join(app.scopes),
    )
    return await _app(rt, app_id)


async def require_bound_tokens(
    rt: Runtime, app_id: str, *, required: bool, actor: str
) -> AppRecord:
    """Require certificate-bound tokens of an app (RFC 8705), or stop requiring them.

    Requiring them kills the app's live tokens (some may be unbound); from then on the token
    endpoint issues tokens only over mutual TLS.
    """
    app = await _app(rt, app_id)
    await rt.store.set_app_requires_bound_tokens(app_id, required, utcnow())
    rt.live.forget(app_id=app_id)
    await audit.record(
        rt,
        tenant=app.tenant_id,
        actor=actor,
        action="app.bound_tokens_required" if required else "app.bound_tokens_optional",
        obj=f"app:{app_id}",
    )
    return await _app(rt, app_id)


async def rotate_secret(rt: Runtime, app_id: str, *, actor: str) -> str:
    """A new client secret (shown once); tokens issued with the old one are refused."""
    app = await _app(rt, app_id)
    secret = new_client_secret()
    await rt.store.replace_app_secret(app_id, hash_secret(secret), utcnow())
    rt.live.forget(app_id=app_id)
    await audit.record(
        rt, tenant=app.tenant_id, actor=actor, action="app.secret_rotated", obj=f"app:{app_id}"
    )
    return secret
