"""TLS scan of a running ``herald serve`` on loopback (issue 9, "TLS scan").

The scan is done with ``nassl``, the OpenSSL wrapper that sslyze scans with: sslyze itself
pins ``cryptography<47`` while Herald needs ``cryptography>=47`` (HPKE), so it cannot be
installed next to Herald. nassl ships two OpenSSL builds: a legacy 1.0.2 one that can still
*offer* SSL 2.0/3.0, RC4, EXPORT, NULL, anonymous and static-RSA suites and renegotiate,
and a modern one for TLS 1.3. The probes are sslyze's, kept to what the assertions need:

* SSL 2.0, SSL 3.0, TLS 1.0 and TLS 1.1 refused, every suite offered at once; TLS 1.2 and
  1.3 accepted (RFC 8996, RFC 9325 §3.1.1);
* every TLS 1.2 suite both builds know offered alone, one handshake each: the accepted
  ones must be ECDHE with an AEAD, so none of CBC with SHA-1, static RSA key exchange,
  NULL, EXPORT, RC4, (3)DES or anonymous (RFC 9325 §4.1-4.2); TLS 1.3 suites likewise;
* the chain valid for the node's development CA and its host name (Python's ``ssl`` with
  only ``node.ca`` trusted, as the SDK does);
* no TLS compression (CRIME, RFC 9325 §3.3), secure renegotiation (RFC 5746) signalled and
  client-initiated renegotiation refused (RFC 9325 §3.5).

Every probe has a socket timeout, so the scan is bounded (about 200 short handshakes).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest
from nassl._nassl import OpenSSLError
from nassl.legacy_ssl_client import LegacySslClient
from nassl.ssl_client import BaseSslClient, OpenSslVerifyEnum, OpenSslVersionEnum, SslClient

if TYPE_CHECKING:
    from tests.api.conftest import Server

#: Seconds one probe may wait on the socket; loopback answers in milliseconds.
PROBE_TIMEOUT = 5.0
#: Renegotiations attempted on one connection (sslyze's client-renegotiation DoS check).
RENEGOTIATIONS = 10
#: Every suite an OpenSSL build knows, weak ones included.
ALL_SUITES = "ALL:COMPLEMENTOFALL"
#: TLS 1.3 suites (RFC 8446 §B.4).
TLS13_SUITES = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
)

REFUSED = {
    "ssl2": OpenSslVersionEnum.SSLV2,
    "ssl3": OpenSslVersionEnum.SSLV3,
    "tls1_0": OpenSslVersionEnum.TLSV1,
    "tls1_1": OpenSslVersionEnum.TLSV1_1,
}

#: OpenSSL names of the TLS 1.2 suites the server may accept: ECDHE key exchange, an AEAD.
TLS12_ALLOWED = {
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305",
}
TLS13_ALLOWED = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}


def _is_weak(name: str) -> list[str]:
    """The weak families an OpenSSL suite name belongs to (empty: none)."""
    families = []
    # OpenSSL names static-RSA suites without a key-exchange prefix (AES128-SHA, DES-CBC3-SHA);
    # ECDH-, DH-, PSK- and SRP- suites have no forward secrecy either. Anonymous ones follow.
    kx = name.split("-", 1)[0]
    if kx not in {"ECDHE", "DHE", "EDH", "AECDH", "ADH"} and not name.startswith("TLS_"):
        families.append("static key exchange (RSA, ECDH, PSK)")
    if name.endswith("-SHA") and "GCM" not in name and "POLY1305" not in name:
        families.append("CBC with SHA-1")
    for marker, family in (
        ("NULL", "NULL"),
        ("EXP", "EXPORT"),
        ("RC4", "RC4"),
        ("DES", "DES/3DES"),
        ("ADH", "anonymous"),
        ("AECDH", "anonymous"),
        ("ANON", "anonymous"),
    ):
        if marker in name.upper():
            families.append(family)
    return families


@contextmanager
def _connect(
    port: int, client_class: type[BaseSslClient], version: OpenSslVersionEnum, suites: str
) -> Iterator[BaseSslClient]:
    """A handshake offering ``version`` and ``suites`` only; raises if the server refuses."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT)
    client = client_class(
        underlying_socket=sock, ssl_version=version, ssl_verify=OpenSslVerifyEnum.NONE
    )
    try:
        if version == OpenSslVersionEnum.TLSV1_3:
            assert isinstance(client, SslClient)
            client.set_ciphersuites(suites)
        else:
            client.set_cipher_list(suites)
        if version != OpenSslVersionEnum.SSLV2:  # SSL 2.0 has no extensions
            client.set_tlsext_host_name("localhost")
        client.do_handshake()
        yield client
    finally:
        client.shutdown()
        sock.close()


def _accepts(
    port: int, client_class: type[BaseSslClient], version: OpenSslVersionEnum, suites: str
) -> str | None:
    """The suite negotiated when offering ``suites`` with ``version``, ``None`` if refused."""
    try:
        with _connect(port, client_class, version, suites) as client:
            return client.get_current_cipher_name()
    except (OpenSSLError, OSError):  # an alert, a reset or a closed socket: refused
        return None


def _suite_names(client_class: type[BaseSslClient], version: OpenSslVersionEnum) -> list[str]:
    """Every suite name a client build can offer for ``version``."""
    client = client_class(ssl_version=version, ssl_verify=OpenSslVerifyEnum.NONE)
    client.set_cipher_list(ALL_SUITES)
    return client.get_cipher_list()


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


@pytest.mark.parametrize("protocol", sorted(REFUSED))
def test_old_protocol_refused(server: Server, protocol: str) -> None:
    """SSL 2.0/3.0 and TLS 1.0/1.1 complete no handshake, whatever suite is offered."""
    version = REFUSED[protocol]
    # The legacy build can offer these versions: otherwise a refusal would prove nothing.
    assert _suite_names(LegacySslClient, version)
    assert _accepts(_port(server), LegacySslClient, version, ALL_SUITES) is None


@pytest.mark.parametrize("client_class", [LegacySslClient, SslClient], ids=["legacy", "modern"])
def test_tls12_only_strong_suites(server: Server, client_class: type[BaseSslClient]) -> None:
    """Each TLS 1.2 suite alone: the accepted ones are ECDHE + AEAD, none weak."""
    names = _suite_names(client_class, OpenSslVersionEnum.TLSV1_2)
    offered_families = {family for name in names for family in _is_weak(name)}
    if client_class is LegacySslClient:
        # The probe really offers the weak families (the legacy build still has them all).
        assert offered_families >= {
            "static key exchange (RSA, ECDH, PSK)",
            "CBC with SHA-1",
            "NULL",
            "EXPORT",
            "RC4",
            "DES/3DES",
            "anonymous",
        }
    port = _port(server)
    accepted = {
        name
        for name in names
        if _accepts(port, client_class, OpenSslVersionEnum.TLSV1_2, name) is not None
    }
    assert accepted, "TLS 1.2 must be accepted"
    assert {name: _is_weak(name) for name in accepted if _is_weak(name)} == {}
    assert accepted <= TLS12_ALLOWED


def test_tls13_accepted_with_strong_suites(server: Server) -> None:
    """TLS 1.3 is accepted, with the AEAD suites only (CCM_8's short tag refused)."""
    port = _port(server)
    accepted = {
        suite
        for suite in TLS13_SUITES
        if _accepts(port, SslClient, OpenSslVersionEnum.TLSV1_3, suite) is not None
    }
    assert accepted
    assert accepted <= TLS13_ALLOWED


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1_2", "tls1_3"]
)
def test_chain_valid_for_dev_ca(server: Server, host: str, version: ssl.TLSVersion) -> None:
    """TLS 1.2 and 1.3 verify against ``node.ca`` alone, host name and address checked."""
    context = ssl.create_default_context(cafile=str(server.ca))
    context.minimum_version = context.maximum_version = version
    with (
        socket.create_connection(("127.0.0.1", _port(server)), timeout=PROBE_TIMEOUT) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        assert tls.version() == ("TLSv1.2" if version == ssl.TLSVersion.TLSv1_2 else "TLSv1.3")
        assert tls.compression() is None


def test_no_compression_and_secure_renegotiation(server: Server) -> None:
    """No compression even when offered; RFC 5746 signalled; client renegotiation refused."""
    port = _port(server)
    with _connect(port, LegacySslClient, OpenSslVersionEnum.TLSV1_2, ALL_SUITES) as client:
        assert isinstance(client, LegacySslClient)
        assert client.get_available_compression_methods(), "the probe offers compression"
        assert client.get_current_compression_method() is None
        assert client.get_secure_renegotiation_support()
        refused = False
        try:
            for _ in range(RENEGOTIATIONS):
                client.do_renegotiate()
        except (OpenSSLError, OSError):
            refused = True
        assert refused, "the server accepted client-initiated renegotiation"
