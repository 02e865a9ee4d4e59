"""``herald admin …``: operators, the people who run Herald (acts on the database directly)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from herald.cli.admin import JsonOpt, _run
from herald.cli.output import console, emit, fail
from herald.config import load_settings
from herald.service import operators
from herald.service.runtime import Runtime

__all__ = ["operator_cli"]

operator_cli = typer.Typer(
    help="Manage operators: people who sign in to the admin API and the console.",
    no_args_is_help=True,
)

_ACTOR = "operator:cli"

NameArg = Annotated[str, typer.Argument(help="The operator's sign-in name.")]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from standard input (one line) instead of generating one.",
    ),
]


def _password(from_stdin: bool) -> tuple[str, bool]:
    """``(password, generated)``: read from stdin, or a new random one (printed once)."""
    if not from_stdin:
        return operators.generate_password(), True
    line = sys.stdin.readline()
    if not line.strip():
        fail("no password on standard input")
    return line.rstrip("\r\n"), False


@operator_cli.command("create")
def admin_create(
    name: NameArg,
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", help="Limit the operator to this tenant (default: global)."),
    ] = None,
    password_stdin: PasswordStdin = False,
    as_json: JsonOpt = False,
) -> None:
    """Create an operator; a generated password is printed once (Argon2id-hashed at rest)."""
    settings = load_settings()
    password, generated = _password(password_stdin)

    async def work(rt: Runtime) -> dict[str, Any]:
        record = await operators.create_operator(rt, name, password, tenant_id=tenant, actor=_ACTOR)
        return operators.operator_view(record) | ({"password": password} if generated else {})

    emit(_run(settings, work), as_json=as_json)
    if generated and not as_json:
        console.print("  The password is shown once; it is stored only as an Argon2id hash.")


@operator_cli.command("list")
def admin_list(as_json: JsonOpt = False) -> None:
    """List operators (never their password hashes)."""
    settings = load_settings()

    async def work(rt: Runtime) -> list[dict[str, Any]]:
        return [operators.operator_view(r) for r in await rt.store.list_operators()]

    found = _run(settings, work)
    if as_json:
        emit({"operators": found}, as_json=True)
        return
    for item in found:
        state = " (disabled)" if item["disabled"] else ""
        scope = "global" if item["tenant"] is None else f"tenant {item['tenant']}"
        console.print(f"{item['name']}  {item['id']}  {scope}{state}")


def _set_disabled(name: str, *, disabled: bool, as_json: bool) -> None:
    settings = load_settings()

    async def work(rt: Runtime) -> dict[str, Any]:
        record = await operators.set_disabled(rt, name, disabled=disabled, actor=_ACTOR)
        return operators.operator_view(record)

    emit(_run(settings, work), as_json=as_json)


@operator_cli.command("disable")
def admin_disable(name: NameArg, as_json: JsonOpt = False) -> None:
    """Disable an operator: sign-in refused, live tokens refused from now."""
    _set_disabled(name, disabled=True, as_json=as_json)


@operator_cli.command("enable")
def admin_enable(name: NameArg, as_json: JsonOpt = False) -> None:
    """Enable a disabled operator again (tokens from before stay refused)."""
    _set_disabled(name, disabled=False, as_json=as_json)


@operator_cli.command("set-password")
def admin_set_password(
    name: NameArg, password_stdin: PasswordStdin = False, as_json: JsonOpt = False
) -> None:
    """Give an operator a new password (generated unless --password-stdin); tokens die."""
    settings = load_settings()
    password, generated = _password(password_stdin)

    async def work(rt: Runtime) -> dict[str, Any]:
        record = await operators.set_password(rt, name, password, actor=_ACTOR)
        return operators.operator_view(record) | ({"password": password} if generated else {})

    emit(_run(settings, work), as_json=as_json)
