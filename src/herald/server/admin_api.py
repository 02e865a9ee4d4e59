"""The operator API under ``/v1/admin``: sign-in, tenants, apps, keys and scopes.

Apps' request-signing keys and scopes, and tenants' data keys (rotation with re-encryption
in the background) are managed here too; what operators watch is in
:mod:`herald.server.monitor_api`.

Operators sign in with a name and password (``POST /v1/admin/login``) and use the operator
token as a bearer token. Every route asks :func:`herald.core.policy.authorize`; every change
is an audit event naming the operator. Operators do not sign requests (they hold no app
key): their tokens are short-lived, bound to their audience, revocable (logout) and die when
the operator is disabled or its password changed.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald.core.messages import decode_json
from herald.core.policy import Action, Principal, Resource, allowed, authorize
from herald.core.scopes import ScopeSet
from herald.errors import BadRequest, NotFound
from herald.server.api import runtime
from herald.server.auth import authenticate, operator_claims
from herald.server.monitor_api import monitor_routes, path_tenant
from herald.server.requests import read_body, require_json
from herald.server.responses import json_response
from herald.service import identity, keys, operators, revocation, signatures
from herald.service.runtime import Runtime
from herald.storage.base import AppRecord

__all__ = ["admin_routes"]

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_BODY_MAX = 4096


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/admin/login``."""

    name: str
    password: str


class TenantRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/admin/tenants``."""

    name: str


class AppRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/admin/tenants/{tenant}/apps``."""

    scopes: list[str]
    name: str = "app"


class ScopesRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``PUT /v1/admin/apps/{client_id}/scopes``."""

    scopes: list[str]


class KeyRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/admin/apps/{client_id}/keys``: register an Ed25519 key or create HMAC."""

    algorithm: Literal["ed25519", "hmac-sha256"]
    public_key: str | None = None


async def login(request: Request) -> Response:
    """``POST /v1/admin/login``: name + password → a short-lived operator token."""
    rt = runtime(request)
    raw = await read_body(request, _BODY_MAX)
    require_json(request)
    req = decode_json(raw, LoginRequest)
    address = request.client.host if request.client is not None else None
    body = await operators.login(rt, req.name, req.password, address)
    return json_response(body, headers=_NO_STORE)


async def logout(request: Request) -> Response:
    """``POST /v1/admin/logout``: revoke the operator token presented."""
    rt = runtime(request)
    claims = await operator_claims(request)
    await operators.logout(rt, claims)
    return json_response({}, headers=_NO_STORE)


def _tenant_resource(tenant_id: str) -> Resource:
    return Resource(tenant_id, name=f"tenant {tenant_id[:64]}")


async def list_tenants(request: Request) -> Response:
    """``GET /v1/admin/tenants``: every tenant the operator administers."""
    rt = runtime(request)
    principal = await authenticate(request, Action.TENANT_READ)
    tenants = [
        identity.tenant_view(t)
        for t in await rt.store.list_tenants()
        if allowed(principal, Action.TENANT_READ, _tenant_resource(t.id))
    ]
    return json_response({"tenants": tenants})


async def create_tenant(request: Request) -> Response:
    """``POST /v1/admin/tenants`` (global operators): a new tenant and its data key."""
    rt = runtime(request)
    principal = await authenticate(request, Action.TENANT_CREATE)
    authorize(principal, Action.TENANT_CREATE, Resource(None))
    raw = await read_body(request, _BODY_MAX)
    require_json(request)
    req = decode_json(raw, TenantRequest)
    tenant = await identity.create_tenant(rt, req.name, actor=principal.actor)
    return json_response(identity.tenant_view(tenant), 201)


async def list_apps(request: Request) -> Response:
    """``GET /v1/admin/tenants/{tenant}/apps``."""
    rt, _, tenant = await path_tenant(request, Action.APP_READ)
    apps = [identity.app_view(a) for a in await rt.store.list_apps(tenant)]
    return json_response({"apps": apps})


async def create_app(request: Request) -> Response:
    """``POST /v1/admin/tenants/{tenant}/apps``: the client secret is shown once."""
    rt, principal, tenant = await path_tenant(request, Action.APP_CREATE)
    raw = await read_body(request, _BODY_MAX)
    require_json(request)
    req = decode_json(raw, AppRequest)
    scopes = ScopeSet.from_iter(req.scopes)
    created = await identity.create_app(rt, tenant, req.name, scopes, actor=principal.actor)
    body: dict[str, Any] = identity.app_view(created.app) | {"client_secret": created.client_secret}
    return json_response(body, 201, _NO_STORE)


async def _app_for(
    request: Request, action: Action = Action.APP_UPDATE
) -> tuple[Runtime, Principal, AppRecord]:
    rt = runtime(request)
    principal = await authenticate(request, action)
    client_id = request.path_params["client_id"]
    name = f"app {client_id[:64]}"
    app = await rt.store.get_app(client_id) if len(client_id) <= 128 else None
    if app is None:
        raise NotFound(f"no {name}")
    authorize(principal, action, Resource(app.tenant_id, name=name))
    return rt, principal, app


async def disable_app(request: Request) -> Response:
    """``POST /v1/admin/apps/{client_id}:disable``: its live tokens die at once."""
    rt, principal, app = await _app_for(request)
    updated = await revocation.disable_app(rt, app.id, disabled=True, actor=principal.actor)
    return json_response(identity.app_view(updated))


async def enable_app(request: Request) -> Response:
    """``POST /v1/admin/apps/{client_id}:enable``."""
    rt, principal, app = await _app_for(request)
    updated = await revocation.disable_app(rt, app.id, disabled=False, actor=principal.actor)
    return json_response(identity.app_view(updated))


async def rotate_app_secret(request: Request) -> Response:
    """``POST /v1/admin/apps/{client_id}:rotate-secret``: a new secret, shown once."""
    rt, principal, app = await _app_for(request)
    secret = await revocation.rotate_secret(rt, app.id, actor=principal.actor)
    return json_response({"client_id": app.id, "client_secret": secret}, headers=_NO_STORE)


async def set_scopes(request: Request) -> Response:
    """``PUT /v1/admin/apps/{client_id}/scopes``: the app's live tokens die (old scopes)."""
    rt, principal, app = await _app_for(request)
    raw = await read_body(request, _BODY_MAX)
    require_json(request)
    req = decode_json(raw, ScopesRequest)
    scopes = ScopeSet.from_iter(req.scopes)
    updated = await revocation.set_scopes(rt, app.id, scopes, actor=principal.actor)
    return json_response(identity.app_view(updated))


async def list_keys(request: Request) -> Response:
    """``GET /v1/admin/apps/{client_id}/keys``: request-signing keys, revoked ones too."""
    rt, _, app = await _app_for(request, Action.APP_READ)
    keys = await signatures.list_keys(rt, app.id)
    return json_response({"keys": [signatures.key_view(k) for k in keys]})


async def add_key(request: Request) -> Response:
    """``POST /v1/admin/apps/{client_id}/keys``: an HMAC secret is shown once."""
    rt, principal, app = await _app_for(request)
    raw = await read_body(request, _BODY_MAX)
    require_json(request)
    req = decode_json(raw, KeyRequest)
    if req.algorithm == signatures.ALG_ED25519:
        if req.public_key is None:
            raise BadRequest("an Ed25519 key needs public_key (PEM)")
        public = signatures.parse_ed25519_public_key(req.public_key.encode("utf-8"))
        new = await signatures.add_ed25519_key(rt, app.id, public, actor=principal.actor)
    else:
        if req.public_key is not None:
            raise BadRequest("an HMAC key is generated here; send no public_key")
        new = await signatures.add_hmac_key(rt, app.id, actor=principal.actor)
    body = signatures.key_view(new.record)
    if new.secret is not None:
        body["secret"] = new.secret
    return json_response(body, 201, _NO_STORE)


async def revoke_key(request: Request) -> Response:
    """``POST /v1/admin/apps/{client_id}/keys/{keyid}:revoke``."""
    rt, principal, app = await _app_for(request)
    keyid = request.path_params["keyid"][:128]
    record = await signatures.revoke_key(rt, app.id, keyid, actor=principal.actor)
    return json_response(signatures.key_view(record))


async def data_key(request: Request) -> Response:
    """``GET /v1/admin/tenants/{tenant}/data-key``: versions and re-encryption progress."""
    rt, _, tenant = await path_tenant(request, Action.TENANT_READ)
    return json_response(await keys.data_key_status(rt, tenant))


async def rotate_data_key(request: Request) -> Response:
    """``POST /v1/admin/tenants/{tenant}/data-key:rotate``: new version, re-encrypt behind."""
    rt, principal, tenant = await path_tenant(request, Action.TENANT_KEY_ROTATE)
    await keys.rotate_and_reencrypt(rt, tenant, actor=principal.actor)
    return json_response(await keys.data_key_status(rt, tenant), 202)


def admin_routes() -> list[Route]:
    """The operator routes."""
    return [
        Route("/v1/admin/login", login, methods=["POST"]),
        Route("/v1/admin/logout", logout, methods=["POST"]),
        Route("/v1/admin/tenants", list_tenants, methods=["GET"]),
        Route("/v1/admin/tenants", create_tenant, methods=["POST"]),
        Route("/v1/admin/tenants/{tenant}/apps", list_apps, methods=["GET"]),
        Route("/v1/admin/tenants/{tenant}/apps", create_app, methods=["POST"]),
        Route("/v1/admin/apps/{client_id}:disable", disable_app, methods=["POST"]),
        Route("/v1/admin/apps/{client_id}:enable", enable_app, methods=["POST"]),
        Route("/v1/admin/apps/{client_id}:rotate-secret", rotate_app_secret, methods=["POST"]),
        Route("/v1/admin/apps/{client_id}/scopes", set_scopes, methods=["PUT"]),
        Route("/v1/admin/apps/{client_id}/keys", list_keys, methods=["GET"]),
        Route("/v1/admin/apps/{client_id}/keys", add_key, methods=["POST"]),
        Route("/v1/admin/apps/{client_id}/keys/{keyid}:revoke", revoke_key, methods=["POST"]),
        Route("/v1/admin/tenants/{tenant}/data-key", data_key, methods=["GET"]),
        Route("/v1/admin/tenants/{tenant}/data-key:rotate", rotate_data_key, methods=["POST"]),
        *monitor_routes(),
    ]
