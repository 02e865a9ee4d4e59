"""E-mail out: SMTP submission over STARTTLS (RFC 3207) or implicit TLS (RFC 8314).

The server comes from ``HERALD_SMTP_URL``: ``smtp://user:pass@host:587`` upgrades with
STARTTLS and *refuses* a server that does not offer it (never a plaintext fallback);
``smtps://user:pass@host:465`` speaks TLS from the first byte. Either way the server
certificate is verified against the system trust store plus ``HERALD_EGRESS_CA_FILE``, the
host name is checked and TLS 1.2 is the floor (DESIGN §3). Credentials are only ever sent
inside that TLS session.

An endpoint is ``{"address": "user@example.com", "name": "Ada", "locale": "en-GB"}`` (``name``
and ``locale`` optional). The address is personal data: it is a secret field, redacted in
every view, and never appears in a reason.

Each attempt sends one ``multipart/alternative`` message (text, then HTML) whose
``Message-ID`` is ``<delivery_id@sender-domain>`` and whose ``Date`` is the publish time, so
a retry after a lost reply is the *same* message and MTAs and clients de-duplicate it.

Outcomes: accepted → :class:`Delivered`; 4xx replies, connection failures and timeouts →
:class:`Retry`; a 5xx refusal of the recipient or of the message → :class:`Failed` (the
endpoint is disabled on RFC 3463 ``5.1.x`` "bad destination mailbox" codes); operator
problems — an untrusted certificate, no STARTTLS, refused credentials or sender — →
``Retry`` with a long ``after`` and a reason that says what to fix.
"""

from __future__ import annotations

import asyncio
import email.errors
import email.utils
import hashlib
import html
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final
from urllib.parse import unquote, urlsplit

from aiosmtplib import (
    SMTP,
    SMTPAuthenticationError,
    SMTPDataError,
    SMTPException,
    SMTPNotSupported,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPTimeoutError,
)

from herald.channels.base import Delivered, DeliveryJob, Failed, Outcome, Retry
from herald.channels.egress import ssl_context
from herald.errors import BadRequest, ConfigError

if TYPE_CHECKING:
    from herald.config import Settings

__all__ = [
    "ADDRESS_MAX",
    "CONFIG_RETRY_AFTER",
    "DEFAULT_TIMEOUT",
    "EmailChannel",
    "SmtpServer",
    "normalise_address",
    "parse_smtp_url",
]

#: RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the angle brackets.
ADDRESS_MAX: Final = 254
#: RFC 5321 §4.5.3.1.1: a local part is at most 64 octets.
LOCAL_PART_MAX: Final = 64
#: RFC 1035 §2.3.4: a domain name is at most 253 characters in text form.
DOMAIN_MAX: Final = 253
#: Longest display name accepted in an endpoint.
NAME_MAX: Final = 128
#: Longest locale tag accepted (BCP 47 tags in practice stay well under this).
LOCALE_MAX: Final = 35
#: Seconds a whole attempt (connect, TLS, AUTH, send) may take.
DEFAULT_TIMEOUT: Final = 15.0
#: Seconds before retrying after a failure only the operator can fix (certificate, no
#: STARTTLS, credentials, sender): retrying sooner only hammers the server.
CONFIG_RETRY_AFTER: Final = 300.0
#: Credentials refused: retry even later, so a bad password does not trip lock-outs.
AUTH_RETRY_AFTER: Final = 600.0
#: Seconds granted to a polite QUIT after the message was accepted.
_QUIT_TIMEOUT: Final = 2.0
# OpenSSL reasons for "no protocol version in common": refused by us (the server chose an
# old version) or by the server (it has nothing of TLS 1.2 or newer), RFC 8446 §4.2.1.
# WRONG_VERSION_NUMBER is not one: it is what a plaintext server's reply looks like.
_NO_COMMON_VERSION: Final = frozenset(
    {
        "UNSUPPORTED_PROTOCOL",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "NO_PROTOCOLS_AVAILABLE",
    }
)

_SETTING = "HERALD_SMTP_URL"
_DEFAULT_PORTS: Final = {"smtp": 587, "smtps": 465}  # RFC 6409 §3.1, RFC 8314 §7.3
_FIELDS: Final = frozenset({"address", "name", "locale"})
# RFC 5322 §3.2.3: atext; a local part must be a dot-atom (quoted strings are refused).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LDH_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_LOCALE = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")
# C0 controls, DEL and the C1 controls: never in a header or an address.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_RUN = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_UNSUBSCRIBE_URL = re.compile(r"https://[\x21-\x7e]+")
_NO_SUBJECT = "(no subject)"


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """A parsed ``HERALD_SMTP_URL``; the password is left out of ``repr``."""

    host: str
    port: int
    implicit_tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_smtp_url(url: str) -> SmtpServer:
    """Parse ``smtp://[user:pass@]host[:port]`` (STARTTLS) or ``smtps://…`` (implicit TLS).

    User name and password are percent-decoded. Nothing else is accepted: no path, query or
    fragment, no other scheme, a user name only together with a password.

    Raises:
        ConfigError: naming ``HERALD_SMTP_URL``; the message never repeats the URL.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ConfigError(f"{_SETTING}: not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ConfigError(
            f"{_SETTING}: must be smtp://host:587 (STARTTLS) or smtps://host:465 (implicit TLS)"
        )
    if parts.path not in {"", "/"} or parts.query or parts.fragment:
        raise ConfigError(f"{_SETTING}: must not carry a path, query or fragment")
    host = parts.hostname
    if not host or _CONTROL.search(host) or any(c.isspace() for c in host):
        raise ConfigError(f"{_SETTING}: names no valid host")
    try:
        host.encode("idna")
    except UnicodeError:
        raise ConfigError(f"{_SETTING}: names no valid host") from None
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"{_SETTING}: port out of range")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if (username is None) != (password is None) or username == "":
        raise ConfigError(f"{_SETTING}: give both a user name and a password, or neither")
    if any(_CONTROL.search(value) for value in (username or "", password or "")):
        raise ConfigError(f"{_SETTING}: credentials must not contain control characters")
    return SmtpServer(
        host=host,
        port=port or _DEFAULT_PORTS[scheme],
        implicit_tls=scheme == "smtps",
        username=username,
        password=password,
    )


# -- addresses --------------------------------------------------------------------------------


def normalise_address(value: object) -> str:
    """Return ``value`` as a strict ``local@domain`` with a lower-case ASCII (IDNA) domain.

    Accepted: a dot-atom local part of at most 64 ASCII characters, one ``@``, a domain of
    two or more LDH labels (internationalised domains are IDNA-encoded), 254 characters in
    all. Refused: quoted or non-ASCII local parts, comments, display names, domain
    literals, whitespace and control characters anywhere.

    Raises:
        ValueError: with a reason that does not repeat the value.
    """
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    if len(value) > ADDRESS_MAX or _CONTROL.search(value) or any(c.isspace() for c in value):
        raise ValueError("must be a plain address without spaces or control characters")
    local, at, domain = value.rpartition("@")
    if not at or "@" in local:
        raise ValueError("must contain exactly one @")
    if len(local) > LOCAL_PART_MAX or not _DOT_ATOM.fullmatch(local):
        raise ValueError("has an invalid local part")
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError("has an invalid domain") from None
    labels = ascii_domain.split(".")
    if (
        len(ascii_domain) > DOMAIN_MAX
        or len(labels) < 2
        or not all(_LDH_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise ValueError("has an invalid domain")
    address = f"{local}@{ascii_domain}"
    if len(address) > ADDRESS_MAX:
        raise ValueError("is too long")
    # Belt and braces: the standard library's RFC 5322 parsers must agree exactly.
    try:
        parsed = Address(addr_spec=address)
    except (ValueError, IndexError, email.errors.HeaderParseError):
        raise ValueError("is not a valid address") from None
    if parsed.addr_spec != address or email.utils.parseaddr(address) != ("", address):
        raise ValueError("is not a valid address")
    return address


def _parse_sender(sender: str) -> Address:
    """``addr`` or ``Display Name <addr>`` → Address (ConfigError names HERALD_SMTP_FROM)."""
    if _CONTROL.search(sender):
        raise ConfigError("HERALD_SMTP_FROM: must not contain control characters")
    display_name, addr = email.utils.parseaddr(sender)
    try:
        return Address(display_name=display_name, addr_spec=normalise_address(addr))
    except ValueError as exc:
        raise ConfigError(
            f"HERALD_SMTP_FROM: the sender address {exc}; set a routable address"
        ) from None


def _one_line(text: str) -> str:
    """Collapse CR, LF and other controls to single spaces (header injection defence)."""
    return _CONTROL_RUN.sub(" ", text).strip()


# -- the channel ------------------------------------------------------------------------------


class _StartTLSUnavailable(SMTPException):
    """The server did not offer STARTTLS on an ``smtp://`` URL."""


class _AuthUnavailable(SMTPException):
    """Credentials are configured but the server offers no usable AUTH mechanism."""


class EmailChannel:
    """Deliver notifications as e-mail through one SMTP submission server.

    Args:
        smtp_url: ``smtp://user:pass@host:587`` (STARTTLS required) or
            ``smtps://user:pass@host:465`` (implicit TLS); see :func:`parse_smtp_url`.
        sender: The ``From`` address, ``addr`` or ``Name <addr>``; also the envelope
            sender and the domain of every ``Message-ID``.
        ca_file: Extra CA certificates (PEM) trusted for the server's certificate.
        timeout: Seconds one attempt may take in all.
        unsubscribe_url: Returns the one-click unsubscribe URL (``https://`` only) for a
            job; when given, ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` are added.

    Raises:
        ConfigError: the URL, the sender or the CA file is unusable.
    """

    name: ClassVar[str] = "email"
    #: The address is personal data: sealed at rest, redacted in views.
    secret_fields: ClassVar[tuple[str, ...]] = ("address",)
    concurrency: ClassVar[int] = 8

    def __init__(
        self,
        smtp_url: str,
        *,
        sender: str,
        ca_file: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        unsubscribe_url: Callable[[DeliveryJob], str] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.server = parse_smtp_url(smtp_url)
        self.sender = _parse_sender(sender)
        #: The shared outbound TLS policy (DESIGN §3): system CAs plus ``ca_file``, host
        #: name checked, TLS 1.2 minimum.
        self.tls_context = ssl_context(ca_file)
        self._timeout = timeout
        self._unsubscribe_url = unsubscribe_url

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        sender: str,
        unsubscribe_url: Callable[[DeliveryJob], str] | None = None,
    ) -> EmailChannel:
        """Build the channel from ``HERALD_SMTP_URL`` and ``HERALD_EGRESS_CA_FILE``.

        ``sender`` is passed by the wiring (:mod:`herald.channels.registry`):
        ``HERALD_SMTP_FROM`` when set, else ``herald@<host>`` of the public URL. A host
        that is an IP address or a single label (``127.0.0.1``, ``localhost``) is not a
        routable sender domain and is refused, so such set-ups must set ``HERALD_SMTP_FROM``.

        Raises:
            ConfigError: ``HERALD_SMTP_URL`` is unset or invalid, or the sender is invalid.
        """
        if settings.smtp_url is None:
            raise ConfigError(f"{_SETTING}: not set; the email channel needs an SMTP server")
        return cls(
            settings.smtp_url.get_secret_value(),
            sender=sender,
            ca_file=settings.egress_ca_file,
            unsubscribe_url=unsubscribe_url,
        )

    def validate(self, endpoint: Mapping[str, Any]) -> dict[str, Any]:
        """Check and normalise ``{"address", "name"?, "locale"?}`` (BadRequest when invalid)."""
        if not isinstance(endpoint, Mapping):
            raise BadRequest("an email endpoint must be an object")
        if not set(endpoint) <= _FIELDS:
            raise BadRequest("an email endpoint accepts only address, name and locale")
        try:
            result: dict[str, Any] = {"address": normalise_address(endpoint.get("address"))}
        except ValueError as exc:
            raise BadRequest(f"address {exc}") from None
        name = endpoint.get("name")
        if name is not None:
            if not isinstance(name, str) or len(name) > NAME_MAX or _CONTROL.search(name):
                raise BadRequest(f"name must be a string of at most {NAME_MAX} characters")
            if name.strip():
                result["name"] = name.strip()
        locale = endpoint.get("locale")
        if locale is not None:
            if (
                not isinstance(locale, str)
                or len(locale) > LOCALE_MAX
                or not _LOCALE.fullmatch(locale)
            ):
                raise BadRequest("locale must be a language tag such as en or pt-BR")
            result["locale"] = locale
        return result

    def build_message(self, job: DeliveryJob, endpoint: Mapping[str, Any]) -> EmailMessage:
        """The message for ``job`` to the validated ``endpoint`` (pure; no I/O)."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = Address(
            display_name=_one_line(endpoint.get("name") or ""), addr_spec=endpoint["address"]
        )
        message["Subject"] = _one_line(job.title or "") or _NO_SUBJECT
        message["Date"] = _date_header(job.created_at)
        message["Message-ID"] = f"<{_id_left(job.delivery_id)}@{self.sender.domain}>"
        # RFC 3834 §5: generated by a machine, so auto-responders must not answer.
        message["Auto-Submitted"] = "auto-generated"
        if self._unsubscribe_url is not None:
            url = self._unsubscribe_url(job)
            if not _UNSUBSCRIBE_URL.fullmatch(url) or any(c in url for c in "<>,"):
                raise ValueError("unsubscribe_url must return an https URL without <, > or ,")
            message["List-Unsubscribe"] = f"<{url}>"  # RFC 2369 §3.2
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058 §3.1
        text = job.body or job.title or ""
        locale = endpoint.get("locale")
        message.set_content(text)
        message.add_alternative(job.html or _html_from_text(text, locale), subtype="html")
        if locale:
            # RFC 3282; set last, because set_content() drops earlier Content-* headers.
            message["Content-Language"] = locale
        return message

    async def deliver(self, job: DeliveryJob) -> Outcome:
        """Send one message; see the module docstring for how replies map to outcomes.

        Raises:
            ValueError: ``unsubscribe_url`` returned an unusable URL (a wiring bug).
        """
        try:
            endpoint = self.validate(job.endpoint)
        except BadRequest:
            return Failed("the email endpoint is not valid", disable_endpoint=True)
        message = self.build_message(job, endpoint)
        server = self.server
        smtp = SMTP(
            hostname=server.host,
            port=server.port,
            use_tls=server.implicit_tls,
            start_tls=False,  # upgraded explicitly below, after checking it is offered
            tls_context=self.tls_context,
            timeout=self._timeout,
        )
        try:
            async with asyncio.timeout(self._timeout):
                await self._open(smtp)
                await smtp.send_message(
                    message, sender=self.sender.addr_spec, recipients=[endpoint["address"]]
                )
        except (SMTPException, OSError, TimeoutError) as exc:
            smtp.close()
            return _outcome_of(exc)
        except BaseException:  # cancelled, or a bug: still never leak the connection
            smtp.close()
            raise
        # Accepted: the outcome is fixed, whatever happens to the courtesy QUIT.
        try:
            await smtp.quit(timeout=_QUIT_TIMEOUT)
        except (SMTPException, OSError, TimeoutError):
            pass
        finally:
            smtp.close()
        return Delivered("accepted by the SMTP server")

    async def _open(self, smtp: SMTP) -> None:
        """Connect, secure the session (RFC 3207 or RFC 8314), then authenticate."""
        await smtp.connect()
        if not self.server.implicit_tls:
            await smtp.ehlo()
            # RFC 3207 §4: never continue in plaintext when STARTTLS is not on offer.
            if not smtp.supports_extension("starttls"):
                raise _StartTLSUnavailable("STARTTLS not offered")
            await smtp.starttls()
        if self.server.username is not None and self.server.password is not None:
            try:
                await smtp.login(self.server.username, self.server.password)
            except SMTPException as exc:
                # A bare SMTPException from login(): no AUTH, or no mechanism in common.
                if type(exc) is SMTPException:
                    raise _AuthUnavailable("no usable AUTH mechanism") from exc
                raise


# -- helpers ----------------------------------------------------------------------------------


def _date_header(created_at: str) -> str:
    """RFC 5322 §3.6.1: the publish time (stable across retries), else now."""
    try:
        when = datetime.fromisoformat(created_at)
    except (TypeError, ValueError):
        when = datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return email.utils.format_datetime(when)


def _id_left(delivery_id: str) -> str:
    """RFC 5322 §3.6.4: ``id-left`` is a dot-atom; hash anything that is not one."""
    if _DOT_ATOM.fullmatch(delivery_id) and len(delivery_id) <= LOCAL_PART_MAX:
        return delivery_id
    return hashlib.sha256(delivery_id.encode()).hexdigest()


def _html_from_text(text: str, locale: str | None) -> str:
    """A minimal HTML rendering of plain text; every character escaped."""
    lang = f' lang="{html.escape(locale)}"' if locale else ""
    body = html.escape(text).replace("\r\n", "\n").replace("\n", "<br>\n")
    return (
        f'<!DOCTYPE html>\n<html{lang}><head><meta charset="utf-8"></head>\n'
        f"<body><p>{body}</p></body></html>\n"
    )


def _enhanced_code(message: str) -> str:
    """The RFC 3463 status code opening a reply text (``5.1.1``), or ``""``."""
    match = re.match(r"\s*([245]\.\d{1,3}\.\d{1,3})\b", message)
    return match.group(1) if match else ""


def _cert_error(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error somewhere in ``exc``'s cause chain, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _outcome_of(exc: BaseException) -> Outcome:  # noqa: PLR0911 - a return per failure class
    """Map an SMTP failure to an outcome; the reason carries codes, never server text."""
    if (tls_error := _cert_error(exc)) is not None:
        if isinstance(tls_error, ssl.SSLCertVerificationError):
            return Retry(
                "the SMTP server certificate was not trusted "
                f"({tls_error.verify_message}); check HERALD_EGRESS_CA_FILE",
                after=CONFIG_RETRY_AFTER,
            )
        if tls_error.reason in _NO_COMMON_VERSION:
            return Retry(
                "the TLS handshake with the SMTP server failed: no TLS version in common "
                "(TLS 1.2 or newer is required)",
                after=CONFIG_RETRY_AFTER,
            )
        return Retry("the TLS handshake with the SMTP server failed", after=CONFIG_RETRY_AFTER)
    if isinstance(exc, _StartTLSUnavailable):
        return Retry(
            "the SMTP server does not offer STARTTLS; refusing to send without TLS",
            after=CONFIG_RETRY_AFTER,
        )
    if isinstance(exc, _AuthUnavailable):
        return Retry("the SMTP server offers no usable authentication", after=AUTH_RETRY_AFTER)
    if isinstance(exc, SMTPRecipientsRefused):
        return _recipient_outcome(exc.recipients[0].code, exc.recipients[0].message)
    if isinstance(exc, SMTPResponseException):
        return _reply_outcome(exc)
    if isinstance(exc, SMTPNotSupported):
        return Retry("the SMTP server lacks a required extension", after=CONFIG_RETRY_AFTER)
    if isinstance(exc, SMTPTimeoutError | TimeoutError):
        return Retry("the SMTP server timed out")
    return Retry("could not reach the SMTP server")


def _recipient_outcome(code: int, message: str) -> Outcome:
    """RCPT TO refused: 5xx is permanent for this address, 4xx is a deferral."""
    enhanced = _enhanced_code(message)
    detail = f"{code} {enhanced}".strip()
    if code >= 500:
        # RFC 3463 §3.2: X.1.X are addressing problems — the mailbox does not exist.
        return Failed(
            f"the SMTP server refused the recipient ({detail})",
            disable_endpoint=enhanced.startswith("5.1."),
        )
    return Retry(f"the SMTP server deferred the recipient ({detail})")


def _reply_outcome(exc: SMTPResponseException) -> Outcome:  # noqa: PLR0911 - a return per reply
    """An error reply outside RCPT TO: which command refused decides who must act."""
    code = exc.code
    if isinstance(exc, SMTPAuthenticationError):
        return Retry(f"SMTP authentication failed ({code})", after=AUTH_RETRY_AFTER)
    if isinstance(exc, SMTPSenderRefused):
        if code == 552:  # RFC 1870 §6.1: message size exceeds the fixed limit
            return Failed("the SMTP server refused the message as too large (552)")
        if code >= 500:
            return Retry(
                f"the SMTP server refused the sender ({code}); check HERALD_SMTP_FROM",
                after=AUTH_RETRY_AFTER,
            )
        return Retry(f"the SMTP server deferred the sender ({code})")
    if isinstance(exc, SMTPDataError):
        detail = f"{code} {_enhanced_code(exc.message)}".strip()
        if code >= 500:
            return Failed(f"the SMTP server rejected the message ({detail})")
        return Retry(f"the SMTP server deferred the message ({detail})")
    # Greeting, EHLO, STARTTLS or RSET refused: the server, not this message, is the issue.
    after = CONFIG_RETRY_AFTER if code >= 500 else None
    return Retry(f"the SMTP server refused the session ({code})", after=after)
