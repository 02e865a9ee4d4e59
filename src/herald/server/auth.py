"""Authentication of any kind of caller into a policy :class:`~herald.core.policy.Principal`.

App routes verify access tokens with :func:`herald.server.api.access_claims`; routes that
several kinds of caller use (the audit log) and the operator routes verify here, accepting
exactly the token kinds their action admits in :data:`herald.core.policy.POLICY`. A token
of another kind is refused as invalid — it was not meant for this API (its audience).

Operators present their token as a bearer token, or — the web console — in the session
cookie, which is only ever an operator token and needs the CSRF checks of
:mod:`herald.server.session`.
"""

from __future__ import annotations

from starlette.requests import Request

from herald.core.policy import Action, Kind, Principal, kinds_for
from herald.crypto.tokens import OperatorClaims
from herald.errors import InvalidToken
from herald.server.api import access_claims, runtime, subscriber_claims
from herald.server.requests import bearer_token
from herald.server.session import check_csrf, cookie_token
from herald.service import revocation, throttle

__all__ = ["authenticate", "operator_claims"]


async def operator_claims(request: Request) -> OperatorClaims:
    """Verify an operator token: signature, claims, live (not logged out/disabled).

    A bearer token, else the console session cookie (then with the CSRF checks).
    """
    rt = runtime(request)
    token = bearer_token(request)
    from_cookie = token is None
    if token is None:
        token = cookie_token(request)
    if token is None:
        rt.metrics.record_auth_failure("missing_token")
        raise InvalidToken("an operator token is required (Authorization: Bearer …)")
    try:
        claims = await rt.verify_operator(token)
    except InvalidToken:
        rt.metrics.record_auth_failure("invalid_token")
        raise
    if from_cookie:
        check_csrf(request, claims)
    await revocation.ensure_live(rt, claims)
    # Operators share the per-app bucket size: a person's console is one client.
    request.state.ratelimit = await throttle.admit_app(rt, claims.operator_id)
    return claims


async def authenticate(request: Request, action: Action) -> Principal:
    """The caller of ``request`` as a principal of a kind that ``action`` admits.

    Raises:
        InvalidToken: no token, or one that does not verify as a kind the action admits.
    """
    rt = runtime(request)
    kinds = kinds_for(action)
    token = bearer_token(request)
    if token is None and Kind.OPERATOR in kinds and cookie_token(request) is not None:
        return (await operator_claims(request)).principal
    if token is None:
        rt.metrics.record_auth_failure("missing_token")
        raise InvalidToken("a token is required (Authorization: Bearer …)")
    kind = rt.token_service().kind_of(token)
    if kind == "subscriber" and Kind.SUBSCRIBER in kinds:
        return (await subscriber_claims(request, token)).principal
    if kind == "operator" and Kind.OPERATOR in kinds:
        return (await operator_claims(request)).principal
    if Kind.APP in kinds:
        return (await access_claims(request)).principal  # any other typ fails to verify
    rt.metrics.record_auth_failure("invalid_token")
    raise InvalidToken
