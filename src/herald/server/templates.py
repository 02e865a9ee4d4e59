"""Template routes: save a version, read, list, and preview a rendering."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald import limits
from herald.core.messages import decode_json
from herald.core.policy import Action
from herald.errors import BadRequest
from herald.server.api import app_allowed, runtime, verify_signature
from herald.server.requests import read_body, require_json
from herald.server.responses import json_response
from herald.service import templates

__all__ = ["template_routes"]


class PreviewRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/templates/{name}:render``: what a channel would show, without sending."""

    channel: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] = "*"
    locale: Annotated[str, msgspec.Meta(min_length=2, max_length=35)] | None = None
    version: Annotated[int, msgspec.Meta(ge=1, le=limits.TEMPLATE_VERSION_MAX)] | None = None
    variables: dict[str, Any] | None = None


def _version(request: Request) -> int | None:
    text = request.query_params.get("version")
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= limits.TEMPLATE_VERSION_MAX:
        raise BadRequest("version must be a positive integer")
    return int(text)


async def _may_read(request: Request) -> tuple[str, str]:
    claims = await app_allowed(request, Action.TEMPLATE_READ)
    return claims.tenant_id, claims.client_id


async def put_template(request: Request) -> Response:
    """``PUT /v1/templates/{name}`` (``admin``, signed): a new version; 201."""
    rt = runtime(request)
    claims = await app_allowed(request, Action.TEMPLATE_WRITE)
    raw = await read_body(request, rt.settings.max_body_bytes)
    await verify_signature(request, raw, tenant_id=claims.tenant_id, app_id=claims.client_id)
    require_json(request)
    view = await templates.put_template(
        rt, claims.tenant_id, request.path_params["name"], raw, actor=f"app:{claims.client_id}"
    )
    return json_response(view, 201)


async def get_template(request: Request) -> Response:
    """``GET /v1/templates/{name}?version=`` (newest by default)."""
    tenant_id, _ = await _may_read(request)
    view = await templates.get_template(
        runtime(request), tenant_id, request.path_params["name"], _version(request)
    )
    return json_response(view)


async def list_templates(request: Request) -> Response:
    """``GET /v1/templates``: the newest version of each."""
    tenant_id, _ = await _may_read(request)
    return json_response(await templates.list_templates(runtime(request), tenant_id))


async def preview_template(request: Request) -> Response:
    """``POST /v1/templates/{name}:render``: render one variant with sample variables."""
    rt = runtime(request)
    tenant_id, _ = await _may_read(request)
    raw = await read_body(request, rt.settings.max_body_bytes)
    require_json(request)
    req = decode_json(raw, PreviewRequest)
    version, compiled = await templates.load_template(
        rt, tenant_id, request.path_params["name"], req.version
    )
    shown = compiled.render(req.channel, req.locale, req.variables or {})
    return json_response(
        {
            "version": version,
            "channel": shown.channel,
            "locale": shown.locale,
            "title": shown.title,
            "body": shown.body,
            "html": shown.html,
        }
    )


def template_routes() -> list[Route]:
    """The template routes."""
    return [
        Route("/v1/templates", list_templates, methods=["GET"]),
        Route("/v1/templates/{name}", put_template, methods=["PUT"]),
        Route("/v1/templates/{name}", get_template, methods=["GET"]),
        Route("/v1/templates/{name}:render", preview_template, methods=["POST"]),
    ]
