"""Client commands (``publish``, ``subscribe``, ``token``): SDK calls to a running server."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from herald.cli.output import console, emit, fail, stderr
from herald.client import AsyncPublisher, AsyncSubscriber, HeraldClientError, RequestSigner
from herald.config import load_settings

__all__ = ["publish", "subscribe", "token"]


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and as whom the CLI connects."""

    url: str
    client_id: str
    client_secret: str
    ca: Path | None
    signer: RequestSigner | None


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
JsonOpt = Annotated[bool, typer.Option("--json", help="Print results as JSON.")]


def _connection(
    url: str | None,
    ca: Path | None,
    client_id: str | None,
    client_secret: str | None,
    keyid: str | None = None,
    key_file: Path | None = None,
) -> Connection:
    """Flags and HERALD_* variables first, then the profile ``herald init`` wrote."""
    settings = load_settings()
    profile: dict[str, Any] = {}
    path = settings.data_dir / "cli.json"
    if path.is_file():
        profile = json.loads(path.read_text(encoding="utf-8"))
    default_ca = settings.ca_file if settings.ca_file.is_file() else None
    ca_value = ca or (Path(profile["ca_cert"]) if "ca_cert" in profile else default_ca)
    conn_id = client_id or profile.get("client_id")
    secret = client_secret or profile.get("client_secret")
    if not conn_id or not secret:
        fail(
            "no client credentials: pass --client-id/--client-secret, set HERALD_CLIENT_ID/"
            f"HERALD_CLIENT_SECRET, or run `herald init` (which writes {path})"
        )
    # The profile's signing key belongs to the profile's app: only used with its identity.
    own = {} if client_id else profile
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
    return Connection(
        url or profile.get("url") or settings.base_url, conn_id, secret, ca_value, signer
    )


def _publisher(conn: Connection) -> AsyncPublisher:
    return AsyncPublisher(
        conn.url, conn.client_id, conn.client_secret, ca=conn.ca, signer=conn.signer
    )


def _run_client(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except HeraldClientError as exc:
        fail(str(exc))


def token(
    scope: Annotated[str | None, typer.Option("--scope", help="Narrower scopes.")] = None,
    url: UrlOpt = None,
    ca: CaOpt = None,
    client_id: ClientIdOpt = None,
    client_secret: SecretOpt = None,
    signing_keyid: KeyIdOpt = None,
    signing_key_file: KeyFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fetch an access token (client credentials grant) and print it."""
    conn = _connection(url, ca, client_id, client_secret, signing_keyid, signing_key_file)

    async def work() -> str:
        async with AsyncPublisher(
            conn.url,
            conn.client_id,
            conn.client_secret,
            ca=conn.ca,
            scope=scope,
            signer=conn.signer,
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
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    url: UrlOpt = None,
    ca: CaOpt = None,
    client_id: ClientIdOpt = None,
    client_secret: SecretOpt = None,
    signing_keyid: KeyIdOpt = None,
    signing_key_file: KeyFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish one message."""
    payload: dict[str, Any] | None = None
    if data is not None:
        try:
            payload = json.loads(data)
        except json.JSONDecodeError as exc:
            fail(f"--data is not valid JSON: {exc.msg} at position {exc.pos}")
        if not isinstance(payload, dict):
            fail("--data must be a JSON object")
    conn = _connection(url, ca, client_id, client_secret, signing_keyid, signing_key_file)

    async def work() -> Any:
        async with _publisher(conn) as pub:
            return await pub.publish(
                topic,
                title=title,
                body=body,
                data=payload,
                priority=priority,
                ttl=ttl,
                recipients=recipient,
                idempotency_key=idempotency_key,
            )

    result = _run_client(work())
    info = {
        "id": result.id,
        "topic": result.topic,
        "audit": {"index": result.audit_index, "leaf_hash": result.leaf_hash},
    }
    emit(
        info,
        as_json=as_json,
        human=f"published {result.id} to {result.topic} (audit #{result.audit_index})",
    )


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
    as_json: JsonOpt = False,
) -> None:
    """Print messages live; reconnects and resumes by itself. Ctrl-C to stop."""
    conn = _connection(url, ca, client_id, client_secret, signing_keyid, signing_key_file)
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
