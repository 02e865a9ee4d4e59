"""The e-mail channel against real aiosmtpd servers on loopback, with trustme certificates.

Servers run in the test's own event loop (``loop.create_server`` with aiosmtpd's ``SMTP``
protocol, exactly what aiosmtpd's ``Controller`` does in a thread), on port 0:
- STARTTLS: ``SMTP(tls_context=…, require_starttls=True)`` on a plain socket (RFC 3207);
- implicit TLS: ``create_server(ssl=…)`` — aiosmtpd's ``Controller(ssl_context=…)`` (RFC 8314).
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trustme
from aiosmtpd import smtp as aiosmtpd_smtp
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from hypothesis import given
from hypothesis import strategies as st

from herald.channels.base import Channel, Delivered, DeliveryJob, Failed, Retry, redact_endpoint
from herald.channels.email import (
    AUTH_RETRY_AFTER,
    CONFIG_RETRY_AFTER,
    EmailChannel,
    normalise_address,
    parse_smtp_url,
)
from herald.config import Settings
from herald.errors import BadRequest, ConfigError

pytestmark = pytest.mark.timeout(30)

SENDER = "Herald <herald@notify.example.com>"
ADDRESS = "ada@example.org"
USER = "relay@example.com"
PASSWORD = "p@ss:/word%"  # made up; exercises percent-decoding
PASSWORD_QUOTED = "p%40ss%3A%2Fword%25"
CREDENTIALS = f"relay%40example.com:{PASSWORD_QUOTED}"
DELIVERY_ID = "0190a4c2-7d2e-7a3b-8c4d-5e6f7a8b9c0d"
UNSUBSCRIBE = "https://push.example.com/u/abc?x=1"


def make_job(**changes: Any) -> DeliveryJob:
    job = DeliveryJob(
        delivery_id=DELIVERY_ID,
        message_id="0190a4c2-0000-7000-8000-000000000001",
        tenant_id="t1",
        recipient="r1",
        topic="orders.shipped",
        attempt=1,
        title="Your order shipped",
        body="Parcel <b>42</b> & friends\nis on its way.",
        html=None,
        data=None,
        priority="normal",
        created_at="2025-01-02T03:04:05+00:00",
        ttl=3600,
        endpoint={"address": ADDRESS, "name": "Ada Lovelace", "locale": "en-GB"},
    )
    return replace(job, **changes)


# -- the servers --------------------------------------------------------------------------------


@dataclass
class Recorder:
    """An aiosmtpd handler that records accepted envelopes, or answers canned replies."""

    mail_reply: str | None = None
    rcpt_reply: str | None = None
    data_reply: str | None = None
    envelopes: list[Envelope] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    auth_attempts: list[tuple[str, bytes]] = field(default_factory=list)

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self,
        _server: aiosmtpd_smtp.SMTP,
        _session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        _server: aiosmtpd_smtp.SMTP,
        _session: Session,
        envelope: Envelope,
        address: str,
        _rcpt_options: list[str],
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, _server: aiosmtpd_smtp.SMTP, session: Session, envelope: Envelope
    ) -> str:
        if self.data_reply is not None:
            return self.data_reply
        self.envelopes.append(envelope)
        self.sessions.append(session)
        return "250 2.0.0 Ok: queued as 1234"

    def authenticator(
        self,
        _server: aiosmtpd_smtp.SMTP,
        _session: Session,
        _envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.auth_attempts.append((mechanism, auth_data.login))
        ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
        # handled=False: let aiosmtpd answer 535 itself on failure.
        return AuthResult(success=ok, handled=False)

    def received(self) -> EmailMessage:
        assert len(self.envelopes) == 1
        content = self.envelopes[0].original_content
        assert isinstance(content, bytes)
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message


@dataclass
class Pki:
    ca: trustme.CA
    ca_file: Path
    server_context: ssl.SSLContext
    untrusted_context: ssl.SSLContext
    wrong_name_context: ssl.SSLContext


def _server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("pki") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Pki(
        ca=ca,
        ca_file=ca_file,
        server_context=_server_context(ca.issue_cert("127.0.0.1", "localhost")),
        untrusted_context=_server_context(trustme.CA().issue_cert("127.0.0.1")),
        wrong_name_context=_server_context(ca.issue_cert("mx.example.net")),
    )


StartServer = Callable[..., Awaitable[tuple[int, Recorder]]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start aiosmtpd servers on 127.0.0.1:0 in this loop; all are closed afterwards."""
    servers: list[asyncio.AbstractServer] = []
    protocols: list[aiosmtpd_smtp.SMTP] = []

    async def start(
        *,
        starttls: ssl.SSLContext | None = None,
        implicit: ssl.SSLContext | None = None,
        auth: bool = False,
        auth_require_tls: bool = True,
        auth_exclude_mechanism: list[str] | None = None,
        recorder: Recorder | None = None,
    ) -> tuple[int, Recorder]:
        handler = recorder or Recorder()

        def factory() -> aiosmtpd_smtp.SMTP:
            protocol = aiosmtpd_smtp.SMTP(
                handler,
                hostname="mx.test",
                tls_context=starttls,
                require_starttls=starttls is not None,
                authenticator=handler.authenticator if auth else None,
                # aiosmtpd warns (an error here) on AUTH required without TLS required.
                auth_required=auth and auth_require_tls,
                auth_require_tls=auth_require_tls,
                auth_exclude_mechanism=auth_exclude_mechanism,
            )
            protocols.append(protocol)
            return protocol

        server = await asyncio.get_running_loop().create_server(
            factory, "127.0.0.1", 0, ssl=implicit
        )
        servers.append(server)
        return server.sockets[0].getsockname()[1], handler

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
    for protocol in protocols:
        if protocol.transport is not None:
            protocol.transport.close()
    await asyncio.sleep(0)


def channel_for(url: str, pki: Pki, **kwargs: Any) -> EmailChannel:
    kwargs.setdefault("ca_file", pki.ca_file)
    kwargs.setdefault("timeout", 5.0)
    return EmailChannel(url, sender=SENDER, **kwargs)


def text_of(part: EmailMessage) -> str:
    """A received part's text, with the wire's CRLF line ends back to LF."""
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def assert_clean(reason: str) -> None:
    """Reasons never carry the address, the credentials or content."""
    for secret in (ADDRESS, "ada", USER, PASSWORD, PASSWORD_QUOTED, "Parcel", "shipped"):
        assert secret not in reason


# -- happy paths --------------------------------------------------------------------------------


async def test_starttls_delivers_a_complete_message(start_server: StartServer, pki: Pki) -> None:
    port, recorder = await start_server(starttls=pki.server_context)
    channel = channel_for(f"smtp://127.0.0.1:{port}", pki, unsubscribe_url=lambda _job: UNSUBSCRIBE)

    outcome = await channel.deliver(make_job())

    assert isinstance(outcome, Delivered)
    envelope = recorder.envelopes[0]
    assert envelope.mail_from == "herald@notify.example.com"
    assert envelope.rcpt_tos == [ADDRESS]
    assert recorder.sessions[0].ssl is not None  # the session was upgraded (RFC 3207)
    message = recorder.received()
    assert message["From"] == SENDER
    assert message["To"] == f"Ada Lovelace <{ADDRESS}>"
    assert message["Subject"] == "Your order shipped"
    assert message["Message-ID"] == f"<{DELIVERY_ID}@notify.example.com>"
    assert message["Date"] == "Thu, 02 Jan 2025 03:04:05 +0000"
    assert message["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Content-Language"] == "en-GB"
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert isinstance(parts[0], EmailMessage)
    assert isinstance(parts[1], EmailMessage)
    assert text_of(parts[0]) == "Parcel <b>42</b> & friends\nis on its way.\n"
    rendered = text_of(parts[1])
    assert "Parcel &lt;b&gt;42&lt;/b&gt; &amp; friends<br>" in rendered
    assert "<b>" not in rendered
    assert '<html lang="en-GB">' in rendered


async def test_implicit_tls_delivers(start_server: StartServer, pki: Pki) -> None:
    port, recorder = await start_server(implicit=pki.server_context)
    channel = channel_for(f"smtps://127.0.0.1:{port}", pki)

    outcome = await channel.deliver(make_job(html="<p>Hello <em>Ada</em></p>"))

    assert isinstance(outcome, Delivered)
    message = recorder.received()
    assert "List-Unsubscribe" not in message
    html_part = message.get_body(preferencelist=("html",))
    assert isinstance(html_part, EmailMessage)
    assert text_of(html_part) == "<p>Hello <em>Ada</em></p>\n"


async def test_message_id_is_stable_across_retries(start_server: StartServer, pki: Pki) -> None:
    port, recorder = await start_server(implicit=pki.server_context)
    channel = channel_for(f"smtps://127.0.0.1:{port}", pki)

    for attempt in (1, 2):
        assert isinstance(await channel.deliver(make_job(attempt=attempt)), Delivered)

    ids = set()
    for envelope in recorder.envelopes:
        assert isinstance(envelope.original_content, bytes)
        ids.add(email.message_from_bytes(envelope.original_content)["Message-ID"])
    assert ids == {f"<{DELIVERY_ID}@notify.example.com>"}


async def test_title_only_and_no_title(start_server: StartServer, pki: Pki) -> None:
    port, recorder = await start_server(implicit=pki.server_context)
    channel = channel_for(f"smtps://127.0.0.1:{port}", pki)

    assert isinstance(await channel.deliver(make_job(body=None)), Delivered)
    assert isinstance(await channel.deliver(make_job(title=None, body="hi")), Delivered)

    first, second = (
        email.message_from_bytes(e.original_content, policy=email.policy.default)
        for e in recorder.envelopes
        if isinstance(e.original_content, bytes)
    )
    assert isinstance(first, EmailMessage)
    assert isinstance(second, EmailMessage)
    plain = first.get_body(preferencelist=("plain",))
    assert isinstance(plain, EmailMessage)
    assert text_of(plain) == "Your order shipped\n"
    assert second["Subject"] == "(no subject)"


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_credentials_over_starttls(
    start_server: StartServer, pki: Pki, mechanism: str
) -> None:
    other = "LOGIN" if mechanism == "PLAIN" else "PLAIN"
    port, recorder = await start_server(
        starttls=pki.server_context, auth=True, auth_exclude_mechanism=[other]
    )
    channel = channel_for(f"smtp://{CREDENTIALS}@127.0.0.1:{port}", pki)

    outcome = await channel.deliver(make_job())

    assert isinstance(outcome, Delivered)
    assert recorder.auth_attempts == [(mechanism, USER.encode())]
    assert len(recorder.envelopes) == 1


async def test_credentials_over_implicit_tls(start_server: StartServer, pki: Pki) -> None:
    # aiosmtpd only counts STARTTLS as TLS for AUTH; the socket itself is TLS here.
    port, recorder = await start_server(
        implicit=pki.server_context, auth=True, auth_require_tls=False
    )
    url = f"smtps://{CREDENTIALS}@127.0.0.1:{port}"

    assert isinstance(await channel_for(url, pki).deliver(make_job()), Delivered)
    assert len(recorder.auth_attempts) == 1


async def test_wrong_password_is_retried_late(start_server: StartServer, pki: Pki) -> None:
    port, recorder = await start_server(starttls=pki.server_context, auth=True)
    channel = channel_for(f"smtp://relay%40example.com:nope@127.0.0.1:{port}", pki)

    outcome = await channel.deliver(make_job())

    assert isinstance(outcome, Retry)
    assert outcome.after == AUTH_RETRY_AFTER
    assert outcome.reason.startswith("SMTP authentication failed")
    assert_clean(outcome.reason)
    assert "nope" not in outcome.reason
    assert recorder.envelopes == []


# -- TLS refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
@pytest.mark.parametrize("which", ["untrusted_context", "wrong_name_context"])
async def test_untrusted_certificate_is_refused(
    start_server: StartServer, pki: Pki, mode: str, which: str
) -> None:
    context = getattr(pki, which)
    port, recorder = await start_server(**{mode: context}, auth=True)
    scheme = "smtp" if mode == "starttls" else "smtps"
    url = f"{scheme}://{CREDENTIALS}@127.0.0.1:{port}"

    outcome = await channel_for(url, pki).deliver(make_job())

    assert isinstance(outcome, Retry)
    assert "certificate was not trusted" in outcome.reason
    assert outcome.after == CONFIG_RETRY_AFTER
    assert_clean(outcome.reason)
    assert recorder.envelopes == []
    assert recorder.auth_attempts == []


#: Connections one old-TLS server answers (the probe proving it speaks the old version,
#: then Herald), and seconds it waits for each step.
OLD_TLS_CONNECTIONS = 2
OLD_TLS_TIMEOUT = 5.0
#: SMTP lines the old-TLS server reads before STARTTLS at most.
OLD_TLS_MAX_LINES = 10


@dataclass
class OldTlsSmtp:
    """An SMTP server on loopback whose TLS speaks one old version only (issue 9).

    Blocking ``ssl`` in a thread rather than aiosmtpd: asyncio aborts a connection whose
    handshake failed without sending OpenSSL's ``protocol_version`` alert, while a real
    server (and this one) sends it. It records every line it reads and each handshake's end.
    """

    port: int
    commands: list[bytes] = field(default_factory=list)
    handshakes: list[str] = field(default_factory=list)


def _old_tls_context(cert: trustme.LeafCert, version: ssl.TLSVersion) -> ssl.SSLContext:
    """A server context speaking ``version`` alone; OpenSSL 3 needs SECLEVEL=0 for < 1.2."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = context.maximum_version = version
    cert.configure_cert(context)
    return context


def _serve_old_tls(
    listener: socket.socket, context: ssl.SSLContext, starttls: bool, state: OldTlsSmtp
) -> None:
    with listener:
        for _ in range(OLD_TLS_CONNECTIONS):
            try:
                conn, _address = listener.accept()
            except OSError:  # timed out: no more clients
                return
            with conn:
                conn.settimeout(OLD_TLS_TIMEOUT)
                try:
                    if starttls:
                        _smtp_until_starttls(conn, state)
                    with context.wrap_socket(conn, server_side=True) as tls:
                        state.handshakes.append(f"completed {tls.version()}")
                        tls.sendall(b"421 4.3.0 test server closing\r\n")
                except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                    state.handshakes.append(f"failed {getattr(exc, 'reason', None) or exc}")


def _smtp_until_starttls(conn: socket.socket, state: OldTlsSmtp) -> None:
    conn.sendall(b"220 mx.test ESMTP\r\n")
    lines = conn.makefile("rb")
    for _ in range(OLD_TLS_MAX_LINES):
        line = lines.readline(1000)
        state.commands.append(line)
        verb = line[:8].strip().upper()
        if verb.startswith((b"EHLO", b"HELO")):
            conn.sendall(b"250-mx.test\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n")
        elif verb == b"STARTTLS":
            conn.sendall(b"220 2.0.0 ready to start TLS\r\n")
            return
        elif not line or verb == b"QUIT":
            raise ValueError("client left before STARTTLS")
        else:
            conn.sendall(b"530 5.7.0 must issue STARTTLS first\r\n")
    raise ValueError("no STARTTLS")


@contextmanager
def old_tls_smtp(context: ssl.SSLContext, *, starttls: bool) -> Iterator[OldTlsSmtp]:
    """Run an :class:`OldTlsSmtp` in a thread for the block; it stops within its timeout."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(OLD_TLS_TIMEOUT)
    state = OldTlsSmtp(port=listener.getsockname()[1])
    thread = threading.Thread(
        target=_serve_old_tls, args=(listener, context, starttls, state), daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        # Wake a pending accept() so the thread ends now, not after its timeout.
        with contextlib.suppress(OSError), socket.create_connection(listener.getsockname()[:2]):
            pass
        thread.join(OLD_TLS_TIMEOUT * 2)
        assert not thread.is_alive()


async def _old_tls_version(port: int, version: ssl.TLSVersion, *, starttls: bool) -> str:
    """The version negotiated by a client allowing ``version`` alone."""
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.set_ciphers("DEFAULT:@SECLEVEL=0")
    client.minimum_version = client.maximum_version = version
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=None if starttls else client
    )
    try:
        if starttls:
            await reader.readline()  # 220 greeting
            writer.write(b"EHLO probe\r\n")
            for _ in range(OLD_TLS_MAX_LINES):
                if (await reader.readline())[3:4] != b"-":  # last line of the 250 reply
                    break
            writer.write(b"STARTTLS\r\n")
            await reader.readline()  # 220 ready
            await writer.start_tls(client, server_hostname="localhost")
        name = writer.get_extra_info("ssl_object").version()
        assert isinstance(name, str)
        return name
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# Setting the old versions on purpose is what the test is about.
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("mode", ["starttls", "implicit"])
@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["tls1_0", "tls1_1"]
)
async def test_server_offering_only_old_tls_is_refused(
    pki: Pki, mode: str, version: ssl.TLSVersion
) -> None:
    """TLS 1.0 (or 1.1) alone on offer: no session, so no credentials and no message."""
    context = _old_tls_context(pki.ca.issue_cert("127.0.0.1", "localhost"), version)
    starttls = mode == "starttls"
    with old_tls_smtp(context, starttls=starttls) as server:
        # The server really speaks the old version (this OpenSSL can still offer it).
        expected = "TLSv1" if version == ssl.TLSVersion.TLSv1 else "TLSv1.1"
        assert await _old_tls_version(server.port, version, starttls=starttls) == expected
        server.commands.clear()
        scheme = "smtp" if starttls else "smtps"
        url = f"{scheme}://{CREDENTIALS}@127.0.0.1:{server.port}"

        outcome = await channel_for(url, pki).deliver(make_job())

    assert isinstance(outcome, Retry)
    assert outcome.reason == (
        "the TLS handshake with the SMTP server failed: no TLS version in common "
        "(TLS 1.2 or newer is required)"
    )
    assert outcome.after == CONFIG_RETRY_AFTER
    assert_clean(outcome.reason)
    assert server.handshakes[0] == f"completed {expected}"
    assert server.handshakes[1:] == ["failed UNSUPPORTED_PROTOCOL"]
    # Only what precedes TLS went out in the clear: no AUTH, MAIL, RCPT or DATA.
    assert [line.split()[0].upper() for line in server.commands] == (
        [b"EHLO", b"STARTTLS"] if starttls else []
    )


async def test_system_trust_alone_refuses_the_test_ca(start_server: StartServer, pki: Pki) -> None:
    port, recorder = await start_server(implicit=pki.server_context)

    outcome = await channel_for(f"smtps://127.0.0.1:{port}", pki, ca_file=None).deliver(make_job())

    assert isinstance(outcome, Retry)
    assert "certificate was not trusted" in outcome.reason
    assert recorder.envelopes == []


async def test_no_starttls_means_no_plaintext(start_server: StartServer, pki: Pki) -> None:
    # A server without TLS that would even accept AUTH in the clear.
    port, recorder = await start_server(auth=True, auth_require_tls=False)
    url = f"smtp://{CREDENTIALS}@127.0.0.1:{port}"

    outcome = await channel_for(url, pki).deliver(make_job())

    assert isinstance(outcome, Retry)
    assert "STARTTLS" in outcome.reason
    assert outcome.after == CONFIG_RETRY_AFTER
    assert recorder.envelopes == []
    assert recorder.auth_attempts == []  # the password never went out in plaintext


async def test_smtps_against_a_plaintext_server_fails_safely(
    start_server: StartServer, pki: Pki
) -> None:
    port, recorder = await start_server(starttls=pki.server_context)

    outcome = await channel_for(f"smtps://127.0.0.1:{port}", pki, timeout=2.0).deliver(make_job())

    assert isinstance(outcome, Retry)
    assert recorder.envelopes == []


# -- SMTP replies and network failures ----------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "disable"),
    [("550 5.1.1 <ada@example.org>: user unknown", True), ("550 5.7.1 policy", False)],
)
async def test_recipient_5xx_fails(
    start_server: StartServer, pki: Pki, reply: str, disable: bool
) -> None:
    port, _ = await start_server(implicit=pki.server_context, recorder=Recorder(rcpt_reply=reply))

    outcome = await channel_for(f"smtps://127.0.0.1:{port}", pki).deliver(make_job())

    assert isinstance(outcome, Failed)
    assert outcome.disable_endpoint is disable
    assert "550" in outcome.reason
    assert_clean(outcome.reason)


async def test_recipient_4xx_retries(start_server: StartServer, pki: Pki) -> None:
    recorder = Recorder(rcpt_reply="451 4.3.0 <ada@example.org> try again later")
    port, _ = await start_server(starttls=pki.server_context, recorder=recorder)

    outcome = await channel_for(f"smtp://127.0.0.1:{port}", pki).deliver(make_job())

    assert isinstance(outcome, Retry)
    assert "451" in outcome.reason
    assert outcome.after is None
    assert_clean(outcome.reason)


@pytest.mark.parametrize(
    ("reply", "kind"), [("451 4.3.0 queue full", Retry), ("554 5.7.1 spam", Failed)]
)
async def test_data_replies(
    start_server: StartServer, pki: Pki, reply: str, kind: type[Retry | Failed]
) -> None:
    port, _ = await start_server(implicit=pki.server_context, recorder=Recorder(data_reply=reply))

    outcome = await channel_for(f"smtps://127.0.0.1:{port}", pki).deliver(make_job())

    assert isinstance(outcome, kind)
    assert reply[:3] in outcome.reason


@pytest.mark.parametrize(
    ("reply", "kind", "after"),
    [
        ("553 5.7.1 sender not allowed", Retry, AUTH_RETRY_AFTER),
        ("552 5.3.4 message too big", Failed, None),
        ("421 4.7.0 slow down", Retry, None),
    ],
)
async def test_sender_replies(
    start_server: StartServer, pki: Pki, reply: str, kind: type[Retry | Failed], after: float | None
) -> None:
    port, recorder = await start_server(
        implicit=pki.server_context, recorder=Recorder(mail_reply=reply)
    )

    outcome = await channel_for(f"smtps://127.0.0.1:{port}", pki).deliver(make_job())

    assert isinstance(outcome, kind)
    assert reply[:3] in outcome.reason
    if isinstance(outcome, Retry):
        assert outcome.after == after
    assert recorder.envelopes == []


async def test_closed_port_retries(pki: Pki) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    outcome = await channel_for(f"smtps://127.0.0.1:{port}", pki).deliver(make_job())

    assert isinstance(outcome, Retry)
    assert outcome.reason == "could not reach the SMTP server"


async def test_silent_server_times_out(pki: Pki) -> None:
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # never greets

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    started = time.monotonic()
    try:
        outcome = await channel_for(f"smtp://127.0.0.1:{port}", pki, timeout=0.5).deliver(
            make_job()
        )
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()

    assert isinstance(outcome, Retry)
    assert "timed out" in outcome.reason
    assert time.monotonic() - started < 5


# -- message construction -----------------------------------------------------------------------


async def test_header_injection_in_title_is_neutralised(
    start_server: StartServer, pki: Pki
) -> None:
    port, recorder = await start_server(implicit=pki.server_context)
    channel = channel_for(f"smtps://127.0.0.1:{port}", pki)
    job = make_job(title="Hi\r\nBcc: x@y.example\r\n\r\nbody", endpoint={"address": ADDRESS})

    built = channel.build_message(job, channel.validate(job.endpoint))
    assert "Bcc" not in built
    assert built["Subject"] == "Hi Bcc: x@y.example body"

    assert isinstance(await channel.deliver(job), Delivered)
    assert recorder.envelopes[0].rcpt_tos == [ADDRESS]
    received = recorder.received()
    assert "Bcc" not in received
    assert received["Subject"] == "Hi Bcc: x@y.example body"
    assert received["To"] == ADDRESS


def test_non_ascii_headers_are_encoded(pki: Pki) -> None:
    channel = channel_for("smtps://127.0.0.1", pki)
    job = make_job(title="Grüße aus Köln", endpoint={"address": "jo@bücher.example"})

    built = channel.build_message(job, channel.validate(job.endpoint))
    wire = built.as_bytes(policy=email.policy.SMTP)

    assert b"Subject: =?utf-8?" in wire
    assert b"To: jo@xn--bcher-kva.example" in wire


def test_odd_delivery_ids_still_give_a_valid_message_id(pki: Pki) -> None:
    channel = channel_for("smtps://127.0.0.1", pki)
    job = make_job(delivery_id="a b<c>@d")

    first = channel.build_message(job, channel.validate(job.endpoint))["Message-ID"]
    again = channel.build_message(job, channel.validate(job.endpoint))["Message-ID"]

    assert first == again
    assert first.endswith("@notify.example.com>")
    assert " " not in first


def test_unsubscribe_url_must_be_https(pki: Pki) -> None:
    channel = channel_for("smtps://127.0.0.1", pki, unsubscribe_url=lambda _job: "http://x/>")
    with pytest.raises(ValueError, match="https"):
        channel.build_message(make_job(), {"address": ADDRESS})


async def test_invalid_stored_endpoint_fails_without_connecting(pki: Pki) -> None:
    channel = channel_for("smtps://127.0.0.1:1", pki)

    outcome = await channel.deliver(make_job(endpoint={"address": "x@y\r\nRCPT TO:<z@w>"}))

    assert isinstance(outcome, Failed)
    assert outcome.disable_endpoint


# -- validate() ---------------------------------------------------------------------------------


def test_validate_normalises(pki: Pki) -> None:
    channel = channel_for("smtps://127.0.0.1", pki)

    assert channel.validate({"address": "Ada.L+tag@Example.ORG"}) == {
        "address": "Ada.L+tag@example.org"
    }
    assert channel.validate({"address": "a@bücher.de", "name": "  Ada ", "locale": "pt-BR"}) == {
        "address": "a@xn--bcher-kva.de",
        "name": "Ada",
        "locale": "pt-BR",
    }
    assert channel.validate({"address": "a@b.example", "name": ""}) == {"address": "a@b.example"}


@pytest.mark.parametrize(
    "address",
    [
        None,
        42,
        "",
        "plain",
        "a@b@example.com",
        "a@localhost",
        "a@[127.0.0.1]",
        "a@1.2.3.4",
        '"a b"@example.com',
        "a..b@example.com",
        ".a@example.com",
        "a(comment)@example.com",
        "Ada <a@example.com>",
        "a@example.com\r\nBcc: x@y.example",
        "a@exa\nmple.com",
        "a @example.com",
        "ü@example.com",
        "a@-example.com",
        "a@exa_mple.com",
        "a@example.com.",
        "a@" + "x" * 64 + ".com",
        "x" * 65 + "@example.com",
        "a@" + ".".join(["abcdefghi"] * 26) + ".com",
    ],
)
def test_validate_refuses_addresses(pki: Pki, address: object) -> None:
    channel = channel_for("smtps://127.0.0.1", pki)
    with pytest.raises(BadRequest) as info:
        channel.validate({"address": address})
    if isinstance(address, str) and address:
        assert address not in info.value.detail


@pytest.mark.parametrize(
    "endpoint",
    [
        {},
        {"address": ADDRESS, "cc": "x@example.com"},
        {"address": ADDRESS, "name": "A\r\nBcc: x@y"},
        {"address": ADDRESS, "name": "x" * 129},
        {"address": ADDRESS, "name": 3},
        {"address": ADDRESS, "locale": "en_GB"},
        {"address": ADDRESS, "locale": "<script>"},
    ],
)
def test_validate_refuses_endpoints(pki: Pki, endpoint: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        channel_for("smtps://127.0.0.1", pki).validate(endpoint)


def test_normalise_address_agrees_with_the_stdlib() -> None:
    assert normalise_address("o'brien+x@sub.example.co.uk") == "o'brien+x@sub.example.co.uk"


_SAFE_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40)


@given(st.one_of(st.text(max_size=300), st.emails()))
def test_normalise_address_is_strict_and_idempotent(value: str) -> None:
    try:
        address = normalise_address(value)
    except ValueError:
        return
    assert normalise_address(address) == address
    assert address.isascii()
    assert len(address) <= 254
    assert address.count("@") == 1
    assert not any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in address)
    assert email.utils.parseaddr(address) == ("", address)


@given(st.emails())
def test_normalise_address_accepts_ordinary_addresses(value: str) -> None:
    local, _, domain = value.rpartition("@")
    if len(value) <= 254 and len(domain) <= 253 and not domain.rsplit(".", 1)[-1].isdigit():
        assert normalise_address(value) == f"{local}@{domain.lower()}"


@given(st.text(min_size=1, max_size=40).filter(str.strip), _SAFE_TEXT, st.booleans())
def test_smtp_url_credentials_round_trip(user: str, password: str, implicit: bool) -> None:
    scheme = "smtps" if implicit else "smtp"
    url = f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@mx.example:2525"
    try:
        server = parse_smtp_url(url)
    except ConfigError:
        # Only control characters in the credentials are refused.
        assert any(ord(c) < 32 or 127 <= ord(c) <= 159 for c in user + password)
        return
    assert (server.username, server.password) == (user, password)
    assert (server.host, server.port, server.implicit_tls) == ("mx.example", 2525, implicit)


@given(st.text(max_size=200))
def test_parse_smtp_url_only_raises_config_error(url: str) -> None:
    message = "HERALD_SMTP_URL"
    try:
        parse_smtp_url(url)
    except ConfigError as exc:
        message = str(exc)
    assert message.startswith("HERALD_SMTP_URL")


def test_channel_declaration_and_redaction(pki: Pki) -> None:
    channel: Channel = channel_for("smtps://127.0.0.1", pki)

    assert (channel.name, channel.secret_fields, channel.concurrency) == ("email", ("address",), 8)
    assert redact_endpoint(channel, {"address": ADDRESS, "locale": "en"}) == {
        "address": "[redacted]",
        "locale": "en",
    }


# -- configuration ------------------------------------------------------------------------------


def test_parse_smtp_url() -> None:
    starttls = parse_smtp_url(f"smtp://{CREDENTIALS}@mx.example")
    assert (starttls.host, starttls.port, starttls.implicit_tls) == ("mx.example", 587, False)
    assert (starttls.username, starttls.password) == (USER, PASSWORD)
    assert PASSWORD not in repr(starttls)

    implicit = parse_smtp_url("SMTPS://MX.example:2465/")
    assert (implicit.host, implicit.port, implicit.implicit_tls) == ("mx.example", 2465, True)
    assert implicit.username is None
    assert parse_smtp_url("smtps://[::1]").host == "::1"
    assert parse_smtp_url("smtps://[::1]").port == 465


@pytest.mark.parametrize(
    "url",
    [
        "",
        "mx.example",
        "http://mx.example",
        "smtp+insecure://mx.example",
        "lmtp://mx.example",
        "smtp://",
        f"smtp://u:{PASSWORD_QUOTED}@",
        f"smtp://u:{PASSWORD_QUOTED}@mx.example:0",
        f"smtp://u:{PASSWORD_QUOTED}@mx.example:99999",
        f"smtp://u:{PASSWORD_QUOTED}@mx.example:port",
        f"smtp://u:{PASSWORD_QUOTED}@[::1",
        f"smtp://u:{PASSWORD_QUOTED}@mx.example/path",
        f"smtp://u:{PASSWORD_QUOTED}@mx.example?tls=off",
        f"smtp://u:{PASSWORD_QUOTED}@mx.example#x",
        "smtp://user-only@mx.example",
        f"smtp://:{PASSWORD_QUOTED}@mx.example",
        "smtp://u:p%0d%0aQUIT@mx.example",
    ],
)
def test_parse_smtp_url_refusals(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_smtp_url(url)
    message = str(info.value)
    assert message.startswith("HERALD_SMTP_URL")
    assert PASSWORD_QUOTED not in message
    assert PASSWORD not in message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ or info.value.__context__ is None


def test_tls_context_is_strict(pki: Pki) -> None:
    context = channel_for("smtps://mx.example", pki).tls_context
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_bad_ca_file_and_sender(tmp_path: Path, pki: Pki) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match="HERALD_EGRESS_CA_FILE"):
        EmailChannel("smtps://mx.example", sender=SENDER, ca_file=missing)
    for sender in ("not an address", "a@localhost", "Herald <a@b.example>\r\nBcc: x@y"):
        with pytest.raises(ConfigError, match="HERALD_SMTP_FROM"):
            EmailChannel("smtps://mx.example", sender=sender)
    with pytest.raises(ValueError, match="timeout"):
        EmailChannel("smtps://mx.example", sender=SENDER, timeout=0)


def test_from_settings(pki: Pki) -> None:
    url = f"smtps://{CREDENTIALS}@mx.example:2465"
    settings = Settings(smtp_url=url, egress_ca_file=pki.ca_file)

    channel = EmailChannel.from_settings(settings, sender="herald@push.example.com")

    assert channel.server.port == 2465
    assert channel.server.password == PASSWORD
    assert channel.sender.addr_spec == "herald@push.example.com"
    assert PASSWORD not in repr(channel.server)

    with pytest.raises(ConfigError, match="HERALD_SMTP_URL"):
        EmailChannel.from_settings(Settings(), sender="herald@push.example.com")
