"""Audit log routes: checkpoints, entries, inclusion and consistency proofs, verifier key.

Every route needs a token: an app's access token, a subscriber token (so that a receiving
device can check its receipts), or an operator token. Callers of a tenant see and prove
their own tenant's entries; a global operator sees every entry, including those of no
tenant (server keys, global operators). The decision is the policy's ``audit.read``.
Checkpoints and consistency proofs concern the whole log and reveal only hashes.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from herald.core.policy import Action, Principal, Resource, allowed, authorize
from herald.errors import BadRequest, NotFound
from herald.server.api import runtime
from herald.server.auth import authenticate
from herald.server.responses import json_response

__all__ = ["audit_routes"]

#: Entries served per page.
_PAGE = 1000


async def _viewer(request: Request) -> Principal:
    """The caller, allowed to read the log at all (its own tenant's part of it)."""
    principal = await authenticate(request, Action.AUDIT_READ)
    authorize(principal, Action.AUDIT_READ, Resource(principal.tenant_id))
    return principal


def _int_param(request: Request, name: str, default: int | None = None) -> int:
    text = request.query_params.get(name)
    if text is None:
        if default is None:
            raise BadRequest(f"query parameter {name} is required")
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise BadRequest(f"{name} must be a non-negative integer")
    return int(text)


def _entry_tenant(entry: bytes) -> str | None:
    tenant = msgspec.json.decode(entry).get("tenant")
    return tenant if isinstance(tenant, str) else None


async def checkpoint(request: Request) -> Response:
    """``GET /v1/audit/checkpoint``: the latest signed checkpoint."""
    rt = runtime(request)
    await _viewer(request)
    latest = await rt.store.latest_checkpoint()
    if latest is None:
        raise NotFound("no checkpoint has been signed yet")
    return json_response(
        {
            "origin": rt.audit_log().origin,
            "size": latest.size,
            "root": base64.b64encode(latest.root).decode("ascii"),
            "note": latest.note,
        }
    )


async def entries(request: Request) -> Response:
    """``GET /v1/audit/entries?from=&to=``: entries (canonical JSON text) of a range."""
    rt = runtime(request)
    principal = await _viewer(request)
    start = _int_param(request, "from", 0)
    end = min(_int_param(request, "to", start + _PAGE), start + _PAGE)
    if end < start:
        raise BadRequest("to must not be below from")
    items: list[dict[str, Any]] = []
    for record in await rt.store.audit_entries(start, end):
        if allowed(principal, Action.AUDIT_READ, Resource(_entry_tenant(record.entry))):
            items.append(
                {
                    "index": record.index,
                    "entry": record.entry.decode("utf-8"),
                    "leaf_hash": record.leaf_hash.hex(),
                }
            )
    size = await rt.store.audit_size()
    return json_response({"entries": items, "size": size, "next": end if end < size else None})


async def inclusion(request: Request) -> Response:
    """``GET /v1/audit/proof/inclusion?index=&size=`` (RFC 9162 §2.1.3)."""
    rt = runtime(request)
    principal = await _viewer(request)
    index = _int_param(request, "index")
    size = _int_param(request, "size", await rt.store.audit_size())
    found = await rt.store.audit_entries(index, index + 1)
    name = f"audit entry {index} for this tenant"
    if not found:
        raise NotFound(f"no {name}")
    authorize(principal, Action.AUDIT_READ, Resource(_entry_tenant(found[0].entry), name=name))
    proof = await rt.audit_log().inclusion(index, size)
    return json_response(
        {
            "index": index,
            "size": size,
            "leaf_hash": found[0].leaf_hash.hex(),
            "proof": [p.hex() for p in proof],
        }
    )


async def consistency(request: Request) -> Response:
    """``GET /v1/audit/proof/consistency?first=&second=`` (RFC 9162 §2.1.4)."""
    rt = runtime(request)
    await _viewer(request)
    first, second = _int_param(request, "first"), _int_param(request, "second")
    proof = await rt.audit_log().consistency(first, second)
    return json_response({"first": first, "second": second, "proof": [p.hex() for p in proof]})


async def audit_key(request: Request) -> Response:
    """``GET /.well-known/herald-audit-key``: the signed-note verifier key (text)."""
    rt = runtime(request)
    return PlainTextResponse(
        rt.audit_log().verifier_key() + "\n", headers={"Cache-Control": "max-age=300"}
    )


def audit_routes() -> list[Route]:
    """The audit routes."""
    return [
        Route("/v1/audit/checkpoint", checkpoint, methods=["GET"]),
        Route("/v1/audit/entries", entries, methods=["GET"]),
        Route("/v1/audit/proof/inclusion", inclusion, methods=["GET"]),
        Route("/v1/audit/proof/consistency", consistency, methods=["GET"]),
        Route("/.well-known/herald-audit-key", audit_key, methods=["GET"]),
    ]
