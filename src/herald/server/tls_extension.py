"""The ASGI TLS extension for uvicorn's httptools protocol, and the app's reader of it.

uvicorn terminates TLS but does not tell the app about it: there is no
``scope["extensions"]["tls"]`` (https://asgi.readthedocs.io/en/latest/extensions.html#tls).
:class:`TlsExtensionProtocol` adds it. Once per connection, right after the handshake, it
reads the verified peer certificate from the ``ssl_object`` and builds the extension's
dictionary (plus the RFC 8705 thumbprint, see :data:`THUMBPRINT_KEY`); every HTTP request
of that connection gets a shallow copy. Renegotiation is off (``crypto/tls.py``), so the
peer certificate cannot change during a connection.

Only plain HTTP requests get the extension: WebSocket upgrades are handed to uvicorn's
WebSocket protocol, which builds its own scope (and Herald's streams use tickets, not
access tokens).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping

from cryptography import x509
from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from herald.crypto.certbinding import thumbprint

__all__ = ["THUMBPRINT_KEY", "TlsExtensionProtocol", "client_thumbprint", "tls_extension"]

#: A Herald addition to the extension's dictionary: the RFC 8705 §3.1 thumbprint of the
#: client certificate, computed once per connection instead of once per request.
THUMBPRINT_KEY = "herald.client_cert_x5t#S256"

# ASGI wants the version number of the TLS specifications (RFC 5246 §6.2.1, RFC 8446 §4.1.2).
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
# OpenSSL cipher name -> IANA cipher suite number, filled from the context on first use.
_CIPHER_IDS: dict[str, int] = {}


def _cipher_suite(ssl_object: ssl.SSLObject) -> int | None:
    cipher = ssl_object.cipher()
    if cipher is None:
        return None
    name = cipher[0]
    if name not in _CIPHER_IDS:
        # OpenSSL's "id" is 0x0300XXXX where XXXX is the IANA number (e.g. 0x1302).
        for entry in ssl_object.context.get_ciphers():
            _CIPHER_IDS[entry["name"]] = int(entry["id"]) & 0xFFFF
    return _CIPHER_IDS.get(name)


def tls_extension(ssl_object: ssl.SSLObject) -> dict[object, object]:
    """The ASGI TLS extension's dictionary for one established TLS connection.

    Args:
        ssl_object: The connection's ``ssl.SSLObject``, after the handshake.

    Returns:
        ``server_cert`` (``None``: not needed), ``client_cert_chain`` (PEM strings; only the
        leaf, since Python before 3.13 cannot read the rest of the verified chain; empty
        without a client certificate), ``client_cert_name`` (RFC 4514), ``client_cert_error``
        (always ``None``: an unverifiable certificate fails the handshake), ``tls_version``,
        ``cipher_suite``, and :data:`THUMBPRINT_KEY`.
    """
    der = ssl_object.getpeercert(binary_form=True)
    chain: tuple[str, ...] = ()
    name = bound = None
    if der:
        chain = (ssl.DER_cert_to_PEM_cert(der),)
        name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
        bound = thumbprint(der)
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": _cipher_suite(ssl_object),
        THUMBPRINT_KEY: bound,
    }


class TlsExtensionProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol, with ``scope["extensions"]["tls"]`` filled in.

    Passed as ``uvicorn.Config(http=TlsExtensionProtocol)``.
    """

    # ASGI's scope type wants the extension as dict[object, object].
    _tls: dict[object, object] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Read the TLS facts once; uvloop calls this after the handshake completed."""
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        # Forbidden for non-TLS connections by the extension's specification.
        self._tls = tls_extension(ssl_object) if ssl_object is not None else None

    def on_message_begin(self) -> None:
        """Start a request's scope (uvicorn) and add the connection's TLS extension."""
        super().on_message_begin()
        if self._tls is not None:
            # A copy per request: an app that edits its scope cannot touch the next request's.
            self.scope["extensions"] = {"tls": dict(self._tls)}


def client_thumbprint(scope: Scope) -> str | None:
    """The RFC 8705 thumbprint of the client certificate of a request's connection.

    Reads the ASGI TLS extension: the precomputed :data:`THUMBPRINT_KEY`, else the leaf of
    ``client_cert_chain`` (a server that implements only the standard members).

    Returns:
        The thumbprint, or ``None`` when the connection presented no certificate or is not
        TLS (or the server does not implement the extension).
    """
    extensions = scope.get("extensions")
    tls = extensions.get("tls") if isinstance(extensions, Mapping) else None
    if not isinstance(tls, Mapping):
        return None
    if THUMBPRINT_KEY in tls:
        value = tls[THUMBPRINT_KEY]
        return value if isinstance(value, str) else None
    chain = list(tls.get("client_cert_chain") or ())
    if not chain:
        return None
    return thumbprint(ssl.PEM_cert_to_DER_cert(chain[0]))
