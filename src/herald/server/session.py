"""Web console sessions: the operator token in a cookie, and CSRF protection.

The console signs an operator in with ``POST /console/api/session``; the answer sets the
operator token as a cookie that page scripts cannot read and that browsers send only to
this origin, and returns a CSRF token in the body. The cookie is:

* ``__Host-`` prefixed: ``Secure``, ``Path=/``, no ``Domain`` — a sibling host cannot set
  or shadow it;
* ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no cross-site request carries
  it), and lives exactly as long as the token (``Max-Age``).

A request authenticated by the cookie whose method changes state must also carry the CSRF
token in ``X-CSRF-Token`` (compared in constant time with the token's ``csrf`` claim), and,
when the browser says where it comes from (``Sec-Fetch-Site``, ``Origin``), come from this
origin. ``Authorization: Bearer`` requests need neither: a browser never adds that header by
itself. A bearer header wins over the cookie.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection
from starlette.responses import Response

from herald.crypto.tokens import OperatorClaims
from herald.errors import Forbidden

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "check_csrf",
    "check_same_origin",
    "clear_cookie",
    "cookie_token",
    "set_cookie",
]

COOKIE = "__Host-herald-console"
CSRF_HEADER = "x-csrf-token"
#: Methods that cannot change state (RFC 9110 §9.2.1); every other one needs the token.
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_COOKIE = 8192


def cookie_token(request: HTTPConnection) -> str | None:
    """The console session's operator token, when the request carries the cookie."""
    value = request.cookies.get(COOKIE)
    if not value or len(value) > _MAX_COOKIE:
        return None
    return value


def set_cookie(response: Response, token: str, max_age: int) -> None:
    """Attach the session cookie (see the module docstring for its attributes)."""
    response.set_cookie(
        COOKIE,
        token,
        max_age=max_age,
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response) -> None:
    """Tell the browser to forget the session cookie."""
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")


def check_same_origin(request: HTTPConnection) -> None:
    """Refuse a request that the browser says comes from another site.

    ``Sec-Fetch-Site`` (Fetch Metadata) when sent, else ``Origin`` when sent; a client that
    sends neither (not a browser) passes — the CSRF token still applies to it.

    Raises:
        Forbidden: slug ``csrf``.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site not in {"same-origin", "none"}:
            raise Forbidden("cross-site requests are refused", slug="csrf")
        return
    origin = request.headers.get("origin")
    if origin is None:
        return
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    if parts.scheme != request.url.scheme or parts.netloc.lower() != host.lower():
        raise Forbidden("cross-origin requests are refused", slug="csrf")


def check_csrf(request: HTTPConnection, claims: OperatorClaims) -> None:
    """A cookie-authenticated request: same origin, and the CSRF token when it changes state.

    Raises:
        Forbidden: slug ``csrf``, without saying which check failed beyond what the caller
            needs to mend its request.
    """
    check_same_origin(request)
    method = request.scope.get("method", "GET")
    if method in _SAFE:
        return
    sent = request.headers.get(CSRF_HEADER, "")
    expected = claims.csrf
    if expected is None or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden(
            "a console request that changes state needs the session's X-CSRF-Token header",
            slug="csrf",
        )
