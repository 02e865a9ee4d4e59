"""The ``herald`` command: entry point and command registry."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from herald import __version__
from herald.cli import admin, clients
from herald.cli.output import stderr
from herald.config import load_settings
from herald.errors import HeraldError

__all__ = ["cli", "main"]

cli = typer.Typer(
    name="herald",
    help="Herald: a security-first unified message push platform.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cli.command("init")(admin.init)
cli.add_typer(admin.tenant_cli, name="tenant")
cli.add_typer(admin.app_cli, name="app")
cli.command("publish")(clients.publish)
cli.command("subscribe")(clients.subscribe)
cli.command("token")(clients.token)


@cli.command("serve")
def serve(
    insecure_http: Annotated[
        bool,
        typer.Option(
            "--insecure-http",
            help="Serve plain HTTP (only behind a TLS-terminating proxy). Loud on purpose.",
        ),
    ] = False,
    host: Annotated[str | None, typer.Option("--host", help="Overrides HERALD_HOST.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Overrides HERALD_PORT.")] = None,
) -> None:
    """Run the server (HTTPS by default)."""
    from herald.server.serve import serve as run_server

    overrides: dict[str, object] = {}
    if insecure_http:
        overrides["insecure_http"] = True
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    run_server(load_settings(**overrides))


@cli.command("version")
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    """Console-script entry point: typed errors become one line and exit status 1."""
    try:
        cli()
    except HeraldError as exc:
        stderr.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
