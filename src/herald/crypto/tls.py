"""TLS material for development and hardened :mod:`ssl` contexts.

Herald serves TLS by default. For development and small self-hosted set-ups, ``herald init``
creates a private certificate authority and a server certificate signed by it
(:func:`write_dev_tls`); the CA certificate is then handed to the SDK or CLI
(:func:`client_ssl_context`). Production deployments point ``HERALD_TLS_CERT_FILE`` and
``HERALD_TLS_KEY_FILE`` at certificates from a real CA; both paths end in
:func:`server_ssl_context`.

Everything is done with ``cryptography`` (no ``openssl`` subprocess). The clock is passed in
as ``now`` so that issuance is reproducible in tests; key generation and serial numbers use
the operating system's CSPRNG through ``cryptography``.

Choices, with their sources:

* Keys are ECDSA P-256 with SHA-256 signatures: universally supported in TLS 1.2 and 1.3
  (RFC 8446 §9.1 makes ``ecdsa_secp256r1_sha256`` mandatory to implement) and far cheaper
  than RSA.
* The server accepts TLS 1.2 and 1.3 only (RFC 8996 deprecates 1.0 and 1.1; RFC 9325 §3.1.1
  says SHOULD NOT 1.1 and MUST support 1.2). TLS 1.2 is restricted to forward-secret ECDHE
  with AEAD ciphers (RFC 9325 §4.1-4.2): no CBC, no static RSA key exchange, no SHA-1 MACs.
  TLS 1.3 suites are all AEAD with ephemeral key exchange by design (RFC 8446 §1.2), so the
  library defaults are kept for them.
* Compression is off (CRIME, RFC 9325 §3.3) and renegotiation is refused (RFC 9325 §3.5;
  TLS 1.3 removed it altogether).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import ssl
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from herald.errors import ConfigError

__all__ = [
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

#: Lifetime of the development CA (ten years): clients trust it once, so it should outlive
#: many server certificates.
CA_VALID_DAYS = 3650

#: Lifetime of a server certificate: 397 days is the CA/Browser Forum Baseline Requirements
#: maximum (§6.3.2); some clients apply that ceiling to every root, private ones included.
SERVER_CERT_VALID_DAYS = 397

#: Default lifetime of a client certificate for mutual TLS (``herald app cert issue``);
#: the server certificate's ceiling applies to it as well.
CLIENT_CERT_VALID_DAYS = 90

#: ``notBefore`` is set this far in the past so that a client whose clock runs slightly
#: behind the issuing machine does not reject a freshly issued certificate.
CLOCK_SKEW_BACKDATE = timedelta(minutes=5)

#: OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are configured separately by OpenSSL and
#: are all AEAD). ECDHE gives forward secrecy; AES-GCM and ChaCha20-Poly1305 are the AEADs of
#: RFC 9325 §4.2. The exclusions keep the intent if OpenSSL's aliases ever widen.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!PSK"

_ALPN_PROTOCOLS = ["http/1.1"]
# ub-common-name, RFC 5280 Appendix A.1: the longest commonName a certificate may carry.
_COMMON_NAME_MAX = 64
_CURVE = ec.SECP256R1()
_SERVER_HINT = (
    "run `herald init` to create development certificates, "
    "or set HERALD_TLS_CERT_FILE/HERALD_TLS_KEY_FILE"
)

# File names inside the TLS directory and the modes they are created with.
_CA_CERT_NAME, _CA_KEY_NAME = "ca.pem", "ca.key"
_CERT_NAME, _KEY_NAME = "server.pem", "server.key"
_PUBLIC_MODE, _PRIVATE_MODE, _DIR_MODE = 0o644, 0o600, 0o700


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Paths of the files written by :func:`write_dev_tls`.

    Attributes:
        ca_cert: The development CA certificate (PEM); give it to clients to trust.
        ca_key: The CA private key (PEM PKCS#8, mode 0600); needed only to issue more certs.
        cert: The server certificate chain (PEM: leaf, then the CA).
        key: The server private key (PEM PKCS#8, mode 0600).
    """

    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path


def create_dev_ca(
    common_name: str = "Herald development CA",
    *,
    now: datetime,
    valid_days: int = CA_VALID_DAYS,
) -> tuple[bytes, bytes]:
    """Create a self-signed certificate authority for development TLS.

    Args:
        common_name: The CA's subject common name.
        now: The current time (timezone-aware).
        valid_days: Days from ``now`` until the CA expires.

    Returns:
        ``(ca_cert_pem, ca_key_pem)``; the key is unencrypted PEM PKCS#8.

    Raises:
        ValueError: ``now`` is naive or ``valid_days`` is not positive.
    """
    _check_validity(now, valid_days)
    key = ec.generate_private_key(_CURVE)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_BACKDATE)
        .not_valid_after(now + timedelta(days=valid_days))
        # path_length=0: this CA may sign leaf certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def issue_server_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    hostnames: Sequence[str],
    *,
    now: datetime,
    valid_days: int = SERVER_CERT_VALID_DAYS,
) -> tuple[bytes, bytes]:
    """Issue a TLS server certificate signed by a CA from :func:`create_dev_ca`.

    Host names become ``dNSName`` entries and IP literals ``iPAddress`` entries of the subject
    alternative name; clients match only the SAN (RFC 6125 §6.4.4), the common name is
    informational. The expiry is capped at the CA's own expiry.

    Args:
        ca_cert_pem: The issuing CA certificate (PEM).
        ca_key_pem: The issuing CA private key (unencrypted PEM).
        hostnames: Names and IP addresses the server answers on, e.g.
            ``["localhost", "127.0.0.1", "::1"]``.
        now: The current time (timezone-aware).
        valid_days: Days from ``now`` until the certificate expires.

    Returns:
        ``(cert_chain_pem, key_pem)``: the leaf followed by the CA certificate, and the
        unencrypted PEM PKCS#8 server key.

    Raises:
        ConfigError: ``hostnames`` is empty or invalid, or the CA material is unusable.
        ValueError: ``now`` is naive or ``valid_days`` is not positive.
    """
    _check_validity(now, valid_days)
    ca_cert, ca_key = _load_ca(ca_cert_pem, ca_key_pem)
    san = _subject_alt_names(hostnames)
    not_after = min(now + timedelta(days=valid_days), ca_cert.not_valid_after_utc)
    if not_after <= now:
        raise ConfigError("the development CA has expired; delete the TLS directory and rerun")
    key = ec.generate_private_key(_CURVE)
    cert = (
        _leaf_builder(ca_cert, ca_key, key, now=now, not_after=not_after)
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
        serialization.Encoding.PEM
    )
    return chain, _key_pem(key)


def issue_client_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    client_id: str,
    *,
    now: datetime,
    valid_days: int = CLIENT_CERT_VALID_DAYS,
) -> tuple[bytes, bytes]:
    """Issue a TLS client certificate for an app, signed by a CA from :func:`create_dev_ca`.

    The subject common name is the app's client id; the extended key usage is
    ``clientAuth`` only, so the certificate cannot serve as a server certificate (and
    OpenSSL's server-side verification requires that purpose, RFC 5280 §4.2.1.12). Access
    tokens requested over a connection presenting it are bound to it (RFC 8705 §3).

    Args:
        ca_cert_pem: The issuing CA certificate (PEM).
        ca_key_pem: The issuing CA private key (unencrypted PEM).
        client_id: The app's client id (printable ASCII, at most 64 characters: the
            ``commonName`` upper bound of RFC 5280 Appendix A).
        now: The current time (timezone-aware).
        valid_days: Days from ``now`` until the certificate expires, at most
            :data:`SERVER_CERT_VALID_DAYS`; also capped at the CA's own expiry.

    Returns:
        ``(cert_pem, key_pem)``: the leaf certificate and its unencrypted PEM PKCS#8
        ECDSA P-256 key.

    Raises:
        ConfigError: ``client_id`` is unusable as a name, or the CA material is unusable or
            expired.
        ValueError: ``now`` is naive or ``valid_days`` is not in 1..397.
    """
    _check_validity(now, valid_days)
    if valid_days > SERVER_CERT_VALID_DAYS:
        raise ValueError(f"valid_days must be at most {SERVER_CERT_VALID_DAYS}")
    if (
        not client_id
        or len(client_id) > _COMMON_NAME_MAX
        or not client_id.isascii()
        or not client_id.isprintable()
    ):
        raise ConfigError("the client id must be 1-64 printable ASCII characters")
    ca_cert, ca_key = _load_ca(ca_cert_pem, ca_key_pem)
    not_after = min(now + timedelta(days=valid_days), ca_cert.not_valid_after_utc)
    if not_after <= now:
        raise ConfigError("the development CA has expired; it can issue no more certificates")
    key = ec.generate_private_key(_CURVE)
    cert = (
        _leaf_builder(ca_cert, ca_key, key, now=now, not_after=not_after)
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, client_id)]))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def write_dev_tls(tls_dir: Path, hostnames: Sequence[str], *, now: datetime) -> TlsFiles:
    """Create a development CA and server certificate as files in ``tls_dir``.

    The directory is created with mode 0700 (an existing one must already be private to the
    current user). Private keys are written unencrypted: a server that must start unattended
    would otherwise need the passphrase somewhere next to them, and the 0700 directory is the
    actual protection. Each file is created with ``O_CREAT | O_EXCL`` and its final mode
    before any byte is written, so a key is never readable by others, not even briefly, and
    an existing file (or a planted symlink) is never overwritten.

    Args:
        tls_dir: Directory to create or use, e.g. ``<data_dir>/tls``.
        hostnames: Names and IP addresses for the server certificate.
        now: The current time (timezone-aware).

    Returns:
        The paths of the four files written.

    Raises:
        ConfigError: A file already exists, the directory is not private, or the host names
            are invalid.
    """
    files = TlsFiles(
        ca_cert=tls_dir / _CA_CERT_NAME,
        ca_key=tls_dir / _CA_KEY_NAME,
        cert=tls_dir / _CERT_NAME,
        key=tls_dir / _KEY_NAME,
    )
    ca_cert, ca_key = create_dev_ca(now=now)
    chain, key = issue_server_cert(ca_cert, ca_key, hostnames, now=now)
    contents = [
        (_CA_KEY_NAME, ca_key, _PRIVATE_MODE),
        (_KEY_NAME, key, _PRIVATE_MODE),
        (_CA_CERT_NAME, ca_cert, _PUBLIC_MODE),
        (_CERT_NAME, chain, _PUBLIC_MODE),
    ]
    dir_fd = _open_private_dir(tls_dir)
    try:
        # Check every name first so that an earlier run is reported, not half-repeated.
        # O_EXCL below still guarantees no overwrite if a file appears in between.
        _refuse_existing([name for name, _, _ in contents], dir_fd, tls_dir)
        _write_all(contents, dir_fd, tls_dir)
    finally:
        os.close(dir_fd)
    return files


def write_client_cert(
    out_dir: Path, stem: str, cert_pem: bytes, key_pem: bytes
) -> tuple[Path, Path]:
    """Write a client certificate and its key as ``<stem>.pem`` and ``<stem>.key``.

    ``out_dir`` is created with mode 0700 if it does not exist. The key file is created with
    mode 0600 before any byte is written, and neither file overwrites anything (``O_EXCL``,
    no symlinks followed), as in :func:`write_dev_tls`.

    Args:
        out_dir: Directory for the two files.
        stem: File name without extension (letters, digits, ``._-``).
        cert_pem: The certificate (PEM).
        key_pem: Its private key (PEM).

    Returns:
        ``(cert_path, key_path)``.

    Raises:
        ConfigError: A file exists already, ``stem`` is not a plain file name, or
            ``out_dir`` is not a directory.
    """
    if (
        not stem
        or stem.startswith(".")
        or not all(c.isascii() and (c.isalnum() or c in "._-") for c in stem)
    ):
        raise ConfigError(f"{stem!r} cannot be used as a file name")
    cert_name, key_name = stem + ".pem", stem + ".key"
    out_dir.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    try:
        dir_fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise ConfigError(f"{out_dir} is not a directory (or is a symlink)") from None
    try:
        _refuse_existing([key_name, cert_name], dir_fd, out_dir)
        _write_all(
            [(key_name, key_pem, _PRIVATE_MODE), (cert_name, cert_pem, _PUBLIC_MODE)],
            dir_fd,
            out_dir,
        )
    finally:
        os.close(dir_fd)
    return out_dir / cert_name, out_dir / key_name


def server_ssl_context(
    cert_file: Path,
    key_file: Path,
    *,
    client_ca_file: Path | None = None,
) -> ssl.SSLContext:
    """Build the hardened server-side TLS context.

    Mutual TLS is optional per application: with ``client_ca_file`` the server requests a
    client certificate and verifies any that is sent (``CERT_OPTIONAL``), but a client without
    one can still connect and authenticate at the HTTP layer (OAuth client credentials).
    Whether a certificate is *required* is decided per application above this layer.

    Args:
        cert_file: PEM certificate chain, leaf first.
        key_file: PEM private key, unencrypted (encrypted keys are refused rather than
            prompting for a passphrase on the terminal).
        client_ca_file: PEM CA bundle to verify client certificates against, if any.

    Returns:
        A context for ``asyncio.start_server(..., ssl=ctx)`` or an ASGI server.

    Raises:
        ConfigError: A file is missing or unreadable, or the certificate and key are invalid
            or do not match. The message names the file, never its contents.
    """
    # RFC 9325 §3.1.1: TLS 1.2 at least; the maximum stays at the library's (1.3), which is
    # negotiated whenever the client offers it (RFC 8446 §4.2.1).
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= (
        ssl.OP_NO_COMPRESSION  # RFC 9325 §3.3: CRIME
        | ssl.OP_NO_RENEGOTIATION  # RFC 9325 §3.5: no TLS 1.2 renegotiation at all
        | ssl.OP_CIPHER_SERVER_PREFERENCE  # our AEAD order wins over a client's weaker choice
        # Fresh ECDHE key per handshake for forward secrecy. OpenSSL >= 1.1 always does this
        # and defines the flag as 0; it is kept so the requirement is stated, not assumed.
        | ssl.OP_SINGLE_ECDH_USE
    )
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.set_alpn_protocols(_ALPN_PROTOCOLS)
    for path in (cert_file, key_file):
        if not path.is_file():
            raise ConfigError(f"TLS file {path} does not exist or is not a file; {_SERVER_HINT}")
    try:
        ctx.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except OSError as exc:  # ssl.SSLError is an OSError too
        raise ConfigError(
            f"could not load TLS certificate {cert_file} with key {key_file} "
            f"({_reason(exc)}); {_SERVER_HINT}"
        ) from None
    if client_ca_file is not None:
        _load_verify(ctx, client_ca_file, "client CA file")
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_ssl_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Build the client-side TLS context used by the SDK and the CLI.

    Args:
        ca_file: PEM CA bundle to trust (e.g. the development CA); ``None`` uses the
            system trust store.

    Returns:
        A context that verifies the server's chain and host name and speaks TLS 1.2+.

    Raises:
        ConfigError: ``ca_file`` is missing or not a valid PEM CA bundle.
    """
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError(f"CA file {ca_file} does not exist or is not a file")
    try:
        # With a cafile only that CA is trusted (the system store is not loaded as well), so
        # a pinned development deployment cannot be impersonated through a public CA.
        ctx = ssl.create_default_context(cafile=ca_file)
    except OSError as exc:  # ssl.SSLError is an OSError too
        raise ConfigError(f"could not load CA file {ca_file} ({_reason(exc)})") from None
    # create_default_context already does the following; stated so that a change of
    # defaults can never weaken the SDK (RFC 9325 §3.1.1, OWASP ASVS V12.3).
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def certificate_fingerprint(pem: bytes) -> str:
    """Return the SHA-256 fingerprint of the first (leaf) certificate in ``pem``.

    Args:
        pem: One PEM certificate or a chain, leaf first.

    Returns:
        Lower-case hex of SHA-256 over the certificate's DER encoding, as shown by
        ``openssl x509 -fingerprint -sha256`` shows (without colons, in lower case).

    Raises:
        ConfigError: ``pem`` holds no parsable certificate.
    """
    try:
        leaf = x509.load_pem_x509_certificates(pem)[0]
    except ValueError:
        raise ConfigError("no PEM certificate found") from None
    return leaf.fingerprint(hashes.SHA256()).hex()


# --- helpers -------------------------------------------------------------------------------


def _check_validity(now: datetime, valid_days: int) -> None:
    # A naive datetime would silently be read as UTC by cryptography.
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if valid_days <= 0:
        raise ValueError("valid_days must be positive")


def _leaf_builder(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    now: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    """What every leaf (server or client) certificate of the CA has in common."""
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return (
        x509.CertificateBuilder()
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_BACKDATE)
        .not_valid_after(not_after)
        # ECDHE key exchange (and TLS client authentication) needs only signatures.
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(aki, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted on purpose: see write_dev_tls for why the directory mode is the protection.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_ca(
    ca_cert_pem: bytes, ca_key_pem: bytes
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
        ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError):
        # The exception text could quote parts of the input; say only what failed.
        raise ConfigError("the CA certificate or key is not valid unencrypted PEM") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError("the CA key must be an ECDSA key")
    if ca_key.public_key() != ca_cert.public_key():
        raise ConfigError("the CA key does not belong to the CA certificate")
    try:
        is_ca = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ConfigError("the CA certificate is not a certificate authority")
    return ca_cert, ca_key


def _subject_alt_names(hostnames: Sequence[str]) -> list[x509.GeneralName]:
    if isinstance(hostnames, str) or not hostnames:
        raise ConfigError("hostnames: give at least one host name or IP address")
    names: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        # dNSName is IA5String (RFC 5280 §4.2.1.6): internationalised names go in as A-labels.
        if not host or not host.isascii() or any(c.isspace() or c == "/" for c in host):
            raise ConfigError(f"hostnames: {host!r} is not a valid host name or IP address")
        names.append(x509.DNSName(host.lower()))
    return names


def _open_private_dir(tls_dir: Path) -> int:
    tls_dir.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    created = True
    try:
        tls_dir.mkdir(mode=_DIR_MODE)
    except FileExistsError:
        created = False
    # O_NOFOLLOW: work inside the directory itself, not wherever a symlink points; every
    # later file operation is relative to this descriptor, so renaming the path is harmless.
    try:
        fd = os.open(tls_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise ConfigError(f"{tls_dir} is not a directory (or is a symlink)") from None
    info = os.fstat(fd)
    if created:
        os.fchmod(fd, _DIR_MODE)  # the umask may have taken bits away from the owner
    elif info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        os.close(fd)
        raise ConfigError(
            f"{tls_dir} must be owned by the current user and have mode 0700 "
            f"(it has {stat.S_IMODE(info.st_mode):04o}); fix it or choose another directory"
        )
    return fd


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _refuse_existing(names: list[str], dir_fd: int, tls_dir: Path) -> None:
    for name in names:
        if _exists(name, dir_fd):
            raise ConfigError(
                f"{tls_dir / name} already exists; refusing to overwrite TLS material "
                "(remove the directory to start again)"
            )


def _write_all(contents: list[tuple[str, bytes, int]], dir_fd: int, tls_dir: Path) -> None:
    written: list[str] = []
    try:
        for name, data, mode in contents:
            _write_new_file(name, data, mode, dir_fd, tls_dir)
            written.append(name)
    except BaseException:
        # Leave no half-initialised directory behind: a later run would refuse to proceed.
        for name in written:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dir_fd)
        raise


def _write_new_file(name: str, data: bytes, mode: int, dir_fd: int, tls_dir: Path) -> None:
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, mode, dir_fd=dir_fd)
    except FileExistsError:
        raise ConfigError(f"{tls_dir / name} already exists; refusing to overwrite") from None
    with os.fdopen(fd, "wb") as handle:
        # The file is still empty here: setting the exact mode undoes the umask (which can only
        # have removed bits) before any key byte exists on disk.
        os.fchmod(handle.fileno(), mode)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _no_passphrase() -> bytes:
    # Called by OpenSSL only for an encrypted key. Returning an empty passphrase makes the
    # load fail cleanly instead of OpenSSL prompting on the terminal of an unattended server.
    return b""


def _load_verify(ctx: ssl.SSLContext, ca_file: Path, what: str) -> None:
    if not ca_file.is_file():
        raise ConfigError(f"{what} {ca_file} does not exist or is not a file")
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except OSError as exc:
        raise ConfigError(f"could not load {what} {ca_file} ({_reason(exc)})") from None


def _reason(exc: OSError) -> str:
    # OpenSSL's reason code (e.g. KEY_VALUES_MISMATCH) or the OS error text: both describe
    # the failure without echoing file contents.
    reason = getattr(exc, "reason", None) or exc.strerror
    return str(reason) if reason else type(exc).__name__
