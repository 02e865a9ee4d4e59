"""``private_key_jwt`` client authentication (RFC 7523 §2.2) at the OAuth endpoints.

The I/O around :mod:`herald.crypto.assertions`: the form fields are read
(:func:`read_client_assertion`), the claimed client id is taken from the *unverified*
assertion so that the lockout can be checked first (by the caller), then
:func:`authenticate` looks up the app and the Ed25519 request-signing key named by ``kid``
— which must be an active key of that same app; HMAC keys never qualify — verifies the
assertion and claims its ``jti`` in the nonce store (only after the signature verified, so
nobody can burn another app's ``jti`` values; an unreachable store fails closed).

Unknown client, unknown key, another app's key and a bad signature are indistinguishable:
the same error, and the same work (two store lookups and one Ed25519 verification, against a
throw-away key when there is no usable one). Every refusal is audited as ``token.refused``
like a wrong client secret, without the assertion.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from herald import limits
from herald.crypto.assertions import (
    ASSERTION_TYPE,
    ParsedAssertion,
    parse_assertion,
    verify_assertion,
)
from herald.errors import BadRequest, InvalidClient, RequestExpired
from herald.service import audit
from herald.service.runtime import Runtime
from herald.service.signatures import ALG_ED25519
from herald.state.nonces import assertion_key
from herald.storage.base import AppKeyRecord, AppRecord

__all__ = ["METHOD", "ClientAssertion", "authenticate", "read_client_assertion"]

#: The RFC 8414 / RFC 7591 name of this client authentication method.
METHOD = "private_key_jwt"
#: Client ids longer than this are not ours (the Basic path uses the same bound).
_CLIENT_ID_MAX = 128

# A public key nobody holds the private half of: verified against when the assertion names no
# usable key, so that an unknown client or key costs the same as a bad signature.
_DUMMY_PUBLIC_KEY = (
    Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
)


@dataclass(frozen=True, slots=True)
class ClientAssertion:
    """A client assertion from a token or revocation request, not verified yet."""

    text: str
    #: The optional ``client_id`` form field; must then equal the assertion's iss/sub.
    client_id: str | None
    #: None when the assertion does not even parse (it is refused, after the lockout check).
    parsed: ParsedAssertion | None

    @property
    def claimed_client_id(self) -> str:
        """Whom the request claims to be (unverified): what the lockout counts against."""
        claimed = self.client_id or (self.parsed.issuer if self.parsed else None) or ""
        return claimed[:_CLIENT_ID_MAX]


def _invalid_request(detail: str) -> BadRequest:
    return BadRequest(detail, extra={"error": "invalid_request"})


def read_client_assertion(
    form: Mapping[str, list[str]], *, has_authorization: bool
) -> ClientAssertion | None:
    """The request's client assertion, or None when it uses no assertion (Basic, then).

    Raises:
        BadRequest: ``invalid_request`` when an assertion comes with an Authorization header
            (RFC 6749 §2.3: one authentication method per request, §5.2), or its fields are
            missing or repeated (§3.2).
        InvalidClient: an unsupported ``client_assertion_type`` (RFC 6749 §5.2).
    """
    assertion, kind = form.get("client_assertion"), form.get("client_assertion_type")
    if assertion is None and kind is None:
        return None
    if has_authorization:
        raise _invalid_request(
            "use one client authentication method: an Authorization header or a "
            "client_assertion, not both"
        )
    client_id = form.get("client_id")
    if (
        assertion is None
        or kind is None
        or len(assertion) != 1
        or len(kind) != 1
        or (client_id is not None and len(client_id) != 1)
    ):
        raise _invalid_request(
            "client_assertion and client_assertion_type are required together, once each"
        )
    if kind[0] != ASSERTION_TYPE:
        raise InvalidClient(f"client_assertion_type must be {ASSERTION_TYPE}")
    try:
        parsed: ParsedAssertion | None = parse_assertion(assertion[0])
    except InvalidClient:
        parsed = None
    return ClientAssertion(assertion[0], client_id[0] if client_id else None, parsed)


def _usable(key: AppKeyRecord | None, app: AppRecord | None) -> bool:
    """An active Ed25519 key of this very app (HMAC keys never: no client_secret_jwt)."""
    return (
        key is not None
        and app is not None
        and key.app_id == app.id
        and key.tenant_id == app.tenant_id
        and key.algorithm == ALG_ED25519
        and key.revoked_at is None
    )


async def _refusal(
    rt: Runtime,
    assertion: ClientAssertion,
    app: AppRecord | None,
    key: AppKeyRecord | None,
    audiences: Collection[str],
) -> str | None:
    """Why the assertion is refused (an audit reason), or None: it authenticates ``app``."""
    parsed = assertion.parsed
    if parsed is None:
        return "invalid_client"
    usable = _usable(key, app)
    now = time.time()
    try:
        verified = verify_assertion(
            parsed,
            key.public_key if usable and key is not None else _DUMMY_PUBLIC_KEY,
            client_id=assertion.claimed_client_id,
            audiences=audiences,
            now=now,
            not_before=rt.nonce_not_before,
        )
    except InvalidClient:
        return "invalid_client"
    if app is None or not usable:  # pragma: no cover - nobody holds the dummy key
        return "invalid_client"
    if app.disabled:
        return "disabled"
    # RFC 7523 §3 item 7: single use. Remembered until exp (+ leeway); after that the
    # assertion is refused as expired anyway.
    ttl = verified.expires_at + limits.JWT_LEEWAY - now
    key_name = assertion_key(app.tenant_id, app.id, verified.jti)
    try:
        # ``created``: a Redis store reset since the assertion was made has forgotten the
        # jtis claimed before it, so such an assertion is refused (as a replay could be).
        claimed = await rt.nonces.claim(key_name, ttl, created=int(verified.issued_at))
    except RequestExpired:
        claimed = False
    return None if claimed else "replayed"


async def authenticate(
    rt: Runtime, assertion: ClientAssertion, *, audiences: Collection[str]
) -> AppRecord:
    """Authenticate the client by its assertion; every failure is one :class:`InvalidClient`.

    Args:
        rt: The node's runtime.
        assertion: From :func:`read_client_assertion`.
        audiences: The ``aud`` values this endpoint accepts.

    Returns:
        The authenticated, enabled app.

    Raises:
        InvalidClient: for every failure (also recorded in the audit log).
        ServiceUnavailable: the nonce store is unreachable (fail closed).
    """
    claimed, parsed = assertion.claimed_client_id, assertion.parsed
    app = await rt.store.get_app(claimed) if claimed else None
    key = await rt.store.get_app_key(parsed.kid) if parsed is not None else None
    reason = await _refusal(rt, assertion, app, key, audiences)
    if reason is None and app is not None:
        return app
    rt.metrics.record_auth_failure("invalid_client")
    # What the caller claimed, bounded; never the assertion itself.
    await audit.record(
        rt,
        tenant=app.tenant_id if app is not None else None,
        actor=f"client:{claimed[:64]}",
        action="token.refused",
        obj=f"app:{claimed[:64]}",
        reason=reason or "invalid_client",
        method=METHOD,
    )
    raise InvalidClient
