"""The one exception hierarchy of Herald.

Every error Herald raises on purpose derives from :class:`HeraldError`. Errors that reach
the HTTP API carry a stable problem ``slug`` (the last part of the RFC 9457 ``type`` URI)
and an HTTP ``status``; the server turns them into ``application/problem+json`` bodies.

Security failures collapse into one opaque error per boundary so that an error is never an
oracle: every way a bearer token can be wrong is :class:`InvalidToken`, every way a client
can fail to authenticate is :class:`InvalidClient` (an operator's login:
:class:`InvalidCredentials`), every decrypt failure is
:class:`DecryptionFailed`.

::

    HeraldError
    ├── ConfigError                 settings invalid at start-up (names the setting)
    ├── StorageError                database unreachable or failing (503)
    │   └── IntegrityConflict       a uniqueness rule was hit
    ├── DecryptionFailed            AEAD open failed (wrong key, tampered, moved)
    ├── InvalidTransition           a delivery state change the state machine forbids
    └── ApiError                    anything answered as problem+json
        ├── BadRequest (400)        invalid-request, malformed-json, invalid-topic,
        │                           too-many-recipients, invalid-cursor
        ├── InvalidToken (401)      invalid-token
        ├── InvalidClient (401)     invalid-client (OAuth client authentication)
        ├── InvalidCredentials (401) invalid-credentials (operator login)
        ├── Forbidden (403)         forbidden
        ├── NotFound (404)          not-found
        ├── MethodNotAllowed (405)  method-not-allowed
        ├── Conflict (409)          conflict
        ├── Gone (410)              content-shredded
        ├── PayloadTooLarge (413)   payload-too-large
        ├── UnsupportedMediaType (415) unsupported-media-type
        ├── SignatureMissing (401)  signature-missing
        ├── SignatureInvalid (401)  signature-invalid
        ├── DigestMismatch (400)    digest-mismatch
        ├── RequestExpired (401)    request-expired
        ├── ReplayedRequest (401)   replayed-request
        ├── KeyUnknown (401)        key-unknown
        ├── KeyRevoked (401)        key-revoked
        ├── IdempotencyMismatch (422) idempotency-key-reused
        ├── RateLimited (429)       rate-limited (Retry-After, RateLimit headers)
        ├── ServiceUnavailable (503) unavailable
        └── InternalError (500)     internal
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "PROBLEM_TYPE_PREFIX",
    "ApiError",
    "BadRequest",
    "ConfigError",
    "Conflict",
    "DecryptionFailed",
    "DigestMismatch",
    "Forbidden",
    "Gone",
    "HeraldError",
    "IdempotencyMismatch",
    "IntegrityConflict",
    "InternalError",
    "InvalidClient",
    "InvalidCredentials",
    "InvalidToken",
    "InvalidTransition",
    "KeyRevoked",
    "KeyUnknown",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ReplayedRequest",
    "RequestExpired",
    "ServiceUnavailable",
    "SignatureInvalid",
    "SignatureMissing",
    "StorageError",
    "UnsupportedMediaType",
    "problem_type",
]

#: Problem ``type`` URIs are ``urn:herald:problem:<slug>``: stable, never dereferenced by
#: clients (RFC 9457 §3.1.1), and not tied to a domain name we would have to keep.
PROBLEM_TYPE_PREFIX = "urn:herald:problem:"


def problem_type(slug: str) -> str:
    """Return the full RFC 9457 ``type`` URI of a problem slug."""
    return PROBLEM_TYPE_PREFIX + slug


class HeraldError(Exception):
    """Root of every error Herald raises on purpose."""


class ConfigError(HeraldError):
    """The configuration is invalid; the message names the offending setting."""


class StorageError(HeraldError):
    """The database could not be reached or refused the operation."""


class IntegrityConflict(StorageError):
    """A uniqueness rule of the store was hit (e.g. a duplicate name)."""


class DecryptionFailed(HeraldError):
    """An AEAD ciphertext could not be opened. Deliberately carries no reason."""

    def __init__(self) -> None:
        super().__init__("decryption failed")


class InvalidTransition(HeraldError):
    """A delivery state change that the delivery state machine does not allow."""


class ApiError(HeraldError):
    """An error answered to an API client as ``application/problem+json``."""

    status: ClassVar[int] = 400
    slug: ClassVar[str] = "invalid-request"
    title: ClassVar[str] = "Invalid request"

    def __init__(
        self,
        detail: str,
        *,
        slug: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if slug is not None:
            self.slug = slug  # type: ignore[misc]
        self.headers = headers or {}
        self.extra = extra or {}

    @property
    def type_uri(self) -> str:
        """The RFC 9457 ``type`` member."""
        return problem_type(self.slug)


class BadRequest(ApiError):
    """The request is malformed or fails validation."""

    status = 400
    slug = "invalid-request"
    title = "Invalid request"


class InvalidToken(ApiError):
    """The bearer token is missing, malformed, expired, or not ours. One opaque error."""

    status = 401
    slug = "invalid-token"
    title = "Invalid or missing access token"

    def __init__(self, detail: str = "the access token is missing, invalid or expired") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class InvalidClient(ApiError):
    """OAuth client authentication failed (RFC 6749 §5.2 ``invalid_client``)."""

    status = 401
    slug = "invalid-client"
    title = "Client authentication failed"

    def __init__(self, detail: str = "client authentication failed") -> None:
        super().__init__(
            detail,
            headers={"WWW-Authenticate": 'Basic realm="herald"'},
            extra={"error": "invalid_client"},
        )


class InvalidCredentials(ApiError):
    """An operator's name or password is wrong, or the operator is disabled (one answer)."""

    status = 401
    slug = "invalid-credentials"
    title = "Sign-in failed"

    def __init__(self, detail: str = "the name or password is wrong") -> None:
        super().__init__(detail)


class Forbidden(ApiError):
    """Authenticated, but the token's scopes do not allow this."""

    status = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFound(ApiError):
    """No such object for this tenant (also answered for other tenants' objects)."""

    status = 404
    slug = "not-found"
    title = "Not found"


class MethodNotAllowed(ApiError):
    """The route exists but not with this method."""

    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class Conflict(ApiError):
    """The request conflicts with what exists (e.g. a client-chosen id already used)."""

    status = 409
    slug = "conflict"
    title = "Conflict"


class Gone(ApiError):
    """The content existed but its keys were destroyed (crypto-shredding)."""

    status = 410
    slug = "content-shredded"
    title = "Content destroyed"


class PayloadTooLarge(ApiError):
    """The request body exceeds the configured cap."""

    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaType(ApiError):
    """The request body is not ``application/json``."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class _SignatureRefusal(ApiError):
    """Base of the request-signature refusals (RFC 9421); all answer 401 but the digest."""

    status = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Signature realm="herald"'})


class SignatureMissing(_SignatureRefusal):
    """No ``Signature``/``Signature-Input`` on a request that must be signed."""

    slug = "signature-missing"
    title = "Request signature missing"


class SignatureInvalid(_SignatureRefusal):
    """The signature headers are malformed, incomplete, or the signature does not verify."""

    slug = "signature-invalid"
    title = "Request signature invalid"


class DigestMismatch(ApiError):
    """``Content-Digest`` is missing or does not match the received body (RFC 9530)."""

    status = 400
    slug = "digest-mismatch"
    title = "Content-Digest does not match the body"


class RequestExpired(_SignatureRefusal):
    """The signature's ``created``/``expires`` is outside the replay window."""

    slug = "request-expired"
    title = "Signed request outside the replay window"


class ReplayedRequest(_SignatureRefusal):
    """The signature's nonce was already used."""

    slug = "replayed-request"
    title = "Replayed request"


class KeyUnknown(_SignatureRefusal):
    """The ``keyid`` names no key of the authenticated app."""

    slug = "key-unknown"
    title = "Unknown signing key"


class KeyRevoked(_SignatureRefusal):
    """The ``keyid`` names a revoked key of the authenticated app."""

    slug = "key-revoked"
    title = "Signing key revoked"


class IdempotencyMismatch(ApiError):
    """An ``Idempotency-Key`` was reused with a different request body."""

    status = 422
    slug = "idempotency-key-reused"
    title = "Idempotency key reused with a different request"


class RateLimited(ApiError):
    """Too many requests for this app, subscriber, client id or address (RFC 6585 §4)."""

    status = 429
    slug = "rate-limited"
    title = "Too many requests"


class ServiceUnavailable(ApiError):
    """A dependency (database, state store) is unavailable; retry later."""

    status = 503
    slug = "unavailable"
    title = "Service unavailable"


class InternalError(ApiError):
    """An unexpected failure; details are in the server log, never in the response."""

    status = 500
    slug = "internal"
    title = "Internal server error"
