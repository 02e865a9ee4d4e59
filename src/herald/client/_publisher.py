"""The asynchronous publisher: OAuth2 client credentials, publish with safe retries."""

from __future__ import annotations

import asyncio
import base64
import json as jsonlib
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, quote_plus, urlencode

import httpx

from herald.client._e2e import (
    Devices,
    build_e2e_message,
    devices_path,
    new_message_id,
    parse_device_list,
)
from herald.client._errors import HeraldClientError, ProblemError, problem_from_http
from herald.client._signing import RequestSigner
from herald.client._transport import (
    backoff_delay,
    connection_failed,
    is_certificate_error,
    make_async_client,
)
from herald.crypto.e2e import b64url_encode, is_valid_public_key

__all__ = ["AsyncPublisher", "PublishResult"]

#: Refresh a cached access token when less than this many seconds of it remain...
TOKEN_REFRESH_MARGIN = 30.0
#: ...or less than this fraction of its lifetime, whichever is smaller (short-lived tokens).
TOKEN_REFRESH_FRACTION = 0.1
#: A ``Retry-After`` longer than this (seconds) is not waited for: the error is raised.
RETRY_AFTER_MAX = 60.0
#: ``publish_e2e`` fetches at most this many recipients' device lists at once.
DEVICE_FETCH_CONCURRENCY = 8

_JSON = "application/json"
_UNAUTHORIZED = 401
_NOT_IMPLEMENTED = 501
_TOO_MANY_REQUESTS = 429
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The server's receipt for one accepted (durably stored) message.

    Attributes:
        id: The message id (a UUIDv7).
        topic: The topic the message was published to.
        audit_index: Index of the message's entry in the audit log.
        leaf_hash: Hex RFC 9162 leaf hash of that entry, to check an inclusion proof against.
    """

    id: str
    topic: str
    audit_index: int
    leaf_hash: str


class AsyncPublisher:
    """Publishes messages to a Herald server.

    Authenticates with the OAuth 2.0 client credentials grant (RFC 6749 §4.4), caches the
    access token and refreshes it before it expires. Every publish carries an
    ``Idempotency-Key``; network errors, 429 and 5xx answers are retried with the same key,
    so a retry never publishes twice.

    Example::

        async with AsyncPublisher(url, client_id, secret, ca=".herald/tls/ca.pem") as pub:
            receipt = await pub.publish("orders.shipped", title="Order 123 shipped")

    Args:
        base_url: The server's base URL, e.g. ``https://127.0.0.1:8443``.
        client_id: The app's OAuth client id.
        client_secret: The app's OAuth client secret.
        ca: A CA file to trust instead of the system store (the dev CA of ``herald init``).
        scope: Space-separated scopes to request; default: all of the app's scopes.
        transport: An ``httpx`` transport to use instead of the network (tests).
        max_retries: Retries after the first attempt for retryable failures.
        clock: Monotonic clock in seconds, used for token expiry.
        sleep: Coroutine function used to wait between retries.
        signer: Signs every state-changing request (RFC 9421), the token request included;
            Herald refuses unsigned ones unless its operator turned signatures off.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        ca: str | Path | None = None,
        scope: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 3,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        signer: RequestSigner | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self._base_url = base_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._max_retries = max_retries
        self._clock = clock
        self._sleep = sleep
        self._signer = signer
        self._client = make_async_client(self._base_url, ca=ca, transport=transport)
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
        content = urlencode(form).encode("ascii")
        headers = {
            "Authorization": self._basic_credentials(),
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": _JSON,
        }
        started = self._clock()

        def build() -> httpx.Request:
            return self._prepare(
                self._client.build_request("POST", "/oauth/token", content=content, headers=headers)
            )

        # Issuing a token changes nothing on the server, so it is always safe to retry.
        response = await self._send(build, retry=True)
        if not response.is_success:
            raise _problem(response)
        body = _json_object(response)
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

    def _basic_credentials(self) -> str:
        # RFC 6749 §2.3.1: id and secret are form-urlencoded before the Basic encoding.
        pair = f"{quote_plus(self._client_id)}:{quote_plus(self._client_secret)}"
        return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")

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
        content = None if json is None else _encode_json(json)
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

    # -- API -----------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        *,
        title: str | None = None,
        body: str | None = None,
        data: Mapping[str, Any] | None = None,
        priority: str | None = None,
        ttl: int | None = None,
        recipients: list[str] | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        """Publish one message (``POST /v1/messages``).

        Args:
            topic: The topic, e.g. ``orders.shipped``.
            title: Short title.
            body: Message text.
            data: A JSON object delivered with the message.
            priority: ``low``, ``normal`` (server default), ``high`` or ``urgent``.
            ttl: Seconds the message stays deliverable.
            recipients: Recipient ids that each get an in-app delivery.
            idempotency_key: Key that makes the publish safe to repeat; a random UUID by
                default. Pass your own to de-duplicate across process restarts.

        Returns:
            The receipt of the durably stored message.

        Raises:
            ProblemError: The server refused the message.
            ConnectionFailed: The server could not be reached, retries included.
        """
        message = _without_none(
            {
                "topic": topic,
                "title": title,
                "body": body,
                "data": data,
                "priority": priority,
                "ttl": ttl,
                "recipients": recipients,
            }
        )
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
        response = await self._request("POST", "/v1/messages", json=message, idempotency_key=key)
        return _publish_result(_json_object(response), topic)

    async def publish_e2e(
        self,
        topic: str,
        *,
        recipients: list[str],
        title: str | None = None,
        body: str | None = None,
        data: Mapping[str, Any] | None = None,
        priority: str | None = None,
        ttl: int | None = None,
        devices: Devices | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        """Publish one end-to-end encrypted message (``POST /v1/messages`` with ``e2e``).

        Title, body and data are sealed with HPKE (RFC 9180, suite
        ``hpke-base-x25519-sha256-aes128gcm``) to every device of every recipient, each
        payload bound to the message id, the recipient and the device; Herald stores and
        forwards them without being able to read them. The message id is generated here
        (a UUIDv7) because it is sealed into the payloads. Topic, recipients, priority and
        ttl travel in clear: the server needs them to route the message.

        Args:
            topic: The topic, e.g. ``orders.shipped``.
            recipients: Recipient ids; each must have at least one registered device.
            title: Short title (sealed).
            body: Message text (sealed).
            data: A JSON object (sealed).
            priority: ``low``, ``normal`` (server default), ``high`` or ``urgent``.
            ttl: Seconds the message stays deliverable.
            devices: For each recipient, ``(device_id, public_key_raw)`` pairs to seal to.
                By default each recipient's devices are fetched from the server
                (:meth:`list_devices`); pass keys verified out of band to not depend on
                the server for them.
            idempotency_key: As for :meth:`publish`; a random UUID by default. Retries
                resend the very same sealed body. A *new* call with the same key seals
                anew (new message id, new ciphertexts), so the server answers
                ``idempotency-key-reused`` instead of publishing twice.

        Returns:
            The receipt of the durably stored message.

        Raises:
            HeraldClientError: A recipient has no device, a key is invalid, or the content
                is larger than 32 KiB as JSON.
            ProblemError: The server refused the message (or a device list).
            ConnectionFailed: The server could not be reached, retries included.
        """
        if devices is None:
            devices = await self._fetch_devices(recipients)
        message = build_e2e_message(
            message_id=new_message_id(),
            topic=topic,
            recipients=recipients,
            devices=devices,
            title=title,
            body=body,
            data=data,
            priority=priority,
            ttl=ttl,
        )
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
        response = await self._request("POST", "/v1/messages", json=message, idempotency_key=key)
        return _publish_result(_json_object(response), topic)

    async def _fetch_devices(self, recipients: list[str]) -> dict[str, list[tuple[str, bytes]]]:
        limit = asyncio.Semaphore(DEVICE_FETCH_CONCURRENCY)

        async def fetch(recipient: str) -> list[tuple[str, bytes]]:
            async with limit:
                response = await self._request("GET", devices_path(recipient))
            return parse_device_list(_json_object(response), recipient)

        unique = list(dict.fromkeys(recipients))
        tasks = [asyncio.ensure_future(fetch(recipient)) for recipient in unique]
        try:
            lists = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one list failed: the publish fails, stop the other fetches
                task.cancel()
            raise
        return dict(zip(unique, lists, strict=True))

    async def list_devices(self, recipient: str) -> list[dict[str, Any]]:
        """List a recipient's registered devices (``GET /v1/recipients/{recipient}/devices``).

        Args:
            recipient: The recipient id.

        Returns:
            The device objects as the server sent them: ``{"device_id", "public_key"
            (unpadded base64url), "created_at"}``.
        """
        response = await self._request("GET", devices_path(recipient))
        devices = _json_object(response).get("devices")
        if not isinstance(devices, list) or not all(isinstance(d, dict) for d in devices):
            raise HeraldClientError("the server answered an unexpected body")
        return devices

    async def register_device(
        self, recipient: str, public_key_raw: bytes, label: str | None = None
    ) -> dict[str, Any]:
        """Register a device public key for a recipient, as the app (needs ``admin`` scope).

        Devices that enrol themselves use
        :func:`~herald.client.register_device_with_token` instead. Not retried: a repeat
        after a lost answer could register the key twice.

        Args:
            recipient: The recipient the device belongs to.
            public_key_raw: The device's 32-byte X25519 public key.
            label: A human label for the device.

        Returns:
            ``{"device_id", "recipient", "public_key", "created_at"}``.

        Raises:
            HeraldClientError: ``public_key_raw`` is not a valid X25519 public key.
            ProblemError: The server refused the registration.
        """
        if not is_valid_public_key(public_key_raw):
            raise HeraldClientError("public_key_raw is not a valid 32-byte X25519 public key")
        payload = _without_none({"public_key": b64url_encode(public_key_raw), "label": label})
        response = await self._request("POST", devices_path(recipient), json=payload)
        return _json_object(response)

    async def publish_batch(
        self, messages: list[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> list[PublishResult | ProblemError]:
        """Publish up to 1,000 messages at once (``POST /v1/messages:batch``).

        Args:
            messages: Message objects with the fields of :meth:`publish`; ``None`` values
                are left out.
            idempotency_key: As for :meth:`publish`; a random UUID by default.

        Returns:
            One entry per message, in order: a :class:`PublishResult` for a stored message
            or the :class:`ProblemError` that explains why it was refused.

        Raises:
            ProblemError: The whole batch was refused.
            ConnectionFailed: The server could not be reached, retries included.
        """
        payload = {"messages": [_without_none(message) for message in messages]}
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
        response = await self._request(
            "POST", "/v1/messages:batch", json=payload, idempotency_key=key
        )
        results = _json_object(response).get("results")
        if not isinstance(results, list):
            raise HeraldClientError("the server answered an unexpected body")
        out: list[PublishResult | ProblemError] = []
        for item, message in zip(results, messages, strict=False):
            if isinstance(item, dict) and isinstance(item.get("error"), dict):
                out.append(ProblemError.from_problem(item["error"]))
            elif isinstance(item, dict):
                out.append(_publish_result(item, str(message.get("topic", ""))))
            else:
                raise HeraldClientError("the server answered an unexpected body")
        return out

    async def get_message(self, message_id: str) -> dict[str, Any]:
        """Fetch a message's metadata and deliveries (``GET /v1/messages/{id}``).

        Args:
            message_id: The message id.

        Returns:
            The message object, ``deliveries`` included.
        """
        response = await self._request("GET", f"/v1/messages/{quote(message_id, safe='')}")
        return _json_object(response)

    async def history(
        self, topic: str, since: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """Fetch a topic's history, oldest first (``GET /v1/topics/{topic}/messages``).

        Args:
            topic: The topic.
            since: Return only messages after this message id (exclusive).
            limit: Page size, 1 to 1,000 (server default 100).

        Returns:
            ``{"messages": [...], "next": <id of the last one or None>}``.
        """
        path = f"/v1/topics/{quote(topic, safe='')}/messages"
        query = urlencode(_without_none({"since": since, "limit": limit}))
        response = await self._request("GET", f"{path}?{query}" if query else path)
        return _json_object(response)

    async def subscriber_token(
        self, recipient: str, topics: list[str], ttl: int | None = None
    ) -> dict[str, Any]:
        """Issue a token with which a recipient's device subscribes to the stream.

        Args:
            recipient: The recipient id.
            topics: Topic patterns the token may subscribe to.
            ttl: Token lifetime in seconds (server default 3,600).

        Returns:
            ``{"token", "expires_in", "recipient", "topics"}``.
        """
        payload = _without_none({"recipient": recipient, "topics": topics, "ttl": ttl})
        # Issuing a token stores nothing that a repeat could duplicate: safe to retry.
        response = await self._request("POST", "/v1/subscriber-tokens", json=payload, retry=True)
        return _json_object(response)


def _encode_json(value: Any) -> bytes:
    # Serialised once: these exact bytes are what a request signature will cover.
    return jsonlib.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _without_none(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise HeraldClientError("the server answered a body that is not JSON") from exc
    if not isinstance(body, dict):
        raise HeraldClientError("the server answered an unexpected body")
    return body


def _publish_result(body: dict[str, Any], default_topic: str) -> PublishResult:
    audit = body.get("audit")
    message_id = body.get("id")
    if not isinstance(message_id, str) or not isinstance(audit, dict):
        raise HeraldClientError("the server answered an unexpected body")
    index = audit.get("index")
    leaf_hash = audit.get("leaf_hash")
    if not isinstance(index, int) or not isinstance(leaf_hash, str):
        raise HeraldClientError("the server answered an unexpected body")
    topic = body.get("topic")
    return PublishResult(
        id=message_id,
        topic=topic if isinstance(topic, str) else default_topic,
        audit_index=index,
        leaf_hash=leaf_hash,
    )


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
