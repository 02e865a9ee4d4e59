"""Client commands: SDK calls to a running server.

``publish``, ``subscribe``, ``token`` (and ``token revoke``), ``message cancel`` and
``template put|get|list``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape

from herald.cli.output import console, emit, fail, stderr
from herald.client import (
    AsyncPublisher,
    AsyncSubscriber,
    HeraldClientError,
    PublishResult,
    RequestSigner,
)
from herald.config import load_settings

__all__ = ["message_cli", "publish", "subscribe", "template_cli", "token", "token_cli"]

message_cli = typer.Typer(help="Scheduled messages.", no_args_is_help=True)
template_cli = typer.Typer(
    help="Message templates (saving one needs the admin scope).", no_args_is_help=True
)

# RFC 3339 §5.6 date-time: a full date, "T", a full time and a mandatory offset.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


#: The SDK's ``client_auth`` values.
ClientAuth = Literal["client_secret_basic", "private_key_jwt"]


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and as whom the CLI connects."""

    url: str
    client_id: str
    client_secret: str | None
    ca: Path | None
    signer: RequestSigner | None
    client_auth: ClientAuth
    client_cert: tuple[Path, Path] | None = None


UrlOpt = Annotated[str | None, typer.Option("--url", envvar="HERALD_URL", help="Server base URL.")]
CaOpt = Annotated[
    Path | None,
    typer.Option("--ca", envvar="HERALD_CA", help="CA certificate to trust (PEM)."),
]
ClientIdOpt = Annotated[
    str | None, typer.Option("--client-id", envvar="HERALD_CLIENT_ID", help="OAuth client id.")
]
SecretOpt = Annotated[
    str | None,
    typer.Option(
        "--client-secret",
        envvar="HERALD_CLIENT_SECRET",
        help="OAuth client secret.",
        show_default=False,
    ),
]
KeyIdOpt = Annotated[
    str | None,
    typer.Option("--signing-keyid", envvar="HERALD_SIGNING_KEYID", help="Request-signing key id."),
]
KeyFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--signing-key-file",
        envvar="HERALD_SIGNING_KEY_FILE",
        help="Ed25519 private key (PEM) of that key id.",
    ),
]
ClientAuthOpt = Annotated[
    str | None,
    typer.Option(
        "--client-auth",
        envvar="HERALD_CLIENT_AUTH",
        help="client_secret_basic or private_key_jwt (RFC 7523, signed with the signing key); "
        "default: the secret if there is one, else the signing key.",
        show_default=False,
    ),
]
ClientCertOpt = Annotated[
    Path | None,
    typer.Option(
        "--client-cert",
        envvar="HERALD_CLIENT_CERT_FILE",
        help="Client certificate (PEM) for mutual TLS; tokens get bound to it (RFC 8705).",
    ),
]
ClientKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--client-key",
        envvar="HERALD_CLIENT_KEY_FILE",
        help="Private key (PEM) of the client certificate.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print results as JSON.")]


def _connection(
    url: str | None,
    ca: Path | None,
    client_id: str | None,
    client_secret: str | None,
    keyid: str | None = None,
    key_file: Path | None = None,
    client_auth: str | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
) -> Connection:
    """Flags and HERALD_* variables first, then the profile ``herald init`` wrote.

    The profile's secret and signing key belong to the profile's app: they are only used
    for its client id. Without a secret, the app authenticates with ``private_key_jwt``.
    """
    settings = load_settings()
    profile: dict[str, Any] = {}
    path = settings.data_dir / "cli.json"
    if path.is_file():
        profile = json.loads(path.read_text(encoding="utf-8"))
    default_ca = settings.ca_file if settings.ca_file.is_file() else None
    ca_value = ca or (Path(profile["ca_cert"]) if "ca_cert" in profile else default_ca)
    conn_id = client_id or profile.get("client_id")
    own = profile if client_id in {None, profile.get("client_id")} else {}
    secret = client_secret or own.get("client_secret")
    keyid = keyid or own.get("signing_keyid")
    key_path = key_file or (Path(own["signing_key_file"]) if "signing_key_file" in own else None)
    signer = None
    if keyid and key_path:
        try:
            signer = RequestSigner.from_key_file(keyid, key_path)
        except HeraldClientError as exc:
            fail(str(exc))
    elif keyid or key_path:
        fail("pass both --signing-keyid and --signing-key-file (or neither)")
    if not conn_id or not (secret or signer):
        fail(
            "no client credentials: pass --client-id and --client-secret (or a signing key for "
            "private_key_jwt), set HERALD_CLIENT_ID/HERALD_CLIENT_SECRET, or run `herald init` "
            f"(which writes {path})"
        )
    method = client_auth or ("client_secret_basic" if secret else "private_key_jwt")
    if method == "client_secret_basic":
        if not secret:
            fail("client_secret_basic needs --client-secret (or HERALD_CLIENT_SECRET)")
        auth: ClientAuth = "client_secret_basic"
    elif method == "private_key_jwt":
        if signer is None or not signer.can_assert:
            fail(
                "private_key_jwt needs the app's Ed25519 signing key: pass --signing-keyid "
                "and --signing-key-file (or HERALD_SIGNING_KEYID/HERALD_SIGNING_KEY_FILE)"
            )
        auth = "private_key_jwt"
    else:
        fail("--client-auth must be client_secret_basic or private_key_jwt")
    if (client_cert is None) != (client_key is None):
        fail(
            "pass both --client-cert and --client-key (HERALD_CLIENT_CERT_FILE and "
            "HERALD_CLIENT_KEY_FILE), or neither"
        )
    mtls = (client_cert, client_key) if client_cert and client_key else None
    return Connection(
        url or profile.get("url") or settings.base_url,
        conn_id,
        secret,
        ca_value,
        signer,
        auth,
        mtls,
    )


def _publisher(conn: Connection) -> AsyncPublisher:
    return AsyncPublisher(
        conn.url,
        conn.client_id,
        conn.client_secret,
        ca=conn.ca,
        signer=conn.signer,
        client_auth=conn.client_auth,
        client_cert=conn.client_cert,
    )


def _run_client(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except HeraldClientError as exc:
        fail(str(exc))


token_cli = typer.Typer(
    help="Fetch an access token (no subcommand), or revoke one.", invoke_without_command=True
)


@token_cli.callback()
def token(
    ctx: typer.Context,
    scope: Annotated[str | None, typer.Option("--scope", help="Narrower scopes.")] = None,
    url: UrlOpt = None,
    ca: CaOpt = None,
    client_id: ClientIdOpt = None,
    client_secret: SecretOpt = None,
    signing_keyid: KeyIdOpt = None,
    signing_key_file: KeyFileOpt = None,
    client_auth: ClientAuthOpt = None,
    client_cert: ClientCertOpt = None,
    client_key: ClientKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fetch an access token (client credentials grant) and print it."""
    if ctx.invoked_subcommand is not None:
        return
    conn = _connection(
        url,
        ca,
        client_id,
        client_secret,
        signing_keyid,
        signing_key_file,
        client_auth,
        client_cert,
        client_key,
    )

    async def work() -> str:
        async with AsyncPublisher(
            conn.url,
            conn.client_id,
            conn.client_secret,
            ca=conn.ca,
            scope=scope,
            signer=conn.signer,
            client_auth=conn.client_auth,
            client_cert=conn.client_cert,
        ) as pub:
            return await pub.token()

    value = _run_client(work())
    emit({"access_token": value}, as_json=as_json, human=value)


def publish(
    topic: Annotated[str, typer.Argument(help="Topic, e.g. orders.shipped")],
    title: Annotated[str | None, typer.Option("--title")] = None,
    body: Annotated[str | None, typer.Option("--body")] = None,
    data: Annotated[str | None, typer.Option("--data", help="A JSON object.")] = None,
    priority: Annotated[
        str | None, typer.Option("--priority", help="low|normal|high|urgent")
    ] = None,
    ttl: Annotated[int | None, typer.Option("--ttl", help="Seconds.")] = None,
    recipient: Annotated[
        list[str] | None, typer.Option("--recipient", help="Recipient id; repeat for more.")
    ] = None,
    channel: Annotated[
        list[str] | None,
        typer.Option("--channel", help="Deliver on this channel only; repeat for more."),
    ] = None,
    category: Annotated[
        str | None, typer.Option("--category", help="Selects per-category preferences.")
    ] = None,
    template: Annotated[
        str | None,
        typer.Option("--template", metavar="NAME", help="Render title/body from a template."),
    ] = None,
    var: Annotated[
        list[str] | None,
        typer.Option(
            "--var",
            metavar="KEY=VALUE",
            help="A template variable (VALUE is JSON if it parses, else text); repeat for more.",
        ),
    ] = None,
    locale: Annotated[
        str | None, typer.Option("--locale", help="The template locale, e.g. zh-CN.")
    ] = None,
    deliver_at: Annotated[
        str | None,
        typer.Option(
            "--deliver-at", help="Publish then (RFC 3339 with offset, e.g. 2026-12-01T08:00:00Z)."
        ),
    ] = None,
    dedup_window: Annotated[
        int | None,
        typer.Option("--dedup-window", help="Seconds: suppress the same content to a recipient."),
    ] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    url: UrlOpt = None,
    ca: CaOpt = None,
    client_id: ClientIdOpt = None,
    client_secret: SecretOpt = None,
    signing_keyid: KeyIdOpt = None,
    signing_key_file: KeyFileOpt = None,
    client_auth: ClientAuthOpt = None,
    client_cert: ClientCertOpt = None,
    client_key: ClientKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish one message, now or at --deliver-at."""
    payload: dict[str, Any] | None = None
    if data is not None:
        payload = _json_value(data, "--data")
        if not isinstance(payload, dict):
            fail("--data must be a JSON object")
    template_ref = _template_ref(template, var or [], locale)
    at = None if deliver_at is None else _deliver_at(deliver_at)
    conn = _connection(
        url,
        ca,
        client_id,
        client_secret,
        signing_keyid,
        signing_key_file,
        client_auth,
        client_cert,
        client_key,
    )

    async def work() -> PublishResult:
        async with _publisher(conn) as pub:
            return await pub.publish(
                topic,
                title=title,
                body=body,
                data=payload,
                priority=priority,
                ttl=ttl,
                recipients=recipient,
                channels=channel,
                category=category,
                template=template_ref,
                deliver_at=at,
                dedup_window=dedup_window,
                idempotency_key=idempotency_key,
            )

    result: PublishResult = _run_client(work())
    info: dict[str, Any] = {
        "id": result.id,
        "topic": result.topic,
        "audit": {"index": result.audit_index, "leaf_hash": result.leaf_hash},
    }
    if result.scheduled:
        info.update(scheduled=True, deliver_at=result.deliver_at)
        human = (
            f"scheduled {result.id} to {result.topic} for {result.deliver_at} "
            f"(audit #{result.audit_index}; cancel with `herald message cancel {result.id}`)"
        )
    else:
        human = f"published {result.id} to {result.topic} (audit #{result.audit_index})"
    emit(info, as_json=as_json, human=escape(human))


def _json_value(text: str, option: str) -> Any:
    """``text`` as JSON, or a one-line error naming ``option``."""
    try:
        value = json.loads(text)
        json.dumps(value, allow_nan=False)  # NaN, Infinity, 1e999: not JSON on the wire
    except json.JSONDecodeError as exc:
        fail(f"{option} is not valid JSON: {exc.msg} at position {exc.pos}")
    except ValueError:
        fail(f"{option} is not valid JSON: NaN and infinite numbers are not allowed")
    return value


def _template_ref(name: str | None, pairs: list[str], locale: str | None) -> dict[str, Any] | None:
    """``--template``, ``--var`` and ``--locale`` as the message's ``template`` member."""
    if name is None:
        if pairs or locale is not None:
            fail("--var and --locale need --template NAME")
        return None
    variables: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            fail(f"--var must be KEY=VALUE, got {pair!r}")
        if key in variables:
            fail(f"--var {key} is given twice")
        variables[key] = _var_value(text)
    ref: dict[str, Any] = {"name": name}
    if locale is not None:
        ref["locale"] = locale
    if variables:
        ref["variables"] = variables
    return ref


def _var_value(text: str) -> Any:
    """A ``--var`` value: JSON when it parses (``42``, ``true``, ``{"a": 1}``), else text."""
    try:
        value = json.loads(text)
        json.dumps(value, allow_nan=False)
    except ValueError:  # JSONDecodeError included
        return text
    return value


def _deliver_at(text: str) -> datetime:
    """``--deliver-at``: an RFC 3339 date-time with an offset (never a naive local time)."""
    if not _RFC3339.fullmatch(text):
        fail(
            f"--deliver-at must be an RFC 3339 date-time with an offset, e.g. "
            f"2026-12-01T08:00:00Z or 2026-12-01T16:00:00+08:00; got {text!r}"
        )
    try:
        return datetime.fromisoformat(text.upper())
    except ValueError as exc:
        fail(f"--deliver-at is not a valid date-time: {exc}")


def subscribe(
    topic: Annotated[
        list[str], typer.Option("--topic", help="Topic pattern (NATS style); repeat for more.")
    ],
    since: Annotated[
        str | None, typer.Option("--since", help="Resume after this message id.")
    ] = None,
    recipient: Annotated[
        str, typer.Option("--recipient", help="Recipient id the stream acts as.")
    ] = f"cli-{os.environ.get('USER', 'user')}",
    ack: Annotated[bool, typer.Option("--ack/--no-ack", help="Acknowledge each message.")] = True,
    count: Annotated[int | None, typer.Option("--count", help="Exit after N messages.")] = None,
    url: UrlOpt = None,
    ca: CaOpt = None,
    client_id: ClientIdOpt = None,
    client_secret: SecretOpt = None,
    signing_keyid: KeyIdOpt = None,
    signing_key_file: KeyFileOpt = None,
    client_auth: ClientAuthOpt = None,
    client_cert: ClientCertOpt = None,
    client_key: ClientKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print messages live; reconnects and resumes by itself. Ctrl-C to stop."""
    conn = _connection(
        url,
        ca,
        client_id,
        client_secret,
        signing_keyid,
        signing_key_file,
        client_auth,
        client_cert,
        client_key,
    )
    last: list[str | None] = [since]

    async def work() -> None:
        async with _publisher(conn) as pub:
            grant = await pub.subscriber_token(recipient, topic)
        seen = 0
        async with AsyncSubscriber(
            conn.url, grant["token"], topics=topic, since=since, ca=conn.ca, auto_ack=ack
        ) as stream:
            if not as_json:
                stderr.print(f"subscribed to {', '.join(topic)} at {conn.url} (Ctrl-C to stop)")
            async for message in stream:
                last[0] = message.id
                if as_json:
                    emit(message.raw, as_json=True)
                else:
                    console.print(
                        f"[dim]{message.id}[/dim] [bold]{message.topic}[/bold] "
                        f"{message.title or ''} {('— ' + message.body) if message.body else ''}",
                        markup=True,
                    )
                seen += 1
                if count is not None and seen >= count:
                    return

    try:
        _run_client(work())
    except KeyboardInterrupt:
        if last[0]:
            stderr.print(f"resume with: --since {last[0]}")
        raise typer.Exit(130) from None


def _call(
    conn: Connection, call: Callable[[AsyncPublisher], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """One SDK call on a fresh publisher; SDK errors become one line and exit status 1."""

    async def work() -> dict[str, Any]:
        async with _publisher(conn) as pub:
            return await call(pub)

    result: dict[str, Any] = _run_client(work())
    return result


@token_cli.command("revoke")
def token_revoke(
    token_value: Annotated[
        str, typer.Argument(metavar="TOKEN", help="An access or subscriber token of this app.")
    ],
    url: UrlOpt = None,
    ca: CaOpt = None,
    client_id: ClientIdOpt = None,
    client_secret: SecretOpt = None,
    signing_keyid: KeyIdOpt = None,
    signing_key_file: KeyFileOpt = None,
    client_auth: ClientAuthOpt = None,
    client_cert: ClientCertOpt = None,
    client_key: ClientKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token (RFC 7009): it is refused everywhere within a second."""
    conn = _connection(
        url,
        ca,
        client_id,
        client_secret,
        signing_keyid,
        signing_key_file,
        client_auth,
        client_cert,
        client_key,
    )

    async def revoke(pub: AsyncPublisher) -> dict[str, Any]:
        await pub.revoke_token(token_value)
        return {"revoked": True}

    emit(_call(conn, revoke), as_json=as_json, human="revoked")


@token_cli.command("subscriber")
def token_subscriber(
    recipient: Annotated[str, typer.Argument(metavar="RECIPIENT", help="The recipient id.")],
    topics: Annotated[
        list[str],
        typer.Option("--topic", help="A topic pattern the token may stream; repeat for more."),
    ],
    ttl: Annotated[int | None, typer.Option("--ttl", help="Seconds (server default).")] = None,
    url: UrlOpt = None,
    ca: CaOpt = None,
    client_id: ClientIdOpt = None,
    client_secret: SecretOpt = None,
    signing_keyid: KeyIdOpt = None,
    signing_key_file: KeyFileOpt = None,
    client_auth: ClientAuthOpt = None,
    client_cert: ClientCertOpt = None,
    client_key: ClientKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mint a subscriber token for RECIPIENT; prints it and the console inbox link that uses it.

    The link carries the token in its fragment, which browsers never send to a server.
    """
    conn = _connection(
        url,
        ca,
        client_id,
        client_secret,
        signing_keyid,
        signing_key_file,
        client_auth,
        client_cert,
        client_key,
    )

    async def mint(pub: AsyncPublisher) -> dict[str, Any]:
        minted = await pub.subscriber_token(recipient, topics, ttl)
        inbox = f"{conn.url.rstrip('/')}/console/inbox#token={minted['token']}"
        return {**minted, "inbox_url": inbox}

    result = _call(conn, mint)
    emit(result, as_json=as_json, human=f"{result['token']}\ninbox: {result['inbox_url']}")


# -- herald message … ---------------------------------------------------------------------


@message_cli.command("cancel")
def cancel(
    message_id: Annotated[str, typer.Argument(metavar="ID", help="A scheduled message's id.")],
    url: UrlOpt = None,
    ca: CaOpt = None,
    client_id: ClientIdOpt = None,
    client_secret: SecretOpt = None,
    signing_keyid: KeyIdOpt = None,
    signing_key_file: KeyFileOpt = None,
    client_auth: ClientAuthOpt = None,
    client_cert: ClientCertOpt = None,
    client_key: ClientKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a scheduled message (published with --deliver-at) until it is due."""
    conn = _connection(
        url,
        ca,
        client_id,
        client_secret,
        signing_keyid,
        signing_key_file,
        client_auth,
        client_cert,
        client_key,
    )
    view = _call(conn, lambda pub: pub.cancel(message_id))
    human = f"cancelled {view.get('id')} to {view.get('topic')} (was due {view.get('deliver_at')})"
    emit(view, as_json=as_json, human=escape(human))


# -- herald template … --------------------------------------------------------------------


@template_cli.command("put")
def template_put(
    name: Annotated[str, typer.Argument(help="Template name, e.g. order-shipped.")],
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="The JSON spec; - reads standard input.")
    ],
    url: UrlOpt = None,
    ca: CaOpt = None,
    client_id: ClientIdOpt = None,
    client_secret: SecretOpt = None,
    signing_keyid: KeyIdOpt = None,
    signing_key_file: KeyFileOpt = None,
    client_auth: ClientAuthOpt = None,
    client_cert: ClientCertOpt = None,
    client_key: ClientKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Store the next version of a template from a JSON spec (needs the admin scope)."""
    spec = _json_value(_read_spec(file), "the template spec")
    if not isinstance(spec, dict):
        fail("the template spec must be a JSON object")
    conn = _connection(
        url,
        ca,
        client_id,
        client_secret,
        signing_keyid,
        signing_key_file,
        client_auth,
        client_cert,
        client_key,
    )
    view = _call(conn, lambda pub: pub.put_template(name, spec))
    emit(
        view,
        as_json=as_json,
        human=escape(f"stored template {view.get('name')} version {view.get('version')}"),
    )


def _read_spec(file: str) -> str:
    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        fail(f"cannot read {file}: {reason}")


@template_cli.command("get")
def template_get(
    name: Annotated[str, typer.Argument(help="Template name.")],
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="A version; the newest by default.")
    ] = None,
    url: UrlOpt = None,
    ca: CaOpt = None,
    client_id: ClientIdOpt = None,
    client_secret: SecretOpt = None,
    signing_keyid: KeyIdOpt = None,
    signing_key_file: KeyFileOpt = None,
    client_auth: ClientAuthOpt = None,
    client_cert: ClientCertOpt = None,
    client_key: ClientKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one version of a template (the newest by default)."""
    conn = _connection(
        url,
        ca,
        client_id,
        client_secret,
        signing_keyid,
        signing_key_file,
        client_auth,
        client_cert,
        client_key,
    )
    view = _call(conn, lambda pub: pub.get_template(name, version))
    emit(view, as_json=as_json, human=_describe_template(view))


def _describe_template(view: dict[str, Any]) -> str:
    """A template version for people: a header line, then each variant's fields."""
    header = (
        f"{view.get('name')} version {view.get('version')}, created {view.get('created_at')} "
        f"by {view.get('created_by')}; default locale {view.get('default_locale')}"
    )
    lines = [header]
    if view.get("description"):
        lines.append(f"  {view['description']}")
    variants = view.get("variants")
    for variant in variants if isinstance(variants, list) else []:
        if not isinstance(variant, dict):
            continue
        channel, locale = variant.get("channel", "*"), variant.get("locale")
        lines.append(f"variant channel={channel} locale={locale}")
        lines.extend(
            f"  {field}: {variant[field]}"
            for field in ("title", "body", "html")
            if variant.get(field) is not None
        )
    return escape("\n".join(lines))


@template_cli.command("list")
def template_list(
    url: UrlOpt = None,
    ca: CaOpt = None,
    client_id: ClientIdOpt = None,
    client_secret: SecretOpt = None,
    signing_keyid: KeyIdOpt = None,
    signing_key_file: KeyFileOpt = None,
    client_auth: ClientAuthOpt = None,
    client_cert: ClientCertOpt = None,
    client_key: ClientKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the templates (the newest version of each)."""
    conn = _connection(
        url,
        ca,
        client_id,
        client_secret,
        signing_keyid,
        signing_key_file,
        client_auth,
        client_cert,
        client_key,
    )
    body = _call(conn, lambda pub: pub.list_templates())
    found = body.get("templates")
    rows = [t for t in found if isinstance(t, dict)] if isinstance(found, list) else []
    human = "\n".join(
        f"{t.get('name')}  version {t.get('version')}  created {t.get('created_at')}" for t in rows
    )
    emit(body, as_json=as_json, human=escape(human or "no templates"))
