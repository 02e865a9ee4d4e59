"""TLS, HTTP and retry setup shared by the publisher and the subscriber.

Certificate verification is always on: the SDK deliberately has no switch that turns it
off. A development server's self-signed CA is trusted by passing its file as ``ca``. A
client certificate (``client_cert=(cert_file, key_file)``) is presented for mutual TLS; a
Herald server that requests one binds the access tokens it issues to it (RFC 8705).
"""

from __future__ import annotations

import errno
import secrets
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx

from herald import __version__
from herald.client._errors import ConnectionFailed, HeraldClientError

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "DEFAULT_TIMEOUT",
    "USER_AGENT",
    "ClientCert",
    "backoff_delay",
    "connection_failed",
    "is_certificate_error",
    "make_async_client",
    "make_ssl_context",
]

#: Every HTTP call gives up after 10 s without progress, and after 5 s when the TCP/TLS
#: connection cannot be opened: an unreachable server must fail fast, never hang.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
#: First retry waits up to this long (seconds); each further one doubles the ceiling...
BACKOFF_BASE = 0.2
#: ...up to this cap (seconds).
BACKOFF_CAP = 5.0

USER_AGENT = f"herald-client/{__version__}"

_CERT_HINT = "certificate not trusted — pass --ca PATH (the dev CA is .herald/tls/ca.pem)"
_REFUSED_HINT = "connection refused — is `herald serve` running?"
# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH: the certificate is trusted but names another host.
_HOSTNAME_MISMATCH = 62

_random = secrets.SystemRandom()

#: A client certificate for mutual TLS: ``(certificate PEM file, private key PEM file)``.
ClientCert = tuple[str | Path, str | Path]


def make_ssl_context(
    ca: str | Path | None = None, *, client_cert: ClientCert | None = None
) -> ssl.SSLContext:
    """Create the client TLS context: verification on, TLS 1.2 at least.

    Args:
        ca: A PEM file of CA certificates to trust *instead of* the system store (the
            development CA of ``herald init`` is ``.herald/tls/ca.pem``). ``None`` uses the
            system trust store.
        client_cert: ``(cert_file, key_file)`` to present when the server asks for a
            client certificate (e.g. from ``herald app cert issue``); the key unencrypted.

    Returns:
        A context that verifies the server's certificate chain and host name.

    Raises:
        HeraldClientError: The CA file cannot be read or holds no usable certificate, or the
            client certificate and key cannot be loaded or do not match.
    """
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    except OSError as exc:  # FileNotFoundError, PermissionError, ssl.SSLError (bad PEM)
        reason = exc.strerror or str(exc)
        raise HeraldClientError(f"cannot use CA file {ca}: {reason}") from exc
    # DESIGN §3: TLS 1.2 minimum; create_default_context already prefers 1.3.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if client_cert is not None:
        cert_file, key_file = client_cert
        try:
            # An encrypted key gets an empty passphrase and fails, instead of a prompt.
            context.load_cert_chain(cert_file, key_file, password=lambda: b"")
        except OSError as exc:  # missing file, bad PEM, key not matching the certificate
            reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
            raise HeraldClientError(
                f"cannot use client certificate {cert_file} with key {key_file}: {reason}"
            ) from None
    return context


def make_async_client(
    base_url: str,
    *,
    ca: str | Path | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    client_cert: ClientCert | None = None,
) -> httpx.AsyncClient:
    """Create the ``httpx`` client the publisher talks through.

    Args:
        base_url: The server's base URL, e.g. ``https://127.0.0.1:8443``.
        ca: The CA file to trust (see :func:`make_ssl_context`).
        transport: A transport to use instead of the network (tests pass
            ``httpx.MockTransport``); it then owns TLS and ``ca`` is not used.
        client_cert: ``(cert_file, key_file)`` for mutual TLS (see :func:`make_ssl_context`).

    Returns:
        A client with safe defaults: verified TLS, timeouts, no redirects, no proxies or
        certificates taken from the environment, and no transport-level retries (the
        publisher retries itself, with the same ``Idempotency-Key``).
    """
    if transport is None:
        context = make_ssl_context(ca, client_cert=client_cert)
        transport = httpx.AsyncHTTPTransport(verify=context, retries=0)
    return httpx.AsyncClient(
        base_url=base_url,
        transport=transport,
        timeout=DEFAULT_TIMEOUT,
        follow_redirects=False,
        # Environment proxies would silently route bearer tokens elsewhere; be explicit.
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )


def backoff_delay(attempt: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Return the wait before retry number ``attempt`` (0-based).

    Exponential backoff with "full jitter": uniform in ``[0, min(cap, base * 2**attempt)]``,
    so that clients that failed together do not retry together.
    """
    ceiling = min(cap, base * (2 ** min(attempt, 32)))
    return _random.uniform(0.0, ceiling)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _hint(cause: BaseException) -> str | None:
    if isinstance(cause, ssl.SSLCertVerificationError):
        if cause.verify_code == _HOSTNAME_MISMATCH:
            return f"certificate does not match the host name ({cause.verify_message})"
        return _CERT_HINT
    if isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED:
        return _REFUSED_HINT
    if isinstance(cause, TimeoutError | httpx.TimeoutException):
        return "timed out"
    return None


def _describe(exc: BaseException) -> str:
    for cause in _causes(exc):
        hint = _hint(cause)
        if hint is not None:
            return hint
    text = " ".join(str(cause) for cause in _causes(exc))
    if "CERTIFICATE_VERIFY_FAILED" in text:
        hint = _CERT_HINT
    # asyncio joins the errors of every address it tried ("Multiple exceptions: ...").
    elif "refused" in text.lower():
        hint = _REFUSED_HINT
    return hint or str(exc) or type(exc).__name__


def connection_failed(url: str, exc: BaseException) -> ConnectionFailed:
    """Map a network-level exception to an actionable :class:`ConnectionFailed`.

    Args:
        url: The server URL the caller tried to reach.
        exc: The exception from ``httpx``, ``websockets``, ``ssl`` or ``asyncio``.

    Returns:
        ``ConnectionFailed("cannot reach <url>: <what happened — what to do>")``.
    """
    return ConnectionFailed(f"cannot reach {url}: {_describe(exc)}")


def is_certificate_error(exc: BaseException) -> bool:
    """Whether ``exc`` was caused by a failed certificate check (never worth retrying)."""
    return any(isinstance(cause, ssl.SSLCertVerificationError) for cause in _causes(exc)) or (
        "CERTIFICATE_VERIFY_FAILED" in str(exc)
    )
