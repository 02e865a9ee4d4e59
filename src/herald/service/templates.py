"""Templates per tenant (DESIGN §7): versioned, checked at save, rendered in the sandbox.

``PUT /v1/templates/{name}`` stores a new version (versions are never changed, so a
message keeps rendering as it was published). A spec that reaches outside the sandbox,
includes other templates or does not parse is refused then, with the variant, field and
line named (:mod:`herald.core.templates`). Compiled versions are cached per node.
"""

from __future__ import annotations

from typing import Any

import msgspec

from herald.core.messages import TEMPLATE_NAME_RE, TemplateRef, decode_json
from herald.core.templates import (
    CompiledTemplate,
    Rendered,
    TemplateSpec,
    compile_template,
)
from herald.errors import BadRequest, IntegrityConflict, NotFound
from herald.service import audit
from herald.service.runtime import Runtime, utcnow
from herald.storage.base import TemplateRecord

__all__ = [
    "get_template",
    "list_templates",
    "load_template",
    "put_template",
    "render_message",
]


def _check_name(name: str) -> str:
    if not TEMPLATE_NAME_RE.match(name):
        raise BadRequest("template names are lower-case letters, digits, '.', '_' or '-'")
    return name


def _view(record: TemplateRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "version": record.version,
        "created_at": record.created_at.isoformat().replace("+00:00", "Z"),
        "created_by": record.created_by,
        **msgspec.json.decode(record.spec.encode("utf-8")),
    }


async def put_template(
    rt: Runtime, tenant_id: str, name: str, raw: bytes, *, actor: str
) -> dict[str, Any]:
    """Validate a spec and store it as the template's next version; returns the view."""
    _check_name(name)
    spec = decode_json(raw, TemplateSpec)
    compiled = compile_template(spec)  # refuses what reaches outside the sandbox
    record = TemplateRecord(
        tenant_id=tenant_id,
        name=name,
        version=0,
        spec=msgspec.json.encode(spec).decode("utf-8"),
        created_at=utcnow(),
        created_by=actor,
    )
    try:
        stored = await rt.store.add_template(record)
    except IntegrityConflict:
        stored = await rt.store.add_template(record)  # a concurrent save took our number
    rt.templates.put((tenant_id, name, stored.version), compiled)
    await audit.record(
        rt,
        tenant=tenant_id,
        actor=actor,
        action="template.saved",
        obj=f"template:{name}",
        version=stored.version,
    )
    return _view(stored)


async def get_template(
    rt: Runtime, tenant_id: str, name: str, version: int | None
) -> dict[str, Any]:
    """One version of a template (the newest by default)."""
    record = await rt.store.get_template(tenant_id, _check_name(name), version)
    if record is None:
        raise NotFound(f"no template {name!r}" + (f" version {version}" if version else ""))
    return _view(record)


async def list_templates(rt: Runtime, tenant_id: str) -> dict[str, Any]:
    """The newest version of every template of the tenant."""
    records = await rt.store.list_templates(tenant_id)
    return {
        "templates": [
            {"name": r.name, "version": r.version, "created_at": _view(r)["created_at"]}
            for r in records
        ]
    }


async def load_template(
    rt: Runtime, tenant_id: str, name: str, version: int | None
) -> tuple[int, CompiledTemplate]:
    """The compiled version (newest when None) and its number; 422 when it does not exist."""
    if version is not None:
        cached = rt.templates.get((tenant_id, name, version))
        if cached is not None:
            return version, cached
    record = await rt.store.get_template(tenant_id, name, version)
    if record is None:
        raise BadRequest(
            f"no template {name!r}" + (f" version {version}" if version else ""),
            slug="unknown-template",
        )
    key = (tenant_id, name, record.version)
    compiled = rt.templates.get(key)
    if compiled is None:
        spec = msgspec.json.decode(record.spec.encode("utf-8"), type=TemplateSpec)
        compiled = compile_template(spec)
        rt.templates.put(key, compiled)
    return record.version, compiled


async def render_message(
    rt: Runtime, tenant_id: str, ref: dict[str, Any], channel: str, locale: str | None
) -> Rendered:
    """Render a stored message's template reference for one channel and locale."""
    pinned = msgspec.convert(ref, type=TemplateRef)
    _, compiled = await load_template(rt, tenant_id, pinned.name, pinned.version)
    return compiled.render(channel, locale or pinned.locale, pinned.variables or {})
