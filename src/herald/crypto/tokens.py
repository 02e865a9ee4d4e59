"""Access tokens (RFC 9068 JWT profile) and subscriber tokens, signed EdDSA (Ed25519).

Verification follows the JWT BCP (RFC 8725): the algorithm comes from our allow-list, never
from the token; the key is looked up by ``kid`` among *our* keys only (``jku``, ``x5u``,
``jwk`` headers are ignored); ``typ`` is checked explicitly (RFC 8725 §3.11, RFC 9068 §2.1)
because PyJWT does not; ``iss``, ``aud``, ``exp``, ``iat``, ``jti`` are required; leeway is
small. Every failure is the same opaque :class:`~herald.errors.InvalidToken`.

Subscriber and operator tokens use their own ``typ`` and audience, so no kind of token can
stand in for another.
An access token may be certificate-bound (RFC 8705 §3): ``cnf: {"x5t#S256": …}``. The
verifier parses the claim (refusing any other shape) and returns the thumbprint; whether
the connection presents that certificate is checked by the server, which sees the TLS layer.

Subscriber tokens use a different ``typ`` and audience, so neither kind of token can stand
in for the other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import jwt

from herald import limits
from herald.core.lru import Lru
from herald.core.policy import Principal
from herald.core.scopes import ScopeSet
from herald.core.topics import TopicPattern
from herald.crypto.certbinding import CNF_CLAIM, cnf_claim, parse_cnf
from herald.crypto.signing import LoadedSigningKey
from herald.errors import BadRequest, InvalidToken

__all__ = [
    "ACCESS_TOKEN_TYP",
    "ALLOWED_ALGORITHMS",
    "OPERATOR_TOKEN_TYP",
    "SUBSCRIBER_TOKEN_TYP",
    "AccessClaims",
    "OperatorClaims",
    "SubscriberClaims",
    "TokenService",
]

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 - a media type, not a secret
SUBSCRIBER_TOKEN_TYP = "herald-sub+jwt"  # noqa: S105 - a media type, not a secret
OPERATOR_TOKEN_TYP = "herald-op+jwt"  # noqa: S105 - a media type, not a secret
#: PyJWT knows Ed25519 JWS only as ``EdDSA`` (RFC 9864 renamed it; see REFERENCES.md).
ALLOWED_ALGORITHMS = ("EdDSA",)
#: Tokens longer than this are refused before any parsing.
MAX_TOKEN_LENGTH = 8192
#: A ``kid`` longer than this is never ours (ours are RFC 7638 thumbprints, 43 characters).
_KID_MAX = 128
_REQUIRED = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified identity behind an access token.

    ``cnf_x5t_s256`` is the RFC 8705 §3.1 thumbprint of the client certificate the token is
    bound to, or ``None`` for an unbound token.
    """

    tenant_id: str
    client_id: str
    scopes: ScopeSet
    jti: str
    expires_at: int
    issued_at: int = 0
    cnf_x5t_s256: str | None = None

    @property
    def principal(self) -> Principal:
        """The app as the authorisation policy sees it."""
        return Principal.app(self.tenant_id, self.client_id, self.scopes)


@dataclass(frozen=True, slots=True)
class SubscriberClaims:
    """The verified identity behind a subscriber token."""

    tenant_id: str
    client_id: str
    recipient: str
    patterns: tuple[TopicPattern, ...]
    jti: str
    expires_at: int
    issued_at: int = 0

    @property
    def principal(self) -> Principal:
        """The recipient as the authorisation policy sees it."""
        return Principal.subscriber(self.tenant_id, self.recipient, self.patterns, self.client_id)

    def to_bytes(self) -> bytes:
        """JSON for a shared ticket store (the claims were verified when the ticket was made)."""
        return json.dumps(
            [
                self.tenant_id,
                self.client_id,
                self.recipient,
                [p.text for p in self.patterns],
                self.jti,
                self.expires_at,
                self.issued_at,
            ]
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> SubscriberClaims:
        """The claims :meth:`to_bytes` wrote."""
        tenant, client, recipient, patterns, jti, expires_at, issued_at = json.loads(raw)
        return cls(
            tenant,
            client,
            recipient,
            tuple(TopicPattern.parse(p) for p in patterns),
            jti,
            int(expires_at),
            int(issued_at),
        )


@dataclass(frozen=True, slots=True)
class OperatorClaims:
    """The verified identity behind an operator token (``tenant_id`` None: global)."""

    operator_id: str
    tenant_id: str | None
    jti: str
    expires_at: int
    issued_at: int = 0
    #: A console session's CSRF token (the ``csrf`` claim); None for API tokens.
    csrf: str | None = None

    @property
    def client_id(self) -> str:
        """The credential holder whose state (disabled, re-keyed) the token depends on."""
        return self.operator_id

    @property
    def principal(self) -> Principal:
        """The operator as the authorisation policy sees it."""
        return Principal.operator(self.operator_id, self.tenant_id)


_Claims = AccessClaims | SubscriberClaims | OperatorClaims
_C = TypeVar("_C", AccessClaims, SubscriberClaims, OperatorClaims)


class TokenService:
    """Issues and verifies Herald's JWTs with the server's token-signing keys."""

    def __init__(
        self,
        *,
        issuer: str,
        keys: Iterable[LoadedSigningKey],
        clock: Callable[[], float],
        new_jti: Callable[[], str],
    ) -> None:
        self.issuer = issuer
        self.stream_audience = issuer + "/v1/stream"
        self.operator_audience = issuer + "/v1/admin"
        # Newest created first: the newest key that is active and not retired signs, so a
        # key superseded while still pre-published never signs (a later rotation wins).
        ordered = sorted(keys, key=lambda k: (k.created_at, k.kid), reverse=True)
        if not ordered:
            raise ValueError("no token-signing key")
        self._ordered = ordered
        self._by_kid = {k.kid: k for k in ordered}
        self._clock = clock
        self._new_jti = new_jti
        # Tokens that verified, by SHA-256 of the token: (typ, claims, kid, exp). A hit
        # skips the signature check (the costliest step of a request) until ``exp``; the
        # kid must still be known and unretired. Revocation is checked by the caller on
        # every request (herald.service.revocation), cached or not.
        self._verified: Lru[bytes, tuple[str, _Claims, str, int]] = Lru(limits.TOKEN_CACHE_SIZE)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _signing_key(self) -> LoadedSigningKey:
        """The key that signs now: the newest-created active key that is not retired.

        A pre-published key (activating in the future) is in the JWKS but does not sign yet,
        so verifiers that cache the JWKS know it before they see a token it signed.
        """
        now = self._now()
        for key in self._ordered:
            if key.active(now) and not key.retired(now):
                return key
        raise InvalidToken("no token-signing key is active")  # pragma: no cover - ops error

    # -- issuing ---------------------------------------------------------------------------
    def _sign(self, claims: dict[str, Any], typ: str) -> str:
        key = self._signing_key()
        return jwt.encode(
            claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid, "typ": typ}
        )

    def issue_access(
        self,
        *,
        tenant_id: str,
        client_id: str,
        scopes: ScopeSet,
        ttl: int,
        bound_to: str | None = None,
    ) -> tuple[str, int]:
        """Return ``(jwt, expires_in)`` for an app (RFC 9068 §2.2 claims).

        With ``bound_to`` (a client certificate's ``x5t#S256`` thumbprint) the token is
        certificate-bound: it carries ``cnf`` (RFC 8705 §3.1).
        """
        ttl = min(ttl, limits.ACCESS_TOKEN_TTL_MAX)
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.issuer,
            "sub": client_id,
            "client_id": client_id,
            "tenant": tenant_id,
            "scope": str(scopes),
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": self._new_jti(),
        }
        if bound_to is not None:
            claims[CNF_CLAIM] = cnf_claim(bound_to)
        return self._sign(claims, ACCESS_TOKEN_TYP), ttl

    def issue_subscriber(
        self,
        *,
        tenant_id: str,
        client_id: str,
        recipient: str,
        patterns: Iterable[TopicPattern],
        ttl: int,
    ) -> tuple[str, int]:
        """Return ``(jwt, expires_in)`` for one recipient limited to ``patterns``."""
        ttl = min(ttl, limits.SUBSCRIBER_TOKEN_TTL_MAX)
        now = int(self._clock())
        claims = {
            "iss": self.issuer,
            "aud": self.stream_audience,
            "sub": recipient,
            "client_id": client_id,
            "tenant": tenant_id,
            "topics": [p.text for p in patterns],
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": self._new_jti(),
        }
        return self._sign(claims, SUBSCRIBER_TOKEN_TYP), ttl

    def issue_operator(
        self, *, operator_id: str, tenant_id: str | None, ttl: int, csrf: str | None = None
    ) -> tuple[str, int]:
        """Return ``(jwt, expires_in)`` for an operator; no ``tenant`` claim when global.

        ``csrf`` (console sessions) is carried as the ``csrf`` claim: the token lives in an
        ``HttpOnly`` cookie, so the page learns the value from the sign-in answer only.
        """
        ttl = min(ttl, limits.OPERATOR_TOKEN_TTL_MAX)
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.operator_audience,
            "sub": operator_id,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": self._new_jti(),
        }
        if tenant_id is not None:
            claims["tenant"] = tenant_id
        if csrf is not None:
            claims["csrf"] = csrf
        return self._sign(claims, OPERATOR_TOKEN_TYP), ttl

    # -- verifying -------------------------------------------------------------------------
    def _cached(self, token: str, typ: str, verify: Callable[[str], _C]) -> _C:
        """``verify(token)``, or the claims of an earlier verification still valid.

        Raises:
            InvalidToken: as ``verify`` does, and for an over-long or empty token.
        """
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        hit = self._verified.get(digest)
        if hit is not None:
            kind, claims, kid, exp = hit
            key = self._by_kid.get(kid)
            if (
                kind == typ
                and exp > self._clock() - limits.JWT_LEEWAY
                and key is not None
                and not key.retired(self._now())
            ):
                return claims  # type: ignore[return-value]  # stored under this typ
        claims_ = verify(token)
        kid = jwt.get_unverified_header(token)["kid"]
        self._verified.put(digest, (typ, claims_, kid, claims_.expires_at))
        return claims_

    def _decode(self, token: str, *, typ: str, audience: str) -> dict[str, Any]:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken from None
        # RFC 9068 §4: "at+jwt" or its full media type "application/at+jwt".
        token_typ = header.get("typ")
        if isinstance(token_typ, str) and token_typ.lower().startswith("application/"):
            token_typ = token_typ[len("application/") :]
        if header.get("alg") not in ALLOWED_ALGORITHMS or token_typ != typ:
            raise InvalidToken
        kid = header.get("kid")
        key = self._by_kid.get(kid) if isinstance(kid, str) else None
        if key is None or key.retired(self._now()):
            raise InvalidToken
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public_key,
                algorithms=list(ALLOWED_ALGORITHMS),
                audience=audience,
                issuer=self.issuer,
                options={
                    "require": _REQUIRED,
                    "strict_aud": True,
                    # Times are checked below against the injected clock, as integers.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            raise InvalidToken from None
        times = [claims.get(name) for name in ("exp", "nbf", "iat")]
        if not all(type(value) is int for value in times):
            raise InvalidToken
        exp, nbf, iat = times
        now, leeway = self._clock(), limits.JWT_LEEWAY
        if exp <= now - leeway or nbf > now + leeway or iat > now + leeway:  # type: ignore[operator]
            raise InvalidToken
        return claims

    def verify_access(self, token: str) -> AccessClaims:
        """Verify an access token; every failure is :class:`InvalidToken`.

        A token verified before is answered from the cache until it expires.
        """
        return self._cached(token, ACCESS_TOKEN_TYP, self._verify_access)

    def _verify_access(self, token: str) -> AccessClaims:
        """The uncached verification."""
        claims = self._decode(token, typ=ACCESS_TOKEN_TYP, audience=self.issuer)
        tenant, client_id, scope = (
            claims.get("tenant"),
            claims.get("client_id"),
            claims.get("scope"),
        )
        if not (isinstance(tenant, str) and isinstance(client_id, str) and isinstance(scope, str)):
            raise InvalidToken
        try:
            scopes = ScopeSet.parse(scope)
        except BadRequest:
            raise InvalidToken from None
        # RFC 8705 §3.1; a cnf the server cannot check is a refusal, never "unbound".
        bound_to = parse_cnf(claims[CNF_CLAIM]) if CNF_CLAIM in claims else None
        return AccessClaims(
            tenant,
            client_id,
            scopes,
            str(claims["jti"]),
            int(claims["exp"]),
            int(claims["iat"]),
            bound_to,
        )

    def verify_subscriber(self, token: str) -> SubscriberClaims:
        """Verify a subscriber token; every failure is :class:`InvalidToken`.

        A token verified before is answered from the cache until it expires.
        """
        return self._cached(token, SUBSCRIBER_TOKEN_TYP, self._verify_subscriber)

    def _verify_subscriber(self, token: str) -> SubscriberClaims:
        """The uncached verification."""
        claims = self._decode(token, typ=SUBSCRIBER_TOKEN_TYP, audience=self.stream_audience)
        tenant, client_id = claims.get("tenant"), claims.get("client_id")
        recipient, topics = claims.get("sub"), claims.get("topics")
        if not (
            isinstance(tenant, str)
            and isinstance(client_id, str)
            and isinstance(recipient, str)
            and isinstance(topics, list)
            and all(isinstance(t, str) for t in topics)
        ):
            raise InvalidToken
        try:
            patterns = tuple(TopicPattern.parse(t) for t in topics)
        except BadRequest:
            raise InvalidToken from None
        return SubscriberClaims(
            tenant,
            client_id,
            recipient,
            patterns,
            str(claims["jti"]),
            int(claims["exp"]),
            int(claims["iat"]),
        )

    def verify_operator(self, token: str) -> OperatorClaims:
        """Verify an operator token; every failure is :class:`InvalidToken`.

        A token verified before is answered from the cache until it expires.
        """
        return self._cached(token, OPERATOR_TOKEN_TYP, self._verify_operator)

    def _verify_operator(self, token: str) -> OperatorClaims:
        """The uncached verification."""
        claims = self._decode(token, typ=OPERATOR_TOKEN_TYP, audience=self.operator_audience)
        operator_id, tenant = claims.get("sub"), claims.get("tenant")
        csrf = claims.get("csrf")
        if not isinstance(operator_id, str) or not (tenant is None or isinstance(tenant, str)):
            raise InvalidToken
        if not (csrf is None or isinstance(csrf, str)):
            raise InvalidToken
        return OperatorClaims(
            operator_id, tenant, str(claims["jti"]), int(claims["exp"]), int(claims["iat"]), csrf
        )

    @staticmethod
    def kind_of(token: str) -> str | None:
        """``"access"``, ``"subscriber"`` or ``"operator"`` by the (unverified) ``typ``.

        Only chooses which verifier to run; the verifier then checks everything.
        """
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        try:
            typ = jwt.get_unverified_header(token).get("typ")
        except jwt.PyJWTError:
            return None
        if typ == SUBSCRIBER_TOKEN_TYP:
            return "subscriber"
        if typ == OPERATOR_TOKEN_TYP:
            return "operator"
        return "access"

    def jwks(self) -> dict[str, Any]:
        """The JWK Set (RFC 7517 §5): every key not retired, pre-published ones included."""
        now = self._now()
        return {"keys": [k.public_jwk() for k in self._ordered if not k.retired(now)]}

    def names_unknown_kid(self, token: str) -> bool:
        """Whether ``token``'s (unverified) header names a ``kid`` this service lacks.

        Only decides whether reloading the keys could help (see
        :meth:`herald.service.runtime.Runtime.verify_access`); verification trusts nothing
        from the header. A malformed token, or one without a string ``kid``, is False.
        """
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return False
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return False
        return isinstance(kid, str) and 0 < len(kid) <= _KID_MAX and kid not in self._by_kid

    @property
    def kids(self) -> frozenset[str]:
        """Every key id this service knows (a changed set means keys were rotated)."""
        return frozenset(self._by_kid)
