"""``herald keys …`` and ``herald tenant shred``: key management on the configured database."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from herald.cli.admin import JsonOpt, _run, tenant_cli
from herald.cli.output import console, emit, fail
from herald.config import Settings, load_settings
from herald.crypto.masterkey import LocalKeyProvider, generate_master_key_file, load_master_key
from herald.crypto.providers import KekRouter, master_key_files
from herald.service import identity, keys
from herald.service.runtime import Runtime

__all__ = ["keys_cli"]

keys_cli = typer.Typer(help="Data keys, re-encryption and KEK rotation.", no_args_is_help=True)
TenantOpt = Annotated[str, typer.Option("--tenant", help="Tenant id.")]


@keys_cli.command("rotate")
def rotate(tenant: TenantOpt, as_json: JsonOpt = False) -> None:
    """Create a new data-key version for a tenant; new writes use it."""
    settings = load_settings()

    async def work(rt: Runtime) -> dict[str, Any]:
        return {"tenant": tenant, "version": await keys.rotate_data_key(rt, tenant)}

    result = _run(settings, work)
    emit(
        result,
        as_json=as_json,
        human=f"tenant {tenant}: data key version {result['version']} is now current "
        f"(running servers switch within {settings.key_cache_ttl:g} s); "
        f"run `herald keys reencrypt --tenant {tenant}` to move stored content",
    )


@keys_cli.command("rotate-signing")
def rotate_signing(
    prepublish: Annotated[
        float | None,
        typer.Option(
            "--prepublish",
            min=0,
            help="Seconds the new key is published before it signs "
            "(default and minimum: two key reloads and the JWKS max-age).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Rotate the token-signing key: pre-publish the next, retire the old after its tokens."""
    settings = load_settings()

    async def work(rt: Runtime) -> dict[str, Any]:
        return await identity.rotate_token_key(rt, prepublish=prepublish)

    result = _run(settings, work)
    retiring = ", ".join(f"{r['kid']} at {r['retires_at']}" for r in result["retiring"])
    emit(
        result,
        as_json=as_json,
        human=f"token key {result['kid']} is published now and signs from "
        f"{result['activates_at']}; retiring: {retiring or 'none'}",
    )


@keys_cli.command("reencrypt")
def reencrypt(
    tenant: TenantOpt,
    batch: Annotated[int, typer.Option("--batch", min=1, max=10_000)] = 500,
    as_json: JsonOpt = False,
) -> None:
    """Move a tenant's stored content to the current data key (resumable, online)."""
    settings = load_settings()

    async def work(rt: Runtime) -> keys.ReencryptResult:
        if as_json:
            return await keys.reencrypt(rt, tenant, batch=batch)
        with Progress(
            TextColumn("re-encrypting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task("rows", total=None)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            return await keys.reencrypt(rt, tenant, batch=batch, progress=update)

    result = _run(settings, work)
    data = {
        "tenant": tenant,
        "version": result.target,
        "scanned": result.scanned,
        "reencrypted": result.changed,
        "total": result.total,
    }
    emit(
        data,
        as_json=as_json,
        human=f"tenant {tenant}: {result.changed} values moved to key version {result.target} "
        f"({result.scanned} rows scanned)",
    )


def _local_rotation(settings: Settings, finish: bool) -> dict[str, Any]:
    current_file, next_file, previous_file = master_key_files(settings)
    if finish:
        if not previous_file.exists():
            fail("no KEK rotation to finish")

        async def straggle(rt: Runtime) -> int:
            return await keys.rotate_kek(rt, rt.provider)

        changed = _run(settings, straggle)
        _destroy(previous_file)
        return {"kek": "local", "rewrapped": changed, "previous_destroyed": True}
    if previous_file.exists() and not next_file.exists():
        fail("a KEK rotation awaits `herald keys rotate-kek --finish`")
    if not next_file.exists():
        generate_master_key_file(next_file)
    new = LocalKeyProvider(load_master_key(path=next_file, env_value=None))

    async def work(rt: Runtime) -> int:
        # Everything currently wrapped goes to the new KEK; the old ones can still unwrap.
        router = KekRouter(new, rt.provider.providers())
        return await keys.rotate_kek(rt, router)

    changed = _run(settings, work)
    # Crash-safe order: keep the old key as .previous (a hard link), then atomically make
    # the new key current; a rerun in any intermediate state finishes the same way.
    if not previous_file.exists():
        previous_file.hardlink_to(current_file)
    next_file.replace(current_file)
    return {"kek": "local", "rewrapped": changed, "previous_destroyed": False}


def _destroy(path: Path) -> None:
    # Overwrite before unlinking: best effort on journaling/SSD storage, but cheap.
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.write(b"\0" * size)
        handle.flush()
        os.fsync(handle.fileno())
    path.unlink()


@keys_cli.command("rotate-kek")
def rotate_kek(
    finish: Annotated[
        bool, typer.Option("--finish", help="Re-wrap stragglers and destroy the previous KEK.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-wrap every data and signing key under a new key-encryption key (rows untouched).

    Local provider: a new master key is generated and every wrapped key re-wrapped; the old
    key stays as ``master.key.previous`` until ``--finish`` destroys it.
    AWS KMS: set HERALD_AWS_KMS_KEY_ID to the new key, list the old one in
    HERALD_AWS_KMS_PREVIOUS_KEY_IDS, and run this.
    """
    settings = load_settings()
    if settings.key_provider == "local":
        if settings.master_key is not None:
            fail("the master key comes from HERALD_MASTER_KEY; rotate it with a key file")
        result = _local_rotation(settings, finish)
    else:

        async def work(rt: Runtime) -> int:
            return await keys.rotate_kek(rt, rt.provider)

        result = {"kek": settings.key_provider, "rewrapped": _run(settings, work)}
    human = f"re-wrapped {result['rewrapped']} keys under the new KEK"
    if settings.key_provider == "local" and not finish:
        human += (
            "; running servers pick it up on their next key operation. Then run "
            "`herald keys rotate-kek --finish` to re-wrap stragglers and destroy the old KEK"
        )
    emit(result, as_json=as_json, human=human)


@tenant_cli.command("shred")
def shred(
    tenant: Annotated[str, typer.Argument(help="Tenant id.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Destroy a tenant's data keys: its stored content becomes unrecoverable (irreversible)."""
    if not yes and not typer.confirm(
        f"Destroy every data key of tenant {tenant}? Its content will be unrecoverable."
    ):
        fail("not shredded", code=1)
    settings = load_settings()

    async def work(rt: Runtime) -> None:
        await keys.shred_tenant(rt, tenant)

    _run(settings, work)
    emit({"tenant": tenant, "shredded": True}, as_json=as_json, human=f"tenant {tenant} shredded")
