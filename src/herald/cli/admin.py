"""Administrative commands: they act on the configured database and data dir directly."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from herald.cli.output import console, emit, fail
from herald.config import Settings, load_settings
from herald.core.scopes import ScopeSet
from herald.crypto.masterkey import generate_master_key_file
from herald.crypto.tls import write_dev_tls
from herald.errors import ConfigError, HeraldError
from herald.service import identity
from herald.service.runtime import Runtime

__all__ = ["app_cli", "init", "profile_path", "tenant_cli"]

_T = TypeVar("_T")

DEMO_SCOPES = "publish:> subscribe:> messages:read"

tenant_cli = typer.Typer(help="Manage tenants.", no_args_is_help=True)
app_cli = typer.Typer(help="Manage apps (publishing services).", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def profile_path(settings: Settings) -> Path:
    """The CLI profile written by ``herald init`` (URL, demo credentials, CA), mode 0600."""
    return settings.data_dir / "cli.json"


def _run(settings: Settings, work: Callable[[Runtime], Awaitable[_T]]) -> _T:
    async def main() -> _T:
        rt = await Runtime.open(settings)
        try:
            return await work(rt)
        finally:
            await rt.close()

    return asyncio.run(main())


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _hostnames(settings: Settings) -> list[str]:
    names = ["localhost", "127.0.0.1", "::1"]
    if settings.host not in names and settings.host not in {"0.0.0.0", "::"}:  # noqa: S104
        names.append(settings.host)
    return names


def init_data_dir(settings: Settings) -> dict[str, Any]:
    """Create the data dir, TLS material, master key, schema, signing keys and demo app."""
    data_dir = settings.data_dir
    if settings.master_key_file.exists() or (data_dir / "tls").exists():
        raise ConfigError(
            f"{data_dir} is already initialised; remove it to start over "
            "(this destroys its keys and data)"
        )
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    tls = write_dev_tls(data_dir / "tls", _hostnames(settings), now=datetime.now(UTC))
    if settings.master_key is None:
        generate_master_key_file(settings.master_key_file)

    async def bootstrap(rt: Runtime) -> dict[str, Any]:
        await identity.ensure_signing_keys(rt)
        tenant = await identity.create_tenant(rt, "demo")
        created = await identity.create_app(rt, tenant.id, "demo", ScopeSet.parse(DEMO_SCOPES))
        return {
            "tenant": tenant.id,
            "client_id": created.app.id,
            "client_secret": created.client_secret,
            "scopes": DEMO_SCOPES,
            "ca_cert": str(tls.ca_cert.resolve()),
            "url": settings.base_url,
        }

    result = _run(settings, bootstrap)
    _write_private(
        profile_path(settings),
        json.dumps(
            {k: result[k] for k in ("url", "client_id", "client_secret", "ca_cert")}, indent=2
        ),
    )
    return result


def init(as_json: JsonOpt = False) -> None:
    """Create the data directory: dev CA and certificate, master key, keys, a demo app."""
    settings = load_settings()
    result = init_data_dir(settings)
    if as_json:
        emit(result, as_json=True)
        return
    console.print(f"[green]Initialised[/green] {settings.data_dir.resolve()}")
    console.print(f"  URL            {result['url']}")
    console.print(f"  CA certificate {result['ca_cert']}")
    console.print(f"  tenant         {result['tenant']}")
    console.print(f"  client id      {result['client_id']}")
    console.print(f"  client secret  {result['client_secret']}  [dim](shown once)[/dim]")
    console.print(
        f"  The CLI reads these from {profile_path(settings)} (mode 0600); "
        "other clients pass --client-id/--client-secret or HERALD_CLIENT_ID/HERALD_CLIENT_SECRET."
    )


@tenant_cli.command("create")
def tenant_create(name: str, as_json: JsonOpt = False) -> None:
    """Create a tenant."""
    settings = load_settings()

    async def work(rt: Runtime) -> dict[str, Any]:
        tenant = await identity.create_tenant(rt, name)
        return {"tenant": tenant.id, "name": tenant.name}

    emit(_run(settings, work), as_json=as_json)


@app_cli.command("create")
def app_create(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id.")],
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="A scope; repeat for more.")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="A name for people.")] = "app",
    as_json: JsonOpt = False,
) -> None:
    """Create an app; its client secret is printed once."""
    settings = load_settings()
    try:
        scopes = ScopeSet.parse(" ".join(scope or ["publish:>"]))
    except HeraldError as exc:
        fail(str(exc))

    async def work(rt: Runtime) -> dict[str, Any]:
        created = await identity.create_app(rt, tenant, name, scopes)
        return {
            "tenant": tenant,
            "client_id": created.app.id,
            "client_secret": created.client_secret,
            "scopes": str(scopes),
        }

    emit(_run(settings, work), as_json=as_json)
