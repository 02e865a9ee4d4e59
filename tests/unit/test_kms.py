"""herald.crypto.kms: the aws-kms key provider against moto's KMS server on loopback.

moto's standalone server is a real HTTP server speaking AWS's JSON protocol; boto3 reaches it
through botocore's full stack (signing, retries, timeouts, error parsing). Error codes moto
never answers (DisabledException on Encrypt, IncorrectKeyException, throttling...) are fed
through botocore's own ``Stubber``, so their parsing is still botocore's.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import socket
import sys
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import NoCredentialsError, ReadTimeoutError
from botocore.stub import Stubber
from moto.server import ThreadedMotoServer

from herald.crypto import kms
from herald.crypto.keyring import TenantKeyRing, dek_context, wrap_new_data_key
from herald.crypto.kms import WRAPPED_MARKER, AwsKmsProvider
from herald.errors import ConfigError, DecryptionFailed, ServiceUnavailable

REGION = "us-east-1"
ACCESS_KEY = "AKIAHERALDTESTKEY000"
SECRET_KEY = "herald-test-secret/Zq7vXb9kLm2Np4Rs6Tu8Wx0Yz1Ac3Ef"
KEY = bytes(range(0xA0, 0xC0))  # the data key whose traces the tests look for
CONTEXT = dek_context("tenant-1", 1)
UNREACHABLE = "the key management service is unreachable; nothing was written"


def key_traces(key: bytes) -> list[str]:
    """Every textual form the plaintext key could leak in."""
    return [
        key.hex(),
        key.hex().upper(),
        base64.b64encode(key).decode(),
        base64.urlsafe_b64encode(key).decode().rstrip("="),
        repr(key)[2:-1],
    ]


def full_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kms_endpoint() -> Iterator[str]:
    """moto's KMS on 127.0.0.1, an ephemeral port, for this module; stopped at the end."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def admin(kms_endpoint: str) -> Iterator[Any]:
    """A boto3 client that plays the KMS administrator (creates and disables keys)."""
    client = boto3.client(
        "kms",
        region_name=REGION,
        endpoint_url=kms_endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def key_arn(admin: Any) -> str:
    meta = admin.create_key(
        Description="herald test KEK", KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT"
    )["KeyMetadata"]
    arn: str = meta["Arn"]
    return arn


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials through boto3's normal chain; nothing from the host leaks in."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    for name in (
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_KMS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
async def provider(kms_endpoint: str, key_arn: str) -> AsyncIterator[AwsKmsProvider]:
    p = AwsKmsProvider(key_arn, region=REGION, endpoint_url=kms_endpoint, timeout=2.0)
    try:
        yield p
    finally:
        await p.aclose()


@pytest.fixture
async def make_provider(kms_endpoint: str) -> AsyncIterator[Any]:
    """Build providers on the moto endpoint (or another); all closed after the test."""
    made: list[AwsKmsProvider] = []

    def make(key_id: str, **kwargs: Any) -> AwsKmsProvider:
        kwargs.setdefault("endpoint_url", kms_endpoint)
        kwargs.setdefault("region", REGION)
        made.append(AwsKmsProvider(key_id, **kwargs))
        return made[-1]

    yield make
    for p in made:
        await p.aclose()


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    """A real boto3 KMS client whose answers come from botocore's Stubber (no network)."""
    client = boto3.client("kms", region_name=REGION)
    stubber = Stubber(client)
    with stubber:
        yield client, stubber
    client.close()


# --- names and configuration ------------------------------------------------------------------


def test_exports() -> None:
    assert set(kms.__all__) == {
        "CONTEXT_KEY",
        "DEFAULT_TIMEOUT",
        "MAX_ATTEMPTS",
        "MAX_POOL_CONNECTIONS",
        "WRAPPED_MARKER",
        "AwsKmsProvider",
    }
    for name in kms.__all__:
        assert hasattr(kms, name)


def test_name_kek_id_and_repr(key_arn: str) -> None:
    p = AwsKmsProvider(key_arn)
    assert p.name == "aws-kms"
    assert p.key_id == key_arn
    assert p.kek_id == "aws-kms:" + key_arn
    assert AwsKmsProvider("alias/herald").kek_id == "aws-kms:alias/herald"
    assert key_arn in repr(p)
    assert SECRET_KEY not in repr(p)


@pytest.mark.parametrize("key_id", ["", "a key", "key\n", "clé", "k" * 248])
def test_invalid_key_id(key_id: str) -> None:
    with pytest.raises(ConfigError, match="KMS key id"):
        AwsKmsProvider(key_id)


def test_longest_key_id_fits_the_kek_router() -> None:
    assert len(AwsKmsProvider("k" * 247).kek_id) == 255


@pytest.mark.parametrize(
    "url",
    ["http://kms.example.com", "http://10.0.0.5:4566", "ftp://127.0.0.1", "https://", "kms"],
)
def test_endpoint_must_be_https_off_loopback(url: str) -> None:
    with pytest.raises(ConfigError, match="KMS endpoint URL"):
        AwsKmsProvider("alias/k", endpoint_url=url)


@pytest.mark.parametrize(
    "url",
    [
        "https://kms.eu-west-1.amazonaws.com",
        "http://127.0.0.1:4566",
        "http://localhost:4566",
        "http://[::1]:4566",
    ],
)
def test_endpoint_accepted(url: str) -> None:
    AwsKmsProvider("alias/k", endpoint_url=url)


@pytest.mark.parametrize("timeout", [0.0, -1.0, float("nan")])
def test_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        AwsKmsProvider("alias/k", timeout=timeout)


async def test_missing_boto3_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # makes `import boto3` raise ImportError
    p = AwsKmsProvider("alias/k", endpoint_url=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ConfigError, match=r"install herald\[aws\]"):
        await p.wrap(KEY, CONTEXT)
    await p.aclose()


# --- wrap and unwrap --------------------------------------------------------------------------


async def test_round_trip(provider: AwsKmsProvider) -> None:
    wrapped = await provider.wrap(KEY, CONTEXT)
    assert wrapped[0] == WRAPPED_MARKER == ord("K")
    assert KEY not in wrapped
    assert await provider.unwrap(wrapped, CONTEXT) == KEY
    assert await provider.wrap(KEY, CONTEXT) != wrapped  # KMS draws a fresh IV each time


async def test_context_is_the_encryption_context(
    provider: AwsKmsProvider, admin: Any, key_arn: str
) -> None:
    """The wire format is documented: anyone holding kms:Decrypt can recover a key."""
    context = bytes(range(256))
    wrapped = await provider.wrap(KEY, context)
    answer = admin.decrypt(
        CiphertextBlob=wrapped[1:],
        KeyId=key_arn,
        EncryptionContext={"herald": base64.urlsafe_b64encode(context).decode().rstrip("=")},
    )
    assert answer["Plaintext"] == KEY


async def test_wrong_context_fails(provider: AwsKmsProvider) -> None:
    wrapped = await provider.wrap(KEY, CONTEXT)
    for other in (dek_context("tenant-2", 1), dek_context("tenant-1", 2), CONTEXT + b"\x00"):
        with pytest.raises(DecryptionFailed) as info:
            await provider.unwrap(wrapped, other)
        assert str(info.value) == "decryption failed"


@pytest.mark.parametrize("where", [-1, -16, -30])
async def test_tampered_blob_fails(provider: AwsKmsProvider, where: int) -> None:
    wrapped = bytearray(await provider.wrap(KEY, CONTEXT))
    wrapped[where] ^= 0x01
    with pytest.raises(DecryptionFailed):
        await provider.unwrap(bytes(wrapped), CONTEXT)


async def test_truncated_blob_fails(provider: AwsKmsProvider) -> None:
    wrapped = await provider.wrap(KEY, CONTEXT)
    for cut in (2, len(wrapped) // 2, len(wrapped) - 1):
        with pytest.raises(DecryptionFailed):
            await provider.unwrap(wrapped[:cut], CONTEXT)


async def test_blob_without_marker_fails(provider: AwsKmsProvider) -> None:
    wrapped = await provider.wrap(KEY, CONTEXT)
    for bad in (
        wrapped[1:],  # the bare KMS ciphertext
        b"\x02" + wrapped[1:],  # another format's marker
        b"",
        bytes([WRAPPED_MARKER]),
        bytes([WRAPPED_MARKER]) + b"\x00" * 6145,  # longer than any KMS ciphertext
    ):
        with pytest.raises(DecryptionFailed):
            await provider.unwrap(bad, CONTEXT)


async def test_blob_of_another_key_never_opens(
    provider: AwsKmsProvider, make_provider: Any, admin: Any
) -> None:
    other = make_provider(admin.create_key()["KeyMetadata"]["Arn"])
    wrapped = await other.wrap(KEY, CONTEXT)
    # AWS answers IncorrectKeyException (DecryptionFailed); moto answers AccessDenied, which
    # is a ConfigError naming kms:Decrypt. Either way: refused, and nothing leaks.
    with pytest.raises((DecryptionFailed, ConfigError)) as info:
        await provider.unwrap(wrapped, CONTEXT)
    assert all(trace not in full_text(info.value) for trace in key_traces(KEY))


@pytest.mark.parametrize("size", [0, 4097])
async def test_wrap_refuses_bad_key_sizes(provider: AwsKmsProvider, size: int) -> None:
    with pytest.raises(ValueError, match="1 to 4096 bytes"):
        await provider.wrap(b"\x01" * size, CONTEXT)


async def test_concurrent_wraps(provider: AwsKmsProvider) -> None:
    keys = [os.urandom(32) for _ in range(20)]
    contexts = [dek_context(f"tenant-{i}", 1) for i in range(20)]
    wrapped = await asyncio.gather(
        *(provider.wrap(k, c) for k, c in zip(keys, contexts, strict=True))
    )
    assert len(set(wrapped)) == 20
    opened = await asyncio.gather(
        *(provider.unwrap(w, c) for w, c in zip(wrapped, contexts, strict=True))
    )
    assert opened == keys


async def test_key_ring_over_kms(provider: AwsKmsProvider) -> None:
    stored = {"tenant-1": [(1, await wrap_new_data_key(provider, "tenant-1", 1, os.urandom))]}

    async def load_wrapped(tenant_id: str) -> list[tuple[int, bytes]]:
        return stored.get(tenant_id, [])

    ring = TenantKeyRing(provider, load_wrapped, clock=time.monotonic, randbytes=os.urandom)
    blob = await ring.seal("tenant-1", "msg-1", "body", b"hello over KMS")
    assert await ring.open("tenant-1", "msg-1", "body", blob) == b"hello over KMS"
    with pytest.raises(DecryptionFailed):
        await ring.open("tenant-1", "msg-2", "body", blob)

    # A wrapped key copied to another tenant does not unwrap: KMS checks the context.
    stored["tenant-2"] = stored["tenant-1"]
    with pytest.raises(DecryptionFailed):
        await ring.seal("tenant-2", "msg-1", "body", b"x")


# --- unusable keys ----------------------------------------------------------------------------


async def test_check_accepts_a_usable_key(provider: AwsKmsProvider) -> None:
    await provider.check()


@pytest.mark.parametrize(
    "key_id",
    [
        "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000",
        "00000000-0000-0000-0000-000000000000",
        "alias/herald-missing",
    ],
)
async def test_missing_key(make_provider: Any, key_id: str) -> None:
    p = make_provider(key_id)
    message = f"KMS key {key_id} not found or not usable"
    with pytest.raises(ConfigError, match=message) as info:
        await p.wrap(KEY, CONTEXT)
    assert all(trace not in full_text(info.value) for trace in key_traces(KEY))
    with pytest.raises(ConfigError, match=message):
        await p.check()


async def test_disabled_key(make_provider: Any, admin: Any) -> None:
    meta = admin.create_key()["KeyMetadata"]
    p = make_provider(meta["Arn"])
    await p.check()
    admin.disable_key(KeyId=meta["KeyId"])  # moto: the key id, not the ARN
    message = f"KMS key {meta['Arn']} not found or not usable: its state is Disabled"
    with pytest.raises(ConfigError, match=re.escape(message)):
        await p.check()


async def test_key_pending_deletion(make_provider: Any, admin: Any) -> None:
    meta = admin.create_key(KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT")["KeyMetadata"]
    arn = meta["Arn"]
    admin.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)  # moto: no ARN here
    with pytest.raises(ConfigError, match=r"not usable: its state is PendingDeletion"):
        await make_provider(arn).check()


@pytest.mark.parametrize(
    ("spec", "usage"), [("RSA_2048", "ENCRYPT_DECRYPT"), ("HMAC_256", "GENERATE_VERIFY_MAC")]
)
async def test_check_refuses_keys_that_cannot_wrap(
    make_provider: Any, admin: Any, spec: str, usage: str
) -> None:
    arn = admin.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["Arn"]
    with pytest.raises(ConfigError, match="not a symmetric encryption key"):
        await make_provider(arn).check()


# --- the service down, slow, or refusing ------------------------------------------------------


@pytest.mark.timeout(15)
async def test_server_down(make_provider: Any, key_arn: str) -> None:
    p = make_provider(key_arn, endpoint_url=f"http://127.0.0.1:{closed_port()}", timeout=1.0)
    for call in (p.wrap(KEY, CONTEXT), p.unwrap(b"K" + b"\x00" * 64, CONTEXT), p.check()):
        with pytest.raises(ServiceUnavailable) as info:
            await call
        assert str(info.value) == UNREACHABLE
        assert info.value.status == 503
        assert all(trace not in full_text(info.value) for trace in key_traces(KEY))


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A socket that completes TCP handshakes (kernel backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.timeout(15)
async def test_server_silent_times_out(make_provider: Any, silent_endpoint: str) -> None:
    p = make_provider("alias/k", endpoint_url=silent_endpoint, timeout=0.5)
    with pytest.raises(ServiceUnavailable, match="unreachable"):
        await p.wrap(KEY, CONTEXT)


async def test_no_credentials(
    make_provider: Any, key_arn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigError, match="no usable AWS credentials"):
        await make_provider(key_arn).wrap(KEY, CONTEXT)


_MAPPED = [
    ("encrypt", "DisabledException", 400, ConfigError, "not found or not usable"),
    ("encrypt", "KMSInvalidStateException", 400, ConfigError, "not found or not usable"),
    ("decrypt", "DisabledException", 400, ConfigError, "not found or not usable"),
    ("describe_key", "InvalidArnException", 400, ConfigError, "not found or not usable"),
    ("encrypt", "InvalidKeyUsageException", 400, ConfigError, "not found or not usable"),
    ("encrypt", "AccessDeniedException", 400, ConfigError, "kms:Encrypt"),
    ("decrypt", "AccessDeniedException", 400, ConfigError, "kms:Decrypt"),
    ("describe_key", "AccessDeniedException", 400, ConfigError, "kms:DescribeKey"),
    ("encrypt", "UnrecognizedClientException", 400, ConfigError, "rejected the AWS credentials"),
    ("decrypt", "IncorrectKeyException", 400, DecryptionFailed, "decryption failed"),
    ("decrypt", "InvalidCiphertextException", 400, DecryptionFailed, "decryption failed"),
    ("encrypt", "KMSInternalException", 500, ServiceUnavailable, "unreachable"),
    ("decrypt", "KeyUnavailableException", 500, ServiceUnavailable, "unreachable"),
    ("encrypt", "DependencyTimeoutException", 503, ServiceUnavailable, "unreachable"),
    ("encrypt", "ThrottlingException", 400, ServiceUnavailable, r"\(ThrottlingException\)"),
    ("encrypt", "Some Code<script>", 400, ServiceUnavailable, r"\(unknown\)"),
]


@pytest.mark.parametrize("case", _MAPPED, ids=[f"{c[0]}-{c[1]}" for c in _MAPPED])
async def test_error_mapping(
    stubbed: tuple[Any, Stubber], case: tuple[str, str, int, type[Exception], str]
) -> None:
    operation, code, status, error, match = case
    client, stubber = stubbed
    stubber.add_client_error(
        operation,
        service_error_code=code,
        service_message=f"echoed {SECRET_KEY} {KEY.hex()}",
        http_status_code=status,
    )
    p = AwsKmsProvider("alias/herald", client=client)
    call = {
        "encrypt": lambda: p.wrap(KEY, CONTEXT),
        "decrypt": lambda: p.unwrap(b"K" + b"\x00" * 64, CONTEXT),
        "describe_key": p.check,
    }[operation]
    with pytest.raises(error, match=match) as info:
        await call()
    text = full_text(info.value)
    assert "echoed" not in text
    assert SECRET_KEY not in text
    assert all(trace not in text for trace in key_traces(KEY))
    assert info.value.__cause__ is None
    stubber.assert_no_pending_responses()


class RaisingClient:
    """Stands in for a boto3 client whose transport raises a botocore exception."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.closed = False

    def encrypt(self, **_params: Any) -> dict[str, Any]:
        raise self.exc

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("exc", "error", "match"),
    [
        (NoCredentialsError(), ConfigError, "no usable AWS credentials"),
        (
            ReadTimeoutError(endpoint_url="https://kms.us-east-1.amazonaws.com/"),
            ServiceUnavailable,
            "unreachable",
        ),
    ],
)
async def test_transport_error_mapping(exc: Exception, error: type[Exception], match: str) -> None:
    client = RaisingClient(exc)
    p = AwsKmsProvider("alias/herald", client=client)
    with pytest.raises(error, match=match):
        await p.wrap(KEY, CONTEXT)
    await p.aclose()
    assert not client.closed  # an injected client belongs to the caller


async def test_non_botocore_errors_pass_through() -> None:
    p = AwsKmsProvider("alias/herald", client=RaisingClient(KeyError("bug")))
    with pytest.raises(KeyError):
        await p.wrap(KEY, CONTEXT)


async def test_nothing_leaks_into_logs(
    provider: AwsKmsProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """botocore logs request and response bodies at DEBUG: those records are dropped."""
    caplog.set_level(logging.DEBUG)
    wrapped = await provider.wrap(KEY, CONTEXT)
    assert await provider.unwrap(wrapped, CONTEXT) == KEY
    assert any(r.name.startswith("botocore") for r in caplog.records)  # DEBUG really was on
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET_KEY not in text
    assert all(trace not in text for trace in key_traces(KEY))


async def test_aclose(make_provider: Any, key_arn: str) -> None:
    p = make_provider(key_arn)
    await p.wrap(KEY, CONTEXT)
    await p.aclose()
    await p.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await p.wrap(KEY, CONTEXT)
