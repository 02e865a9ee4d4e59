"""The one authenticated request path of the SDK: token, signing, safe retries.

:class:`ApiClient` owns the HTTP connections and the OAuth 2.0 access token, and sends every
API call through :meth:`ApiClient._request`, which signs state-changing requests (RFC 9421)
and retries only what is safe to repeat. :class:`~herald.client.AsyncPublisher` builds the
API on top of it.
"""

from __future__ import annotations

import asyncio
import base64
import json as jsonlib
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote_plus, urlencode

import httpx

from herald.client._errors import HeraldClientError, ProblemError, problem_from_http
from herald.client._signing import RequestSigner
from herald.client._transport import (
    ClientCert,
    backoff_delay,
    connection_failed,
    is_certificate_error,
    make_async_client,
)

__all__ = [
    "ASSERTION_TYPE",
    "RETRY_AFTER_MAX",
    "TOKEN_REFRESH_FRACTION",
    "TOKEN_REFRESH_MARGIN",
    "ApiClient",
    "ClientAuth",
    "Sleep",
    "encode_json",
    "json_object",
    "without_none",
]

#: Refresh a cached access token when less than this many seconds of it remain...
TOKEN_REFRESH_MARGIN = 30.0
#: ...or less than this fraction of its lifetime, whichever is smaller (short-lived tokens).
TOKEN_REFRESH_FRACTION = 0.1
#: A ``Retry-After`` longer than this (seconds) is not waited for: the error is raised.
RETRY_AFTER_MAX = 60.0

_JSON = "application/json"
_UNAUTHORIZED = 401
_NOT_IMPLEMENTED = 501
_TOO_MANY_REQUESTS = 429
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Sleep = Callable[[float], Awaitable[None]]
#: How the client authenticates at ``/oauth/token`` and ``/oauth/revoke``.
ClientAuth = Literal["client_secret_basic", "private_key_jwt"]
#: RFC 7523 §2.2: the ``client_assertion_type`` of a JWT client assertion.
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class ApiClient:
    """An authenticated connection to a Herald server; the base of ``AsyncPublisher``.

    Args:
        base_url: The server's base URL, e.g. ``https://127.0.0.1:8443``.
        client_id: The app's OAuth client id.
        client_secret: The app's OAuth client secret; ``None`` to authenticate with
            ``private_key_jwt`` instead.
        ca: A CA file to trust instead of the system store (the dev CA of ``herald init``).
        scope: Space-separated scopes to request; default: all of the app's scopes.
        transport: An ``httpx`` transport to use instead of the network (tests).
        max_retries: Retries after the first attempt for retryable failures.
        clock: Monotonic clock in seconds, used for token expiry.
        sleep: Coroutine function used to wait between retries.
        signer: Signs every state-changing request (RFC 9421), the token request included.
        client_auth: ``"client_secret_basic"`` (the secret in an ``Authorization: Basic``
            header) or ``"private_key_jwt"`` (RFC 7523: a client assertion signed with the
            ``signer``'s Ed25519 key, fresh for every request). By default the secret is
            used when there is one, else the signer's key.
        client_cert: ``(cert_file, key_file)`` presented on every connection (mutual TLS):
            the server binds the access token to it (RFC 8705), and the token is then
            accepted only over connections presenting the same certificate.

    Raises:
        HeraldClientError: the chosen method lacks what it needs (a secret; an Ed25519
            ``signer``).
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str | None,
        *,
        ca: str | Path | None = None,
        scope: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 3,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        signer: RequestSigner | None = None,
        client_auth: ClientAuth | None = None,
        client_cert: ClientCert | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if client_auth is None:
            client_auth = "client_secret_basic" if client_secret else "private_key_jwt"
        if client_auth not in {"client_secret_basic", "private_key_jwt"}:
            raise HeraldClientError(f"unknown client authentication method {client_auth!r}")
        if client_auth == "client_secret_basic" and not client_secret:
            raise HeraldClientError("client_secret_basic needs the client secret")
        if client_auth == "private_key_jwt" and (signer is None or not signer.can_assert):
            raise HeraldClientError(
                "private_key_jwt needs an Ed25519 signing key (signer); or give the client secret"
            )
        self._client_auth: ClientAuth = client_auth
        self._base_url = base_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._max_retries = max_retries
        self._clock = clock
        self._sleep = sleep
        self._signer = signer
        self._client = make_async_client(
            self._base_url, ca=ca, transport=transport, client_cert=client_cert
        )
        self._token: str | None = None
        self._token_refresh_at = 0.0
        self._token_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections; the publisher cannot be used afterwards."""
        await self._client.aclose()

    # -- token ---------------------------------------------------------------------------

    async def token(self) -> str:
        """Return a valid access token, fetching a new one when needed.

        Returns:
            The bearer access token (a JWT).

        Raises:
            AuthenticationError: The client id or secret was refused.
            ConnectionFailed: The server could not be reached.
        """
        async with self._token_lock:
            if self._token is None or self._clock() >= self._token_refresh_at:
                self._token = await self._fetch_token()
            return self._token

    async def _fetch_token(self) -> str:
        form = {"grant_type": "client_credentials"}
        if self._scope is not None:
            form["scope"] = self._scope
        started = self._clock()

        def build() -> httpx.Request:
            # A fresh assertion per attempt: a retry must not replay a used jti.
            return self._authenticated_post("/oauth/token", form)

        # Issuing a token changes nothing on the server, so it is always safe to retry.
        response = await self._send(build, retry=True)
        if not response.is_success:
            raise _problem(response)
        body = json_object(response)
        access_token = body.get("access_token")
        expires_in = body.get("expires_in")
        token_type = body.get("token_type")
        if (
            not isinstance(access_token, str)
            or not access_token
            or not isinstance(expires_in, int | float)
            or isinstance(expires_in, bool)
            or expires_in <= 0
            or not isinstance(token_type, str)
            or token_type.lower() != "bearer"
        ):
            raise HeraldClientError("the token endpoint answered an unexpected body")
        margin = min(TOKEN_REFRESH_MARGIN, TOKEN_REFRESH_FRACTION * expires_in)
        # Count the lifetime from before the request was sent: errs on the early side.
        self._token_refresh_at = started + expires_in - margin
        return access_token

    async def revoke_token(self, token: str | None = None) -> None:
        """Revoke one of this client's tokens (RFC 7009 ``POST /oauth/revoke``).

        Args:
            token: The access or subscriber token; by default the access token this client
                holds, which is then forgotten (the next call fetches a new one).

        Raises:
            ProblemError: The server refused (e.g. the token belongs to another client).
            ConnectionFailed: The server could not be reached, retries included.
        """
        target = token if token is not None else self._token
        if target is None:
            return  # nothing issued yet: nothing to revoke

        def build() -> httpx.Request:
            return self._authenticated_post("/oauth/revoke", {"token": target})

        # Revoking twice is the same as once (RFC 7009 §2.2): safe to retry.
        response = await self._send(build, retry=True)
        if not response.is_success:
            raise _problem(response)
        self._invalidate_token(target)

    def _authenticated_post(self, path: str, form: Mapping[str, str]) -> httpx.Request:
        """A signed form POST to an OAuth endpoint, with the client's authentication.

        ``client_secret_basic``: RFC 6749 §2.3.1, id and secret form-urlencoded, then
        base64 in an ``Authorization: Basic`` header. ``private_key_jwt``: RFC 7523 §2.2,
        ``client_assertion_type`` and a new ``client_assertion`` in the form (whose ``aud``
        is the server's issuer identifier, its base URL).
        """
        fields = dict(form)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": _JSON}
        if self._client_auth == "private_key_jwt":
            if self._signer is None:  # pragma: no cover - refused in __init__
                raise HeraldClientError("private_key_jwt needs an Ed25519 signing key")
            fields["client_assertion_type"] = ASSERTION_TYPE
            fields["client_assertion"] = self._signer.client_assertion(
                self._client_id, self._base_url
            )
        else:
            secret = self._client_secret or ""
            pair = f"{quote_plus(self._client_id)}:{quote_plus(secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        content = urlencode(fields).encode("ascii")
        return self._prepare(
            self._client.build_request("POST", path, content=content, headers=headers)
        )

    def _invalidate_token(self, token: str) -> None:
        # Only forget the token that was refused: another task may have refreshed already.
        if self._token == token:
            self._token = None

    # -- the one request path ------------------------------------------------------------

    def _prepare(self, request: httpx.Request) -> httpx.Request:
        """Sign a request right before it is sent (RFC 9421), once per attempt.

        The body is already the exact bytes that go on the wire; every attempt, retries
        included, gets a fresh ``created`` and ``nonce``. Safe methods are not signed.
        """
        if self._signer is None or request.method.upper() in _SAFE_METHODS:
            return request
        return self._signer.sign(request)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        retry: bool | None = None,
    ) -> httpx.Response:
        """Send one API call with the bearer token; every API call goes through here.

        Args:
            method: The HTTP method.
            path: The path (and query) below the base URL.
            json: A JSON value for the body, serialised exactly once to bytes.
            headers: Extra headers.
            idempotency_key: Sent as ``Idempotency-Key``; makes a POST safe to retry.
            retry: Whether retryable failures are retried; by default only safe methods and
                requests with an idempotency key are.

        Returns:
            The 2xx response.

        Raises:
            ProblemError: The server answered non-2xx (``AuthenticationError`` for 401).
            ConnectionFailed: The server could not be reached.
        """
        content = None if json is None else encode_json(json)
        if retry is None:
            retry = method.upper() in _SAFE_METHODS or idempotency_key is not None
        refreshed = False
        while True:
            token = await self.token()
            build = self._builder(
                method, path, content, headers=headers, idempotency_key=idempotency_key, token=token
            )
            response = await self._send(build, retry=retry)
            # An access token can be revoked or the server's keys rotated before it
            # expires: fetch a new one once, then give up.
            if response.status_code == _UNAUTHORIZED and not refreshed:
                refreshed = True
                self._invalidate_token(token)
                continue
            if not response.is_success:
                raise _problem(response)
            return response

    def _builder(
        self,
        method: str,
        path: str,
        content: bytes | None,
        *,
        headers: Mapping[str, str] | None,
        idempotency_key: str | None,
        token: str,
    ) -> Callable[[], httpx.Request]:
        all_headers = dict(headers or {})
        all_headers["Authorization"] = f"Bearer {token}"
        all_headers["Accept"] = f"{_JSON}, application/problem+json"
        if content is not None:
            all_headers["Content-Type"] = _JSON
        if idempotency_key is not None:
            all_headers["Idempotency-Key"] = idempotency_key

        def build() -> httpx.Request:
            request = self._client.build_request(method, path, content=content, headers=all_headers)
            return self._prepare(request)

        return build

    async def _send(self, build: Callable[[], httpx.Request], *, retry: bool) -> httpx.Response:
        """Send ``build()``; retry network errors, 429 and 5xx (not 501) when ``retry``."""
        attempt = 0
        resigned = False
        while True:
            retries_left = retry and attempt < self._max_retries
            try:
                response = await self._client.send(build())
            except httpx.TransportError as exc:
                if not retries_left or not _retryable_error(exc):
                    raise connection_failed(self._base_url, exc) from exc
                delay = backoff_delay(attempt)
            else:
                if not resigned and _signed_too_early(response):
                    # The server refused the signature as older than its own start (its
                    # replay store was emptied by a restart) and stored nothing: sign again
                    # in the next second — once, whatever ``retry`` says.
                    resigned = True
                    await self._sleep(1.0 - time.time() % 1.0 + 0.01)
                    continue
                if not retries_left or not _retryable_status(response.status_code):
                    return response
                retry_after = _retry_after(response)
                if retry_after is not None and retry_after > RETRY_AFTER_MAX:
                    return response
                delay = retry_after if retry_after is not None else backoff_delay(attempt)
            attempt += 1
            await self._sleep(delay)


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are refused (they are not JSON)."""
    # Serialised once: these exact bytes are what a request signature will cover.
    return jsonlib.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def without_none(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` without the members whose value is ``None`` (the server's defaults apply)."""
    return {name: value for name, value in fields.items() if value is not None}


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object body; :class:`HeraldClientError` for anything else."""
    try:
        body = response.json()
    except ValueError as exc:
        raise HeraldClientError("the server answered a body that is not JSON") from exc
    if not isinstance(body, dict):
        raise HeraldClientError("the server answered an unexpected body")
    return body


def _problem(response: httpx.Response) -> ProblemError:
    return problem_from_http(
        response.status_code,
        response.headers.get("content-type"),
        response.content,
        response.reason_phrase,
    )


def _signed_too_early(response: httpx.Response) -> bool:
    return (
        response.status_code == _UNAUTHORIZED
        and response.headers.get("content-type", "").startswith("application/problem+json")
        and b"urn:herald:problem:request-expired" in response.content
        and b"before the server started" in response.content
    )


def _retryable_status(status: int) -> bool:
    return status == _TOO_MANY_REQUESTS or (status >= 500 and status != _NOT_IMPLEMENTED)


def _retryable_error(exc: httpx.TransportError) -> bool:
    # A certificate that is not trusted now will not be trusted in 200 ms either.
    if is_certificate_error(exc):
        return False
    return isinstance(exc, httpx.NetworkError | httpx.TimeoutException | httpx.RemoteProtocolError)


def _retry_after(response: httpx.Response) -> float | None:
    # RFC 9110 §10.2.3: delay-seconds (the HTTP-date form falls back to our own backoff).
    value = response.headers.get("retry-after", "").strip()
    if not (value.isascii() and value.isdigit()):
        return None
    return float(value)
