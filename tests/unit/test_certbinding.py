"""RFC 8705 §3 certificate binding as pure functions, and client certificates of the local CA.

The thumbprint is checked against ``cryptography``'s own certificate fingerprint (an
independent SHA-256 of the DER), never against Herald's formula restated.
"""

from __future__ import annotations

import base64
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given
from hypothesis import strategies as st

from herald.crypto.certbinding import (
    X5T_S256,
    binding_holds,
    cnf_claim,
    is_thumbprint,
    parse_cnf,
    thumbprint,
)
from herald.crypto.tls import (
    create_dev_ca,
    issue_client_cert,
    server_ssl_context,
    write_client_cert,
    write_dev_tls,
)
from herald.errors import ConfigError, InvalidToken
from herald.server.tls_extension import THUMBPRINT_KEY, client_thumbprint, tls_extension

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def fingerprint_b64url(cert: x509.Certificate) -> str:
    digest = cert.fingerprint(hashes.SHA256())
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


@pytest.fixture(scope="module")
def ca() -> tuple[bytes, bytes]:
    return create_dev_ca(now=NOW)


@pytest.fixture(scope="module")
def client_pem(ca: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    return issue_client_cert(*ca, "app_0123456789abcdef0123", now=NOW)


# -- thumbprints --------------------------------------------------------------------------------
def test_thumbprint_is_base64url_sha256_of_the_der(client_pem: tuple[bytes, bytes]) -> None:
    cert = x509.load_pem_x509_certificate(client_pem[0])
    value = thumbprint(cert.public_bytes(serialization.Encoding.DER))
    assert value == fingerprint_b64url(cert)
    assert len(value) == 43
    assert is_thumbprint(value)


@given(st.binary(max_size=2048))
def test_every_thumbprint_is_well_formed_and_parses_back(der: bytes) -> None:
    value = thumbprint(der)
    assert is_thumbprint(value)
    assert parse_cnf(cnf_claim(value)) == value


GOOD = thumbprint(b"certificate")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(GOOD[:-1], id="42-chars"),
        pytest.param(GOOD + "A", id="44-chars"),
        pytest.param(GOOD + "=", id="padded"),
        pytest.param(GOOD[:-1] + "B", id="non-canonical-last-char"),
        pytest.param(GOOD[:-1] + "+", id="base64-not-url"),
        pytest.param(GOOD.encode(), id="bytes"),
        pytest.param(None, id="null"),
        pytest.param(43, id="number"),
        pytest.param("", id="empty"),
        pytest.param(GOOD[:-1] + "\u0410", id="non-ascii"),
    ],
)
def test_malformed_thumbprints_are_refused(value: object) -> None:
    assert not is_thumbprint(value)
    with pytest.raises(InvalidToken):
        parse_cnf({X5T_S256: value})
    with pytest.raises(ValueError, match="thumbprint"):
        cnf_claim(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cnf",
    [
        pytest.param({X5T_S256: GOOD, "jkt": GOOD}, id="extra-member"),
        pytest.param({"jkt": GOOD}, id="dpop-jkt"),
        pytest.param({"x5t": GOOD}, id="sha1-x5t"),
        pytest.param({"X5T#S256": GOOD}, id="wrong-case"),
        pytest.param({"jwk": {"kty": "OKP"}}, id="jwk"),
        pytest.param({}, id="empty-object"),
        pytest.param([GOOD], id="array"),
        pytest.param(GOOD, id="bare-string"),
        pytest.param(None, id="null"),
    ],
)
def test_cnf_of_any_other_shape_is_refused(cnf: object) -> None:
    with pytest.raises(InvalidToken):
        parse_cnf(cnf)


@pytest.mark.parametrize(
    ("bound_to", "presented", "holds"),
    [
        pytest.param(None, None, True, id="unbound-no-cert"),
        pytest.param(None, GOOD, True, id="unbound-with-cert"),
        pytest.param(GOOD, GOOD, True, id="bound-same-cert"),
        pytest.param(GOOD, None, False, id="bound-no-cert"),
        pytest.param(GOOD, thumbprint(b"other"), False, id="bound-other-cert"),
    ],
)
def test_binding_holds(bound_to: str | None, presented: str | None, holds: bool) -> None:
    assert binding_holds(bound_to, presented) is holds


# -- the ASGI TLS extension reader --------------------------------------------------------------
def test_client_thumbprint_from_the_extension(client_pem: tuple[bytes, bytes]) -> None:
    cert = x509.load_pem_x509_certificate(client_pem[0])
    expected = fingerprint_b64url(cert)
    pem = ssl.DER_cert_to_PEM_cert(cert.public_bytes(serialization.Encoding.DER))
    standard = {"client_cert_chain": [pem], "tls_version": 0x0304, "cipher_suite": 0x1302}
    # A server with only the standard members: computed from the leaf.
    assert client_thumbprint({"extensions": {"tls": standard}}) == expected
    # Herald's protocol: the precomputed member wins.
    assert client_thumbprint({"extensions": {"tls": {**standard, THUMBPRINT_KEY: "x"}}}) == "x"
    # No certificate, no TLS, no extension at all.
    assert client_thumbprint({"extensions": {"tls": {**standard, "client_cert_chain": []}}}) is None
    assert client_thumbprint({"extensions": {"tls": {**standard, THUMBPRINT_KEY: None}}}) is None
    assert client_thumbprint({"extensions": {}}) is None
    assert client_thumbprint({}) is None


# -- client certificates of the local CA --------------------------------------------------------
def test_client_certificate_names_the_client_for_client_auth_only(
    ca: tuple[bytes, bytes], client_pem: tuple[bytes, bytes]
) -> None:
    ca_cert = x509.load_pem_x509_certificate(ca[0])
    cert = x509.load_pem_x509_certificate(client_pem[0])
    key = serialization.load_pem_private_key(client_pem[1], password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert key.public_key() == cert.public_key()
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["app_0123456789abcdef0123"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca_cert)
    assert cert.not_valid_after_utc == NOW + timedelta(days=90)


def test_client_certificate_lifetime_is_bounded(ca: tuple[bytes, bytes]) -> None:
    with pytest.raises(ValueError, match="397"):
        issue_client_cert(*ca, "app_1", now=NOW, valid_days=398)
    with pytest.raises(ValueError, match="positive"):
        issue_client_cert(*ca, "app_1", now=NOW, valid_days=0)
    late = NOW + timedelta(days=3650 - 10)
    cert = x509.load_pem_x509_certificate(issue_client_cert(*ca, "app_1", now=late)[0])
    # Never beyond the CA's own expiry.
    assert cert.not_valid_after_utc == x509.load_pem_x509_certificate(ca[0]).not_valid_after_utc


@pytest.mark.parametrize(
    "client_id",
    [
        pytest.param("", id="empty"),
        pytest.param("a" * 65, id="too-long"),
        pytest.param("app\n1", id="control"),
        pytest.param("app_\u00e9", id="non-ascii"),
    ],
)
def test_unusable_client_ids_are_refused(ca: tuple[bytes, bytes], client_id: str) -> None:
    with pytest.raises(ConfigError):
        issue_client_cert(*ca, client_id, now=NOW)


def test_client_files_are_private_and_never_overwritten(
    tmp_path: Path, client_pem: tuple[bytes, bytes]
) -> None:
    out = tmp_path / "certs"
    cert_file, key_file = write_client_cert(out, "app_1", *client_pem)
    assert cert_file.read_bytes() == client_pem[0]
    assert key_file.read_bytes() == client_pem[1]
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert out.stat().st_mode & 0o777 == 0o700
    with pytest.raises(ConfigError, match="already exists"):
        write_client_cert(out, "app_1", *client_pem)
    assert key_file.read_bytes() == client_pem[1]
    for stem in ("../app_1", ".hidden", "a/b", ""):
        with pytest.raises(ConfigError, match="file name"):
            write_client_cert(out, stem, *client_pem)


# -- the ASGI TLS extension of one real handshake (in memory, no sockets) -----------------------
#: IANA TLS cipher suite numbers (RFC 8446 B.4, RFC 5289 §3.2, RFC 7905 §2) of the suites
#: Herald's server context can negotiate with an ECDSA certificate.
IANA_SUITES = {
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
    "ECDHE-ECDSA-AES128-GCM-SHA256": 0xC02B,
    "ECDHE-ECDSA-AES256-GCM-SHA384": 0xC02C,
    "ECDHE-ECDSA-CHACHA20-POLY1305": 0xCCA9,
}


def _handshake(server: ssl.SSLObject, client: ssl.SSLObject, pipes: list[ssl.MemoryBIO]) -> None:
    s_in, s_out, c_in, c_out = pipes
    for _ in range(20):  # a TLS 1.3 handshake needs 2-3 round trips
        done = 0
        for side in (client, server):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == 2:
            return
    raise AssertionError("no handshake after 20 rounds")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_extension_of_a_real_handshake(tmp_path: Path, version: ssl.TLSVersion) -> None:
    files = write_dev_tls(tmp_path / "tls", ["localhost"], now=datetime.now(UTC))
    ca = (files.ca_cert.read_bytes(), files.ca_key.read_bytes())
    cert_file, key_file = write_client_cert(
        tmp_path / "client", "app_1", *issue_client_cert(*ca, "app_1", now=datetime.now(UTC))
    )
    server_ctx = server_ssl_context(files.cert, files.key, client_ca_file=files.ca_cert)
    client_ctx = ssl.create_default_context(cafile=str(files.ca_cert))
    client_ctx.maximum_version = version
    for present in (True, False):
        if present:
            client_ctx.load_cert_chain(cert_file, key_file)
        else:
            client_ctx = ssl.create_default_context(cafile=str(files.ca_cert))
            client_ctx.maximum_version = version
        pipes = [ssl.MemoryBIO() for _ in range(4)]
        server = server_ctx.wrap_bio(pipes[0], pipes[1], server_side=True)
        client = client_ctx.wrap_bio(pipes[2], pipes[3], server_hostname="localhost")
        _handshake(server, client, pipes)
        ext = tls_extension(server)
        assert ext["tls_version"] == (0x0304 if version is ssl.TLSVersion.TLSv1_3 else 0x0303)
        cipher = server.cipher()
        assert cipher is not None
        assert ext["cipher_suite"] == IANA_SUITES[cipher[0]]
        assert ext["client_cert_error"] is None
        if present:
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            chain = ext["client_cert_chain"]
            assert isinstance(chain, tuple)
            assert len(chain) == 1
            assert x509.load_pem_x509_certificate(str(chain[0]).encode()) == cert
            assert ext["client_cert_name"] == "CN=app_1"
            assert ext[THUMBPRINT_KEY] == fingerprint_b64url(cert)
        else:
            assert ext["client_cert_chain"] == ()
            assert ext["client_cert_name"] is None
            assert ext[THUMBPRINT_KEY] is None
