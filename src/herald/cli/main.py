"""The ``herald`` command: entry point and command registry."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from herald import __version__
from herald.cli import admin, audit, clients, cluster, keys, operators
from herald.cli.output import stderr
from herald.config import Settings, load_settings
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
cli.add_typer(operators.operator_cli, name="admin")
cli.add_typer(keys.keys_cli, name="keys")
cli.add_typer(audit.audit_cli, name="audit")
cli.add_typer(cluster.cluster_cli, name="cluster")
cli.command("publish")(clients.publish)
cli.command("subscribe")(clients.subscribe)
cli.add_typer(clients.token_cli, name="token")
cli.add_typer(clients.message_cli, name="message")
cli.add_typer(clients.template_cli, name="template")


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
    banner: Annotated[
        bool, typer.Option("--banner", help="Print the URL, CA and copy-paste examples first.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="Processes serving the port (overrides HERALD_WORKERS; >1 needs Redis).",
        ),
    ] = None,
) -> None:
    """Run the server (HTTPS by default)."""
    # Imported here so that client commands do not pay for loading the server stack.
    from herald.server.serve import serve as run_server  # noqa: PLC0415

    overrides: dict[str, object] = {}
    if insecure_http:
        overrides["insecure_http"] = True
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if workers is not None:
        overrides["workers"] = workers
    settings = load_settings(**overrides)
    if banner:
        _print_banner(settings)
    if settings.workers > 1:
        from herald.cli.cluster import run_workers  # noqa: PLC0415

        run_workers(settings)
        return
    run_server(settings)


def _print_banner(settings: Settings) -> None:
    cli_path = Path(sys.argv[0]).parent / "herald"
    exe = str(cli_path) if cli_path.is_file() else "herald"
    stderr.print(
        f"[bold green]Herald {__version__}[/bold green] serving [bold]{settings.base_url}[/bold]"
    )
    if not settings.insecure_http:
        stderr.print(f"  CA certificate: {settings.ca_file.resolve()}")
    stderr.print("  In another terminal:")
    stderr.print(f"    {exe} subscribe --topic 'orders.>'")
    stderr.print(
        f"    {exe} publish orders.shipped --title 'Order 123 shipped' --body 'On its way'"
    )
    stderr.print(
        f"  Web console: {settings.base_url}/console/ (an operator: {exe} admin create NAME);"
        f" an inbox: {exe} token subscriber alice --topic 'orders.>'"
    )
    stderr.print("  Ctrl-C stops the server.")


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
