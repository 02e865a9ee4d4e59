"""The ``aws-kms`` key provider: data keys wrapped by an AWS KMS key, over the network.

Why AWS KMS: it is the most widely deployed KMS API (other clouds, LocalStack and several
on-premises KMSs speak it or a close copy), and its ``Encrypt``/``Decrypt`` take an
*encryption context* that KMS binds to the ciphertext as additional authenticated data — the
same contract as :class:`~herald.crypto.keyring.KeyProvider`'s ``context``. It is tested
against moto's standalone server on loopback: moto implements ``Encrypt``/``Decrypt`` with the
encryption context as AES-GCM associated data, ``DescribeKey`` with key states and AWS's
error codes, so wrap/unwrap, a wrong context, tampering, a missing or disabled key and a
server that is down are exercised with a real HTTP server and the real boto3 client.

Wire format: ``0x4B`` (``'K'``, :data:`WRAPPED_MARKER`) followed by KMS's ``CiphertextBlob``,
so a stored blob says it came from KMS. The caller's context travels as the encryption
context ``{"herald": base64url(context)}``. KMS logs encryption contexts in CloudTrail in the
clear: a data key's context (tenant id and key version) is not secret, and it makes every
``Decrypt`` attributable to a tenant.

Errors are mapped at this edge; none carries a key, a credential or KMS's own message::

    missing, disabled, pending-deletion or asymmetric key  -> ConfigError
    access denied                                          -> ConfigError naming the permission
    credentials missing or rejected                        -> ConfigError
    wrong context, tampered blob, blob of another key      -> DecryptionFailed
    unreachable, timed out, throttled, KMS internal error  -> ServiceUnavailable

Secure defaults: every call is bounded (``timeout`` seconds to connect and to read, at most
:data:`MAX_ATTEMPTS` attempts); the endpoint must be ``https`` unless it is on loopback, since
``Encrypt`` requests and ``Decrypt`` answers carry the plaintext data key; and botocore's
debug records that contain request and response bodies are dropped (:data:`_BODY_LOGGERS`).

boto3 is optional (``pip install 'herald[aws]'``) and imported on first use.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ipaddress
import logging
import re
import threading
from typing import Any, Final
from urllib.parse import urlsplit

from herald.errors import ConfigError, DecryptionFailed, ServiceUnavailable

__all__ = [
    "CONTEXT_KEY",
    "DEFAULT_TIMEOUT",
    "MAX_ATTEMPTS",
    "MAX_POOL_CONNECTIONS",
    "WRAPPED_MARKER",
    "AwsKmsProvider",
]

#: First byte of every blob :meth:`AwsKmsProvider.wrap` returns (``'K'`` for KMS).
WRAPPED_MARKER: Final = 0x4B
#: The encryption-context key carrying the caller's context (base64url, no padding).
CONTEXT_KEY: Final = "herald"
#: Seconds to connect and, separately, to wait for an answer, per attempt.
DEFAULT_TIMEOUT: Final = 5.0
#: Attempts per call (botocore "standard" retries: throttling, 5xx and connection errors).
#: Two bound the worst case to about ``2 × 2 × timeout`` plus a backoff under one second.
MAX_ATTEMPTS: Final = 2
#: HTTP connections kept per client: asyncio's default thread pool runs at most 32 calls.
MAX_POOL_CONNECTIONS: Final = 32

_KEK_PREFIX = "aws-kms:"
# The KEK router stores the KEK id behind a one-byte length (herald.crypto.providers).
_KEK_ID_MAX = 255
_KEY_ID = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: ids, ARNs and aliases
_PLAINTEXT_MAX = 4096  # KMS Encrypt: Plaintext is 1 to 4096 bytes
_CIPHERTEXT_MAX = 6144  # KMS Decrypt: CiphertextBlob is 1 to 6144 bytes
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # what of KMS's answers we may echo

_KEY_NOT_USABLE = frozenset(
    {
        "NotFoundException",
        "InvalidArnException",
        "DisabledException",
        "KMSInvalidStateException",
        "InvalidKeyUsageException",
    }
)
_BAD_CIPHERTEXT = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})
_BAD_CREDENTIALS = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredTokenException",
    }
)
_UNREACHABLE = "the key management service is unreachable; nothing was written"

#: botocore loggers whose DEBUG records hold request or response bodies, i.e. base64 of the
#: plaintext data key (``Encrypt`` request, ``Decrypt`` answer).
_BODY_LOGGERS: Final = ("botocore.endpoint", "botocore.parsers", "botocore.awsrequest")


def _drop_debug(record: logging.LogRecord) -> bool:
    return record.levelno > logging.DEBUG


@functools.cache
def _silence_body_logging() -> None:
    # A filter rather than a level: it survives whatever levels logging configuration sets.
    for name in _BODY_LOGGERS:
        logging.getLogger(name).addFilter(_drop_debug)


@functools.cache
def _botocore_errors() -> tuple[type[Exception], ...]:
    try:
        from botocore import exceptions  # type: ignore[import-untyped] # noqa: PLC0415
    except ImportError:
        return ()
    return (exceptions.BotoCoreError, exceptions.ClientError)


def _safe(token: object) -> str:
    return token if isinstance(token, str) and _SAFE_TOKEN.fullmatch(token) else "unknown"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_endpoint(endpoint_url: str) -> None:
    parts = urlsplit(endpoint_url)
    host = parts.hostname or ""
    if not host or parts.scheme not in {"http", "https"}:
        raise ConfigError("the KMS endpoint URL must be an https:// URL")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigError(
            "the KMS endpoint URL must use https: data keys travel in KMS requests "
            "(plain http is accepted on loopback only)"
        )


def _translate_client_error(response: Any, *, key_id: str, permission: str) -> Exception:
    """Map an error answer of KMS; its ``Message`` is never echoed (it may quote the request)."""
    code = response.get("Error", {}).get("Code", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code in _KEY_NOT_USABLE:
        error: Exception = ConfigError(f"KMS key {key_id} not found or not usable")
    elif code in _BAD_CIPHERTEXT:
        error = DecryptionFailed()
    elif code == "AccessDeniedException":
        error = ConfigError(
            f"KMS denied {permission} on key {key_id}: grant it to Herald's AWS principal "
            "(or the wrapped key names a KMS key Herald may not use)"
        )
    elif code in _BAD_CREDENTIALS:
        error = ConfigError(f"KMS rejected the AWS credentials ({_safe(code)})")
    elif isinstance(status, int) and status >= 500:
        error = ServiceUnavailable(_UNREACHABLE)
    else:  # throttling after the retries, or a code this version does not know
        error = ServiceUnavailable(
            f"the key management service refused the request ({_safe(code)}); nothing was written"
        )
    return error


def _translate(exc: Exception, *, key_id: str, permission: str) -> Exception:
    """Map a botocore exception to Herald's; never echo KMS's message or the request."""
    from botocore import exceptions as bx  # noqa: PLC0415 - optional dependency

    if isinstance(exc, bx.ClientError):
        return _translate_client_error(exc.response, key_id=key_id, permission=permission)
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return ConfigError(
            "no usable AWS credentials for the aws-kms key provider (set AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or use an instance or task role)"
        )
    if isinstance(exc, bx.CredentialRetrievalError | bx.UnknownCredentialError):
        return ConfigError("the AWS credentials for the aws-kms key provider could not be loaded")
    if isinstance(exc, bx.ParamValidationError):
        return ValueError("invalid KMS request parameters")  # botocore's text may hold values
    # ConnectionError: refused, DNS, TLS, proxy, connect timeout. HTTPClientError: read
    # timeout, connection closed. Anything else from botocore is no better for the caller.
    return ServiceUnavailable(_UNREACHABLE)


class AwsKmsProvider:
    """The ``aws-kms`` key provider: wraps data keys with a symmetric AWS KMS key.

    Construction does no I/O; the boto3 client is created on first use, in a worker thread,
    with credentials from boto3's usual chain (environment, profile, instance or task role).
    Calls run in :func:`asyncio.to_thread`, so the event loop never blocks on the network.
    Call :meth:`check` at start-up to fail fast, and :meth:`aclose` at shut-down.

    Args:
        key_id: The KMS key: a key id, key ARN, alias name or alias ARN. Prefer the key ARN:
            :attr:`kek_id` is derived from it, and an alias can be pointed elsewhere.
        region: The AWS region of the key.
        endpoint_url: A KMS endpoint other than AWS's (a VPC endpoint, a KMS-compatible
            server); ``https`` unless on loopback.
        client: A ready boto3 KMS client to use instead (not closed by :meth:`aclose`).
        timeout: Seconds allowed to connect and to read, per attempt.

    Raises:
        ConfigError: The key id or endpoint URL is unusable.
        ValueError: ``timeout`` is not positive.
    """

    name: Final = "aws-kms"

    __slots__ = (
        "_client",
        "_closed",
        "_endpoint_url",
        "_key_id",
        "_lock",
        "_owns_client",
        "_region",
        "_timeout",
    )

    def __init__(
        self,
        key_id: str,
        *,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        client: Any | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not _KEY_ID.fullmatch(key_id) or len(_KEK_PREFIX + key_id) > _KEK_ID_MAX:
            raise ConfigError(
                f"KMS key id {key_id!r} is invalid: expected a key id, key ARN or alias of "
                f"printable ASCII without spaces, at most {_KEK_ID_MAX - len(_KEK_PREFIX)} long"
            )
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if endpoint_url is not None:
            _check_endpoint(endpoint_url)
        self._key_id = key_id
        self._region = region
        self._endpoint_url = endpoint_url
        self._timeout = timeout
        self._client: Any | None = client
        self._owns_client = client is None
        self._closed = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AwsKmsProvider(key_id={self._key_id!r}, region={self._region!r})"

    @property
    def key_id(self) -> str:
        """The configured KMS key id, ARN or alias."""
        return self._key_id

    @property
    def kek_id(self) -> str:
        """``"aws-kms:" + key_id``: names the KEK in stored blobs, for KEK rotation."""
        return _KEK_PREFIX + self._key_id

    async def wrap(self, plaintext_key: bytes, context: bytes) -> bytes:
        """Encrypt a data key with KMS ``Encrypt``, binding ``context``.

        Args:
            plaintext_key: The key to wrap (1 to 4096 bytes).
            context: Where the key belongs, e.g. from
                :func:`herald.crypto.keyring.dek_context`.

        Returns:
            :data:`WRAPPED_MARKER` followed by KMS's ciphertext blob.

        Raises:
            ConfigError: The key is missing or unusable, ``kms:Encrypt`` is denied, or the
                credentials are missing or rejected.
            ServiceUnavailable: KMS is unreachable, timed out or failing.
            ValueError: ``plaintext_key`` is empty or longer than 4096 bytes.
        """
        if not 0 < len(plaintext_key) <= _PLAINTEXT_MAX:
            raise ValueError(f"the key to wrap must be 1 to {_PLAINTEXT_MAX} bytes")
        answer = await self._call(
            "encrypt",
            "kms:Encrypt",
            KeyId=self._key_id,
            Plaintext=plaintext_key,
            EncryptionContext=self._context(context),
        )
        blob = answer.get("CiphertextBlob")
        if not isinstance(blob, bytes) or not blob:
            raise ServiceUnavailable("the key management service sent a malformed answer")
        return bytes([WRAPPED_MARKER]) + blob

    async def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """Decrypt a wrapped key with KMS ``Decrypt``; the wrapping ``context`` is required.

        ``KeyId`` is always sent, so KMS refuses a blob made under any other key.

        Args:
            wrapped: Bytes from :meth:`wrap`.
            context: The context given to :meth:`wrap`.

        Returns:
            The plaintext key.

        Raises:
            DecryptionFailed: Wrong context, tampered or foreign blob, or a missing marker.
            ConfigError: The key is missing or unusable, ``kms:Decrypt`` is denied, or the
                credentials are missing or rejected.
            ServiceUnavailable: KMS is unreachable, timed out or failing.
        """
        if not 1 < len(wrapped) <= 1 + _CIPHERTEXT_MAX or wrapped[0] != WRAPPED_MARKER:
            raise DecryptionFailed()
        answer = await self._call(
            "decrypt",
            "kms:Decrypt",
            KeyId=self._key_id,
            CiphertextBlob=wrapped[1:],
            EncryptionContext=self._context(context),
        )
        plaintext = answer.get("Plaintext")
        if not isinstance(plaintext, bytes) or not plaintext:
            raise DecryptionFailed()
        return plaintext

    async def check(self) -> None:
        """Fail fast at start-up unless the key exists, is enabled and can encrypt.

        Uses ``DescribeKey``; it does not prove ``kms:Encrypt``/``kms:Decrypt`` are granted.

        Raises:
            ConfigError: The key is missing, not enabled, not a symmetric encryption key,
                ``kms:DescribeKey`` is denied, or the credentials are missing or rejected.
            ServiceUnavailable: KMS is unreachable, timed out or failing.
        """
        answer = await self._call("describe_key", "kms:DescribeKey", KeyId=self._key_id)
        meta = answer.get("KeyMetadata") or {}
        state = meta.get("KeyState")
        if state != "Enabled" or meta.get("Enabled") is False:
            raise ConfigError(
                f"KMS key {self._key_id} not found or not usable: its state is {_safe(state)}"
            )
        # AWS always names both; KMS-compatible servers (moto among them) may omit KeyUsage.
        usage, spec = meta.get("KeyUsage"), meta.get("KeySpec")
        if usage not in {None, "ENCRYPT_DECRYPT"} or spec not in {None, "SYMMETRIC_DEFAULT"}:
            raise ConfigError(
                f"KMS key {self._key_id} not found or not usable: "
                "it is not a symmetric encryption key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT)"
            )

    async def aclose(self) -> None:
        """Close the HTTP connections of the client this provider created; idempotent.

        Calls made after closing raise :class:`RuntimeError`.
        """
        with self._lock:
            client, self._client, self._closed = self._client, None, True
        if client is not None and self._owns_client:
            await asyncio.to_thread(client.close)

    @staticmethod
    def _context(context: bytes) -> dict[str, str]:
        # RFC 4648 §5 base64url without padding: any bytes become a valid context value.
        return {CONTEXT_KEY: base64.urlsafe_b64encode(context).rstrip(b"=").decode("ascii")}

    async def _call(self, operation: str, permission: str, **params: Any) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(self._invoke, operation, params)
        except _botocore_errors() as exc:
            mapped = _translate(exc, key_id=self._key_id, permission=permission)
            raise mapped from None  # the original may quote KMS; its chain is not needed

    def _invoke(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        # Runs in a worker thread: creating a client reads files and the environment.
        with self._lock:
            if self._closed:
                raise RuntimeError("the aws-kms key provider is closed")
            if self._client is None:
                self._client = self._create_client()
            client = self._client
        answer: dict[str, Any] = getattr(client, operation)(**params)
        return answer

    def _create_client(self) -> Any:
        try:
            import boto3  # type: ignore[import-untyped] # noqa: PLC0415
            from botocore.config import Config  # type: ignore[import-untyped] # noqa: PLC0415
        except ImportError:
            raise ConfigError("install herald[aws] for the aws-kms key provider") from None
        _silence_body_logging()
        config = Config(
            connect_timeout=self._timeout,
            read_timeout=self._timeout,
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            max_pool_connections=MAX_POOL_CONNECTIONS,
        )
        # A private session: boto3's default session is not safe to share between threads.
        session = boto3.session.Session(region_name=self._region)
        return session.client("kms", endpoint_url=self._endpoint_url, config=config)
