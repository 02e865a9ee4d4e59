"""The web console under ``/console/``: static files, the sign-in session, a strict CSP.

* ``/console/`` is the operator console (a single-page app, hash-routed), ``/console/inbox``
  the recipients' live inbox demo; every other ``/console/<file>`` is one of the files
  shipped in :data:`herald.console.STATIC_DIR` (an allow-list made at start-up: a path that
  is not one of them is 404, whatever it contains).
* Every console response carries :data:`CONSOLE_CSP`: scripts and styles from this origin
  only, no inline code, no ``eval``, Trusted Types enforced (no HTML-string sinks; the one
  policy, ``herald-sw``, only names the inbox's service worker), nothing may frame it.
* ``/console/api/session``: sign in (``POST``), who am I (``GET``), sign out (``DELETE``).
  The operator token lives in an ``HttpOnly`` cookie (:mod:`herald.server.session`); the
  page gets the CSRF token in the body and sends it on every state-changing request. All
  other console data comes from the operator API (``/v1/admin/…``, ``/v1/audit/…``), which
  accepts the cookie.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import msgspec
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from herald.console import STATIC_DIR
from herald.core.messages import decode_json
from herald.crypto.tokens import OperatorClaims
from herald.errors import InvalidToken, NotFound
from herald.server.api import runtime
from herald.server.auth import operator_claims
from herald.server.requests import read_body, require_json
from herald.server.responses import json_response
from herald.server.session import check_same_origin, clear_cookie, cookie_token, set_cookie
from herald.service import operators

__all__ = ["CONSOLE_CSP", "console_routes"]

CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; worker-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types herald-sw"
)

_MEDIA = MappingProxyType(
    {
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".svg": "image/svg+xml",
        ".png": "image/png",
        ".ico": "image/x-icon",
        ".json": "application/json",
        ".webmanifest": "application/manifest+json",
    }
)
#: Pages with a path of their own (the operator console routes inside ``#…``).
_PAGES = MappingProxyType({"": "index.html", "inbox": "inbox.html"})
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_BODY_MAX = 4096


def _headers(media: str, etag: str) -> dict[str, str]:
    return {
        "Content-Type": media,
        "Content-Security-Policy": CONSOLE_CSP,
        "Cache-Control": "no-cache",
        "ETag": etag,
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    }


@dataclass(frozen=True, slots=True)
class _File:
    path: Path
    media: str


def _shipped(root: Path) -> Mapping[str, _File]:
    """Every servable file under ``root`` by its URL path (relative, ``/``-separated)."""
    found: dict[str, _File] = {}
    if root.is_dir():
        for path in sorted(root.rglob("*")):
            media = _MEDIA.get(path.suffix)
            if path.is_file() and media is not None and not path.name.startswith("."):
                found[path.relative_to(root).as_posix()] = _File(path, media)
    return MappingProxyType(found)


class StaticFiles:
    """The console's files, each read and hashed (its ETag) once, when first asked for."""

    def __init__(self, root: Path = STATIC_DIR) -> None:
        self.files = _shipped(root)
        self._loaded: dict[str, tuple[bytes, str]] = {}

    def _load(self, name: str, entry: _File) -> tuple[bytes, str]:
        loaded = self._loaded.get(name)
        if loaded is None:
            body = entry.path.read_bytes()
            loaded = body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            self._loaded[name] = loaded
        return loaded

    def response(self, request: Request, name: str) -> Response:
        """The file ``name`` (URL path under ``/console/``), or 404 problem+json."""
        entry = self.files.get(name)
        if entry is None:
            raise NotFound("no such console page or file")
        body, etag = self._load(name, entry)
        headers = _headers(entry.media, etag)
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, headers=headers)


class SessionRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /console/api/session``."""

    name: str
    password: str


def _session_body(operator: dict[str, object], csrf: str, expires_at: int) -> dict[str, object]:
    return {
        "operator": operator,
        "csrf_token": csrf,
        "expires_in": max(0, expires_at - int(time.time())),
        "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at)),
    }


async def sign_in(request: Request) -> Response:
    """``POST /console/api/session``: name + password → session cookie and CSRF token."""
    rt = runtime(request)
    # A sign-in from another site would log the victim into the attacker's account.
    check_same_origin(request)
    raw = await read_body(request, _BODY_MAX)
    require_json(request)
    req = decode_json(raw, SessionRequest)
    address = request.client.host if request.client is not None else None
    granted = await operators.login(rt, req.name, req.password, address, console=True)
    expires_in = int(granted["expires_in"])
    body = _session_body(granted["operator"], granted["csrf_token"], int(time.time()) + expires_in)
    response = json_response(body, headers=_NO_STORE)
    set_cookie(response, granted["access_token"], expires_in)
    return response


async def _console_claims(request: Request) -> OperatorClaims:
    """The console session's claims: the cookie only (a bearer token is not a session)."""
    if request.headers.get("authorization") is not None or cookie_token(request) is None:
        raise InvalidToken("no console session: sign in")
    claims = await operator_claims(request)
    if claims.csrf is None:
        raise InvalidToken("no console session: sign in")
    return claims


async def current_session(request: Request) -> Response:
    """``GET /console/api/session``: the signed-in operator and the CSRF token, or 401."""
    rt = runtime(request)
    claims = await _console_claims(request)
    record = await rt.store.get_operator(claims.operator_id)
    if record is None:  # removed since: the session is over
        raise InvalidToken("no console session: sign in")
    assert claims.csrf is not None  # noqa: S101 - checked by _console_claims
    body = _session_body(operators.operator_view(record), claims.csrf, claims.expires_at)
    return json_response(body, headers=_NO_STORE)


async def sign_out(request: Request) -> Response:
    """``DELETE /console/api/session``: revoke the session's token and clear the cookie."""
    rt = runtime(request)
    claims = await _console_claims(request)
    await operators.logout(rt, claims)
    response = Response(status_code=204, headers=_NO_STORE)
    clear_cookie(response)
    return response


def console_routes() -> list[BaseRoute]:
    """The console's routes (the static allow-list is read once, here)."""
    files = StaticFiles()

    async def page(request: Request) -> Response:
        name = request.path_params.get("name", "")
        return files.response(request, _PAGES.get(name, name))

    async def bare(request: Request) -> Response:
        return RedirectResponse("/console/", status_code=308)

    return [
        Route("/console/api/session", sign_in, methods=["POST"]),
        Route("/console/api/session", current_session, methods=["GET"]),
        Route("/console/api/session", sign_out, methods=["DELETE"]),
        Route("/console", bare, methods=["GET"]),
        Route("/console/", page, methods=["GET", "HEAD"]),
        Route("/console/{name:path}", page, methods=["GET", "HEAD"]),
    ]
