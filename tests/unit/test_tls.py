"""Development TLS material and hardened contexts, exercised over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import socket
import ssl
import stat
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from herald.crypto import tls
from herald.crypto.tls import (
    TlsFiles,
    certificate_fingerprint,
    client_ssl_context,
    create_dev_ca,
    issue_server_cert,
    server_ssl_context,
    write_dev_tls,
)
from herald.errors import ConfigError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOSTS = ["localhost", "127.0.0.1", "::1"]


def _ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def files(tmp_path: Path) -> TlsFiles:
    # Real clock here: the handshake tests check validity against the current time.
    return write_dev_tls(tmp_path / "tls", HOSTS, now=datetime.now(UTC))


@dataclass
class Handshake:
    version: str | None
    cipher: str
    compression: str | None
    alpn: str | None
    peer_der: bytes


class TlsServer:
    """An asyncio TLS server on loopback that answers ``ok`` to every connection."""

    def __init__(self, server: asyncio.Server, host: str) -> None:
        self.server = server
        self.host = host
        self.port: int = server.sockets[0].getsockname()[1]
        self.client_certs: list[dict[str, object] | None] = []

    async def connect(
        self, ctx: ssl.SSLContext, server_hostname: str, host: str | None = None
    ) -> Handshake:
        reader, writer = await asyncio.open_connection(
            host or self.host, self.port, ssl=ctx, server_hostname=server_hostname
        )
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            assert await reader.readexactly(2) == b"ok"
            return Handshake(
                version=ssl_object.version(),
                cipher=ssl_object.cipher()[0],
                compression=ssl_object.compression(),
                alpn=ssl_object.selected_alpn_protocol(),
                peer_der=ssl_object.getpeercert(binary_form=True),
            )
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


async def _start(ctx: ssl.SSLContext, host: str) -> TlsServer:
    holder: list[TlsServer] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        holder[0].client_certs.append(writer.get_extra_info("peercert"))
        try:
            writer.write(b"ok")
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, 0, ssl=ctx)
    holder.append(TlsServer(server, host))
    return holder[0]


@contextlib.asynccontextmanager
async def _serving(ctx: ssl.SSLContext, host: str = "127.0.0.1") -> AsyncIterator[TlsServer]:
    srv = await _start(ctx, host)
    try:
        yield srv
    finally:
        srv.server.close()
        await srv.server.wait_closed()


@pytest.fixture
async def server(files: TlsFiles) -> AsyncIterator[TlsServer]:
    async with _serving(server_ssl_context(files.cert, files.key)) as srv:
        yield srv


@contextlib.contextmanager
def _legacy_tls_allowed() -> Iterator[None]:
    # Setting TLS 1.0/1.1 bounds emits DeprecationWarning, which this suite turns into errors.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _tls12_client(files: TlsFiles, cipher: str) -> ssl.SSLContext:
    ctx = client_ssl_context(files.ca_cert)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(cipher)
    return ctx


# --- handshakes ----------------------------------------------------------------------------


async def test_chain_verifies_by_name_and_negotiates_tls13(
    server: TlsServer, files: TlsFiles
) -> None:
    ctx = client_ssl_context(files.ca_cert)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    result = await server.connect(ctx, "localhost")
    assert result.version == "TLSv1.3"
    assert result.alpn == "http/1.1"
    # The peer the client verified is the leaf we issued.
    assert hashlib.sha256(result.peer_der).hexdigest() == certificate_fingerprint(
        files.cert.read_bytes()
    )


async def test_compression_is_off(server: TlsServer, files: TlsFiles) -> None:
    result = await server.connect(client_ssl_context(files.ca_cert), "localhost")
    assert result.compression is None


async def test_ipv4_address_matches_ip_san(server: TlsServer, files: TlsFiles) -> None:
    result = await server.connect(client_ssl_context(files.ca_cert), "127.0.0.1")
    assert result.version == "TLSv1.3"


async def test_ipv6_loopback(files: TlsFiles) -> None:
    if not _ipv6_loopback_available():
        pytest.skip("this host has no IPv6 loopback")
    async with _serving(server_ssl_context(files.cert, files.key), "::1") as srv:
        result = await srv.connect(client_ssl_context(files.ca_cert), "::1")
    assert result.version == "TLSv1.3"


def _permissive_server_context(files: TlsFiles) -> ssl.SSLContext:
    # The control: a server that accepts anything, to show that a refusal below comes from
    # server_ssl_context's policy and not from the client being unable to connect at all.
    with _legacy_tls_allowed():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.load_cert_chain(files.cert, files.key)
    return ctx


async def _assert_refused(server: TlsServer, ctx: ssl.SSLContext) -> None:
    # asyncio closes the server side of a failed handshake abruptly, so the client sees
    # either the TLS alert (SSLError) or a reset; either way no connection is handed over.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await server.connect(ctx, "localhost")
    assert server.client_certs == []


async def test_tls11_client_is_refused(server: TlsServer, files: TlsFiles) -> None:
    with _legacy_tls_allowed():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    # SECLEVEL=0 lets OpenSSL 3 offer TLS 1.1 at all (it needs SHA-1 signatures).
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.load_verify_locations(files.ca_cert)
    try:
        async with _serving(_permissive_server_context(files)) as control:
            assert (await control.connect(ctx, "localhost")).version == "TLSv1.1"
    except (ssl.SSLError, ConnectionError):
        # This OpenSSL build cannot speak TLS 1.1 at all; the refusal below still must hold.
        pass
    await _assert_refused(server, ctx)


async def test_tls12_cbc_cipher_is_refused(server: TlsServer, files: TlsFiles) -> None:
    ctx = _tls12_client(files, "ECDHE-ECDSA-AES128-SHA")
    async with _serving(_permissive_server_context(files)) as control:
        assert (await control.connect(ctx, "localhost")).cipher == "ECDHE-ECDSA-AES128-SHA"
    await _assert_refused(server, ctx)


async def test_tls12_ecdhe_gcm_works(server: TlsServer, files: TlsFiles) -> None:
    ctx = _tls12_client(files, "ECDHE-ECDSA-AES128-GCM-SHA256")
    result = await server.connect(ctx, "localhost")
    assert result.version == "TLSv1.2"
    assert result.cipher == "ECDHE-ECDSA-AES128-GCM-SHA256"


async def test_system_store_does_not_trust_dev_ca(server: TlsServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await server.connect(client_ssl_context(), "localhost")


async def test_wrong_hostname_fails(server: TlsServer, files: TlsFiles) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match=r"[Hh]ostname mismatch"):
        await server.connect(client_ssl_context(files.ca_cert), "push.example.com")


async def test_client_certificate_is_optional(files: TlsFiles) -> None:
    ctx = server_ssl_context(files.cert, files.key, client_ca_file=files.ca_cert)
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    async with _serving(ctx) as srv:
        result = await srv.connect(client_ssl_context(files.ca_cert), "localhost")
    assert result.version == "TLSv1.3"
    assert srv.client_certs == [None]


# --- context settings ------------------------------------------------------------------------


def test_server_context_settings(files: TlsFiles) -> None:
    ctx = server_ssl_context(files.cert, files.key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED
    for option in (
        ssl.OP_NO_COMPRESSION,
        ssl.OP_NO_RENEGOTIATION,
        ssl.OP_CIPHER_SERVER_PREFERENCE,
        ssl.OP_SINGLE_ECDH_USE,  # 0 on OpenSSL >= 1.1, where fresh keys are the only mode
    ):
        assert ctx.options & option == option
    assert ctx.verify_mode == ssl.CERT_NONE
    tls12 = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    for cipher in tls12:
        assert cipher["kea"] == "kx-ecdhe"
        assert cipher["aead"] is True
        assert "SHA1" not in cipher["description"]


def test_client_context_settings(files: TlsFiles) -> None:
    for ctx in (client_ssl_context(), client_ssl_context(files.ca_cert)):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        assert ctx.check_hostname is True
        assert ctx.verify_mode == ssl.CERT_REQUIRED
    # With a CA file, only that CA is trusted.
    assert client_ssl_context(files.ca_cert).cert_store_stats()["x509_ca"] == 1


# --- certificates --------------------------------------------------------------------------


def test_ca_certificate_profile() -> None:
    cert_pem, key_pem = create_dev_ca(now=NOW)
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert b"BEGIN PRIVATE KEY" in key_pem  # PKCS#8, unencrypted
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca
    assert basic.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + timedelta(days=3650)
    cert.verify_directly_issued_by(cert)


def test_server_certificate_profile() -> None:
    ca_pem, ca_key_pem = create_dev_ca(now=NOW)
    chain_pem, key_pem = issue_server_cert(ca_pem, ca_key_pem, HOSTS, now=NOW)
    leaf, ca = x509.load_pem_x509_certificates(chain_pem)
    assert ca == x509.load_pem_x509_certificate(ca_pem)
    leaf.verify_directly_issued_by(ca)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert leaf.public_key() == key.public_key()

    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    basic = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert not basic.value.ca
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert leaf.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert leaf.not_valid_after_utc == NOW + timedelta(days=397)
    assert leaf.serial_number != ca.serial_number


def test_server_certificate_expiry_is_capped_at_the_ca() -> None:
    ca_pem, ca_key_pem = create_dev_ca(now=NOW, valid_days=30)
    chain_pem, _ = issue_server_cert(ca_pem, ca_key_pem, ["localhost"], now=NOW)
    leaf = x509.load_pem_x509_certificate(chain_pem)
    assert leaf.not_valid_after_utc == NOW + timedelta(days=30)
    with pytest.raises(ConfigError, match="expired"):
        issue_server_cert(ca_pem, ca_key_pem, ["localhost"], now=NOW + timedelta(days=31))


@pytest.mark.parametrize("hostnames", [[], ["bad host"], [""], ["bücher.example"], "localhost"])
def test_invalid_hostnames_are_refused(hostnames: list[str]) -> None:
    ca_pem, ca_key_pem = create_dev_ca(now=NOW)
    with pytest.raises(ConfigError, match="hostnames"):
        issue_server_cert(ca_pem, ca_key_pem, hostnames, now=NOW)


def test_mismatched_or_invalid_ca_material_is_refused() -> None:
    ca_pem, ca_key_pem = create_dev_ca(now=NOW)
    _, other_key = create_dev_ca(now=NOW)
    with pytest.raises(ConfigError, match="does not belong"):
        issue_server_cert(ca_pem, other_key, ["localhost"], now=NOW)
    with pytest.raises(ConfigError, match="not valid"):
        issue_server_cert(b"garbage", ca_key_pem, ["localhost"], now=NOW)
    # A leaf certificate with its own key must not be usable as an issuer.
    leaf_pem, leaf_key = issue_server_cert(ca_pem, ca_key_pem, ["a.example"], now=NOW)
    with pytest.raises(ConfigError, match="not a certificate authority"):
        issue_server_cert(leaf_pem, leaf_key, ["localhost"], now=NOW)


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        create_dev_ca(now=datetime(2026, 1, 1))  # noqa: DTZ001


def test_fingerprint_is_sha256_of_leaf_der() -> None:
    ca_pem, ca_key_pem = create_dev_ca(now=NOW)
    chain_pem, _ = issue_server_cert(ca_pem, ca_key_pem, ["localhost"], now=NOW)
    leaf_pem = chain_pem.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    expected = hashlib.sha256(ssl.PEM_cert_to_DER_cert(leaf_pem.decode())).hexdigest()
    assert certificate_fingerprint(chain_pem) == expected
    assert certificate_fingerprint(ca_pem) != expected
    with pytest.raises(ConfigError):
        certificate_fingerprint(b"not a certificate")


# --- files ---------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_file_modes(files: TlsFiles) -> None:
    assert _mode(files.ca_key.parent) == 0o700
    assert _mode(files.ca_key) == 0o600
    assert _mode(files.key) == 0o600
    assert _mode(files.ca_cert) == 0o644
    assert _mode(files.cert) == 0o644
    assert sorted(p.name for p in files.cert.parent.iterdir()) == [
        "ca.key",
        "ca.pem",
        "server.key",
        "server.pem",
    ]


def test_key_modes_hold_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        written = write_dev_tls(tmp_path / "tls", ["localhost"], now=NOW)
    finally:
        os.umask(old)
    assert _mode(written.key) == 0o600
    assert _mode(written.ca_key) == 0o600
    assert _mode(written.key.parent) == 0o700


def test_refuses_to_overwrite(files: TlsFiles) -> None:
    before = files.key.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        write_dev_tls(files.key.parent, HOSTS, now=NOW)
    assert files.key.read_bytes() == before


def test_refuses_a_single_leftover_file(tmp_path: Path) -> None:
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir(mode=0o700)
    (tls_dir / "server.pem").write_bytes(b"old")
    with pytest.raises(ConfigError, match=r"server\.pem already exists"):
        write_dev_tls(tls_dir, HOSTS, now=NOW)
    assert sorted(p.name for p in tls_dir.iterdir()) == ["server.pem"]


def test_refuses_a_symlink_in_place_of_a_key(tmp_path: Path) -> None:
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    (tls_dir / "server.key").symlink_to(target)
    with pytest.raises(ConfigError, match="already exists"):
        write_dev_tls(tls_dir, HOSTS, now=NOW)
    assert not target.exists()


def test_refuses_a_directory_readable_by_others(tmp_path: Path) -> None:
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    tls_dir.chmod(0o755)
    with pytest.raises(ConfigError, match="0700"):
        write_dev_tls(tls_dir, HOSTS, now=NOW)
    assert list(tls_dir.iterdir()) == []


def test_existing_private_directory_is_used(tmp_path: Path) -> None:
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir(mode=0o700)
    written = write_dev_tls(tls_dir, HOSTS, now=NOW)
    assert written.cert.is_file()


# --- configuration errors ------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["cert", "key"])
def test_missing_file_is_a_config_error(files: TlsFiles, missing: str) -> None:
    gone = files.cert if missing == "cert" else files.key
    key_pem = files.key.read_text()
    gone.unlink()
    with pytest.raises(ConfigError) as info:
        server_ssl_context(files.cert, files.key)
    message = str(info.value)
    assert str(gone) in message
    assert "herald init" in message
    assert "HERALD_TLS_CERT_FILE" in message
    assert "PRIVATE KEY" not in message
    assert key_pem.splitlines()[1] not in message


def test_mismatched_key_is_a_config_error_without_key_material(tmp_path: Path) -> None:
    one = write_dev_tls(tmp_path / "one", HOSTS, now=NOW)
    two = write_dev_tls(tmp_path / "two", HOSTS, now=NOW)
    with pytest.raises(ConfigError) as info:
        server_ssl_context(one.cert, two.key)
    message = str(info.value)
    assert str(one.cert) in message
    assert str(two.key) in message
    assert "HERALD_TLS_KEY_FILE" in message
    for line in two.key.read_text().splitlines()[1:-1]:
        assert line not in message
    assert info.value.__cause__ is None


def test_garbage_and_encrypted_keys_are_config_errors(files: TlsFiles, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"not a key")
    with pytest.raises(ConfigError, match="could not load"):
        server_ssl_context(files.cert, garbage)
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    # Must fail instead of prompting for a passphrase on the terminal.
    with pytest.raises(ConfigError, match="could not load"):
        server_ssl_context(files.cert, encrypted)


def test_missing_ca_files_are_config_errors(files: TlsFiles, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=r"nope\.pem"):
        client_ssl_context(missing)
    with pytest.raises(ConfigError, match=r"nope\.pem"):
        server_ssl_context(files.cert, files.key, client_ca_file=missing)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a certificate")
    with pytest.raises(ConfigError, match=r"garbage\.pem"):
        client_ssl_context(garbage)


def test_public_names() -> None:
    assert sorted(tls.__all__) == [
        "CA_VALID_DAYS",
        "CLIENT_CERT_VALID_DAYS",
        "CLOCK_SKEW_BACKDATE",
        "SERVER_CERT_VALID_DAYS",
        "TLS12_CIPHERS",
        "TlsFiles",
        "certificate_fingerprint",
        "client_ssl_context",
        "create_dev_ca",
        "issue_client_cert",
        "issue_server_cert",
        "server_ssl_context",
        "write_client_cert",
        "write_dev_tls",
    ]
