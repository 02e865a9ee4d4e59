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
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from herald.cli.output import console, emit, fail
from herald.config import Settings, load_settings
from herald.core.scopes import ScopeSet
from herald.crypto.certbinding import thumbprint
from herald.crypto.masterkey import generate_master_key_file
from herald.crypto.tls import (
    CLIENT_CERT_VALID_DAYS,
    SERVER_CERT_VALID_DAYS,
    issue_client_cert,
    write_client_cert,
    write_dev_tls,
)
from herald.errors import BadRequest, ConfigError, HeraldError
from herald.service import audit, identity, revocation, signatures
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


async def _app_with_signing_key(
    rt: Runtime, settings: Settings, tenant_id: str, name: str, scopes: ScopeSet
) -> dict[str, Any]:
    """Create an app plus an Ed25519 request-signing key.

    The private half is written to ``<data dir>/keys/<keyid>.pem`` (0600), so that the CLI
    signs out of the box.
    """
    created = await identity.create_app(rt, tenant_id, name, scopes)
    pem, public_raw = signatures.generate_ed25519_key()
    key = await signatures.add_ed25519_key(rt, created.app.id, public_raw)
    keys_dir = settings.data_dir / "keys"
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_file = keys_dir / f"{key.record.keyid}.pem"
    _write_private(key_file, pem.decode("ascii"))
    return {
        "tenant": tenant_id,
        "client_id": created.app.id,
        "client_secret": created.client_secret,
        "scopes": str(scopes),
        "signing_keyid": key.record.keyid,
        "signing_key_file": str(key_file.resolve()),
    }


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
        app = await _app_with_signing_key(
            rt, settings, tenant.id, "demo", ScopeSet.parse(DEMO_SCOPES)
        )
        return app | {"ca_cert": str(tls.ca_cert.resolve()), "url": settings.base_url}

    result = _run(settings, bootstrap)
    profile = (
        "url",
        "client_id",
        "client_secret",
        "ca_cert",
        "signing_keyid",
        "signing_key_file",
    )
    _write_private(profile_path(settings), json.dumps({k: result[k] for k in profile}, indent=2))
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
    console.print(f"  signing key    {result['signing_keyid']} → {result['signing_key_file']}")
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
        return await _app_with_signing_key(rt, settings, tenant, name, scopes)

    emit(_run(settings, work), as_json=as_json)


def _set_disabled(client_id: str, *, disabled: bool, as_json: bool) -> None:
    settings = load_settings()

    async def work(rt: Runtime) -> dict[str, Any]:
        app = await revocation.disable_app(rt, client_id, disabled=disabled, actor="operator:cli")
        return {"client_id": app.id, "disabled": app.disabled}

    emit(_run(settings, work), as_json=as_json)


@app_cli.command("disable")
def app_disable(
    client_id: Annotated[str, typer.Argument(help="The app's client id.")],
    as_json: JsonOpt = False,
) -> None:
    """Disable an app: no new tokens, and its live tokens are refused from now."""
    _set_disabled(client_id, disabled=True, as_json=as_json)


@app_cli.command("enable")
def app_enable(
    client_id: Annotated[str, typer.Argument(help="The app's client id.")],
    as_json: JsonOpt = False,
) -> None:
    """Enable a disabled app again (tokens from before it was disabled stay refused)."""
    _set_disabled(client_id, disabled=False, as_json=as_json)


@app_cli.command("rotate-secret")
def app_rotate_secret(
    client_id: Annotated[str, typer.Argument(help="The app's client id.")],
    as_json: JsonOpt = False,
) -> None:
    """Give an app a new client secret (printed once); tokens got with the old one die."""
    settings = load_settings()

    async def work(rt: Runtime) -> dict[str, Any]:
        secret = await revocation.rotate_secret(rt, client_id, actor="operator:cli")
        return {"client_id": client_id, "client_secret": secret}

    emit(_run(settings, work), as_json=as_json)


key_cli = typer.Typer(help="Manage an app's request-signing keys (RFC 9421).", no_args_is_help=True)
app_cli.add_typer(key_cli, name="key")


@key_cli.command("add")
def key_add(
    client_id: Annotated[str, typer.Argument(help="The app's client id.")],
    ed25519_public_key: Annotated[
        Path | None,
        typer.Option("--ed25519-public-key", help="PEM file of an Ed25519 public key."),
    ] = None,
    use_hmac: Annotated[
        bool, typer.Option("--hmac", help="Create an HMAC-SHA256 secret (shown once).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a signing key: register an Ed25519 public key (preferred) or create an HMAC secret."""
    if (ed25519_public_key is None) == (not use_hmac):
        fail("pass exactly one of --ed25519-public-key PEM or --hmac")
    raw = None
    if ed25519_public_key is not None:
        try:
            pem = ed25519_public_key.read_bytes()
        except OSError as exc:
            fail(f"cannot read {ed25519_public_key}: {exc.strerror}")
        raw = signatures.parse_ed25519_public_key(pem)
    settings = load_settings()

    async def work(rt: Runtime) -> dict[str, Any]:
        if raw is not None:
            new = await signatures.add_ed25519_key(rt, client_id, raw)
        else:
            new = await signatures.add_hmac_key(rt, client_id)
        view = signatures.key_view(new.record)
        if new.secret is not None:
            view["secret"] = new.secret
        return view

    emit(_run(settings, work), as_json=as_json)


@key_cli.command("list")
def key_list(
    client_id: Annotated[str, typer.Argument(help="The app's client id.")],
    as_json: JsonOpt = False,
) -> None:
    """List an app's signing keys (revoked ones included)."""
    settings = load_settings()

    async def work(rt: Runtime) -> list[dict[str, Any]]:
        return [signatures.key_view(k) for k in await signatures.list_keys(rt, client_id)]

    keys = _run(settings, work)
    if as_json:
        emit({"keys": keys}, as_json=True)
        return
    for key in keys:
        state = f"revoked {key['revoked_at']}" if key["revoked_at"] else "active"
        console.print(f"{key['keyid']}  {key['algorithm']:<12} {state}")


@key_cli.command("revoke")
def key_revoke(
    client_id: Annotated[str, typer.Argument(help="The app's client id.")],
    keyid: Annotated[str, typer.Argument(help="The key to revoke.")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke a signing key; requests signed with it are refused from then on."""
    settings = load_settings()

    async def work(rt: Runtime) -> dict[str, Any]:
        return signatures.key_view(await signatures.revoke_key(rt, client_id, keyid))

    emit(_run(settings, work), as_json=as_json)


cert_cli = typer.Typer(
    help="Client certificates for mutual TLS (tokens bound to them, RFC 8705).",
    no_args_is_help=True,
)
app_cli.add_typer(cert_cli, name="cert")


def _read_dev_ca(settings: Settings) -> tuple[bytes, bytes]:
    tls_dir = settings.data_dir / "tls"
    try:
        return (tls_dir / "ca.pem").read_bytes(), (tls_dir / "ca.key").read_bytes()
    except OSError:
        raise ConfigError(
            f"no local CA in {tls_dir} (ca.pem and ca.key from `herald init`); with your own "
            "CA, issue client certificates there and point HERALD_TLS_CLIENT_CA_FILE at it"
        ) from None


@cert_cli.command("require")
def cert_require(
    client_id: Annotated[str, typer.Argument(help="The app's client id.")],
    off: Annotated[
        bool, typer.Option("--off", help="Stop requiring certificate-bound tokens.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Require certificate-bound tokens for an app (RFC 8705): tokens only over mutual TLS.

    Its live tokens are refused from now (some may be unbound).
    """
    settings = load_settings()

    async def work(rt: Runtime) -> dict[str, Any]:
        app = await revocation.require_bound_tokens(
            rt, client_id, required=not off, actor="operator:cli"
        )
        return {"client_id": app.id, "require_bound_tokens": app.require_bound_tokens}

    emit(_run(settings, work), as_json=as_json)


@cert_cli.command("issue")
def cert_issue(
    client_id: Annotated[str, typer.Argument(help="The app's client id.")],
    out: Annotated[
        Path, typer.Option("--out", help="Directory for <client id>.pem and .key (0600).")
    ],
    days: Annotated[
        int,
        typer.Option(
            "--days", min=1, max=SERVER_CERT_VALID_DAYS, help="Days the certificate is valid."
        ),
    ] = CLIENT_CERT_VALID_DAYS,
    as_json: JsonOpt = False,
) -> None:
    """Issue a client certificate for an app, signed by the data dir's local CA.

    The server trusts it with HERALD_TLS_CLIENT_CA_FILE=<data dir>/tls/ca.pem; tokens the
    app requests while presenting it are bound to it.
    """
    settings = load_settings()
    ca_cert, ca_key = _read_dev_ca(settings)

    async def work(rt: Runtime) -> dict[str, Any]:
        app = await rt.store.get_app(client_id)
        if app is None:
            raise BadRequest(f"no app {client_id!r}")
        cert_pem, key_pem = issue_client_cert(
            ca_cert, ca_key, app.id, now=datetime.now(UTC), valid_days=days
        )
        cert = x509.load_pem_x509_certificate(cert_pem)
        bound_to = thumbprint(cert.public_bytes(serialization.Encoding.DER))
        cert_file, key_file = write_client_cert(out, app.id, cert_pem, key_pem)
        expires = cert.not_valid_after_utc.isoformat()
        await audit.record(
            rt,
            tenant=app.tenant_id,
            actor="operator:cli",
            action="app.certificate.issued",
            obj=f"app:{app.id}",
            cnf_x5t_s256=bound_to,
            not_after=expires,
        )
        return {
            "client_id": app.id,
            "cert_file": str(cert_file.resolve()),
            "key_file": str(key_file.resolve()),
            "x5t#S256": bound_to,
            "not_after": expires,
        }

    emit(_run(settings, work), as_json=as_json)
