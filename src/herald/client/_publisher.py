"""The asynchronous publisher: publish with safe retries, schedules, templates, recipients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from herald.client._api import ApiClient, json_object, without_none
from herald.client._e2e import (
    Devices,
    build_e2e_message,
    devices_path,
    new_message_id,
    parse_device_list,
)
from herald.client._errors import HeraldClientError, ProblemError
from herald.crypto.e2e import b64url_encode, is_valid_public_key

__all__ = ["AsyncPublisher", "PublishResult"]

#: ``publish_e2e`` fetches at most this many recipients' device lists at once.
DEVICE_FETCH_CONCURRENCY = 8

_UNEXPECTED = "the server answered an unexpected body"


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The server's receipt for one accepted (durably stored) message.

    Attributes:
        id: The message id (a UUIDv7).
        topic: The topic the message was published to.
        audit_index: Index of the message's entry in the audit log (for a scheduled
            message, the ``message.scheduled`` entry).
        leaf_hash: Hex RFC 9162 leaf hash of that entry, to check an inclusion proof against.
        scheduled: Whether the message is kept until ``deliver_at`` instead of published now.
        deliver_at: When a scheduled message will be published (RFC 3339, UTC); ``None``
            for a message published at once.
    """

    id: str
    topic: str
    audit_index: int
    leaf_hash: str
    scheduled: bool = False
    deliver_at: str | None = None


class AsyncPublisher(ApiClient):
    """Publishes messages to a Herald server.

    Authenticates with the OAuth 2.0 client credentials grant (RFC 6749 §4.4), caches the
    access token and refreshes it before it expires. Every publish carries an
    ``Idempotency-Key``; network errors, 429 and 5xx answers are retried with the same key,
    so a retry never publishes twice.

    Beyond publishing, it reads and cancels messages, manages templates and recipients
    (``admin`` scope), and lists and retries deliveries. State-changing calls are signed
    when a ``signer`` is given; only calls that are safe to repeat are retried.

    Example::

        async with AsyncPublisher(url, client_id, secret, ca=".herald/tls/ca.pem") as pub:
            receipt = await pub.publish("orders.shipped", title="Order 123 shipped")

    Args:
        base_url: The server's base URL, e.g. ``https://127.0.0.1:8443``.
        client_id: The app's OAuth client id.
        client_secret: The app's OAuth client secret; ``None`` to authenticate with
            ``private_key_jwt`` (RFC 7523) using the ``signer``'s Ed25519 key instead.
        ca: A CA file to trust instead of the system store (the dev CA of ``herald init``).
        scope: Space-separated scopes to request; default: all of the app's scopes.
        transport: An ``httpx`` transport to use instead of the network (tests).
        max_retries: Retries after the first attempt for retryable failures.
        clock: Monotonic clock in seconds, used for token expiry.
        sleep: Coroutine function used to wait between retries.
        signer: Signs every state-changing request (RFC 9421), the token request included;
            Herald refuses unsigned ones unless its operator turned signatures off.
        client_auth: ``"client_secret_basic"`` or ``"private_key_jwt"``; by default the
            secret when there is one, else a client assertion signed by ``signer``.
        client_cert: ``(cert_file, key_file)`` for mutual TLS; the access token is then
            bound to this certificate (RFC 8705).
    """

    # -- messages ------------------------------------------------------------------------

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
        channels: Sequence[str] | None = None,
        fallback: Sequence[Mapping[str, Any]] | None = None,
        category: str | None = None,
        template: Mapping[str, Any] | None = None,
        deliver_at: datetime | str | None = None,
        dedup_window: int | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        """Publish one message (``POST /v1/messages``), now or at ``deliver_at``.

        Args:
            topic: The topic, e.g. ``orders.shipped``.
            title: Short title.
            body: Message text.
            data: A JSON object delivered with the message.
            priority: ``low``, ``normal`` (server default), ``high`` or ``urgent``.
            ttl: Seconds the message stays deliverable.
            recipients: Recipient ids that each get an in-app delivery.
            channels: Deliver on these channels only, at once (e.g. ``["email"]``).
            fallback: A delivery plan instead of ``channels``: steps like
                ``{"channels": ["email"], "after": 300}``, each starting when the ones
                before it failed or after ``after`` seconds without a delivery.
            category: Selects the recipients' per-category opt-outs and frequency caps.
            template: Render title and body from a stored template:
                ``{"name", "version"?, "locale"?, "variables"?}`` (no ``title``/``body``).
            deliver_at: Publish at this time (at most 30 days ahead) instead of now: a
                timezone-aware :class:`~datetime.datetime` or an RFC 3339 string with an
                offset. The message can be cancelled until then (:meth:`cancel`).
            dedup_window: Seconds within which the same content to the same recipient is
                suppressed (server default ``HERALD_DEDUP_WINDOW``).
            idempotency_key: Key that makes the publish safe to repeat; a random UUID by
                default. Pass your own to de-duplicate across process restarts.

        Returns:
            The receipt of the durably stored message; ``scheduled`` and ``deliver_at``
            are set when it is kept until ``deliver_at``.

        Raises:
            HeraldClientError: ``deliver_at`` is a naive ``datetime`` (nothing was sent).
            ProblemError: The server refused the message.
            ConnectionFailed: The server could not be reached, retries included.
        """
        message = without_none(
            {
                "topic": topic,
                "title": title,
                "body": body,
                "data": data,
                "priority": priority,
                "ttl": ttl,
                "recipients": recipients,
                "channels": None if channels is None else list(channels),
                "fallback": None if fallback is None else [dict(step) for step in fallback],
                "category": category,
                "template": None if template is None else dict(template),
                "deliver_at": None if deliver_at is None else _rfc3339(deliver_at),
                "dedup_window": dedup_window,
            }
        )
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
        response = await self._request("POST", "/v1/messages", json=message, idempotency_key=key)
        return _publish_result(json_object(response), topic)

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
        return _publish_result(json_object(response), topic)

    async def _fetch_devices(self, recipients: list[str]) -> dict[str, list[tuple[str, bytes]]]:
        limit = asyncio.Semaphore(DEVICE_FETCH_CONCURRENCY)

        async def fetch(recipient: str) -> list[tuple[str, bytes]]:
            async with limit:
                response = await self._request("GET", devices_path(recipient))
            return parse_device_list(json_object(response), recipient)

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
        devices = json_object(response).get("devices")
        if not isinstance(devices, list) or not all(isinstance(d, dict) for d in devices):
            raise HeraldClientError(_UNEXPECTED)
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
        payload = without_none({"public_key": b64url_encode(public_key_raw), "label": label})
        response = await self._request("POST", devices_path(recipient), json=payload)
        return json_object(response)

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
        payload = {"messages": [without_none(message) for message in messages]}
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
        response = await self._request(
            "POST", "/v1/messages:batch", json=payload, idempotency_key=key
        )
        results = json_object(response).get("results")
        if not isinstance(results, list):
            raise HeraldClientError(_UNEXPECTED)
        out: list[PublishResult | ProblemError] = []
        for item, message in zip(results, messages, strict=False):
            if isinstance(item, dict) and isinstance(item.get("error"), dict):
                out.append(ProblemError.from_problem(item["error"]))
            elif isinstance(item, dict):
                out.append(_publish_result(item, str(message.get("topic", ""))))
            else:
                raise HeraldClientError(_UNEXPECTED)
        return out

    async def get_message(self, message_id: str) -> dict[str, Any]:
        """Fetch a message's metadata and deliveries (``GET /v1/messages/{id}``).

        Args:
            message_id: The message id.

        Returns:
            The message object, ``deliveries`` included.
        """
        response = await self._request("GET", f"/v1/messages/{quote(message_id, safe='')}")
        return json_object(response)

    async def cancel(self, message_id: str) -> dict[str, Any]:
        """Cancel a scheduled message until it is due (``POST /v1/messages/{id}:cancel``).

        Not retried: after a lost answer a repeat would say 409 although the first one
        cancelled the message; :meth:`get_message` tells which it is.

        Args:
            message_id: The id of a message published with ``deliver_at``.

        Returns:
            The message's schedule: ``{"id", "topic", "state": "cancelled", "deliver_at",
            "created_at", "audit", "reason", "deliveries": []}``.

        Raises:
            ProblemError: 409 when it was published (or cancelled) already, 404 when there is
                no such scheduled message.
            ConnectionFailed: The server could not be reached.
        """
        path = f"/v1/messages/{quote(message_id, safe='')}:cancel"
        response = await self._request("POST", path, retry=False)
        return json_object(response)

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
        query = urlencode(without_none({"since": since, "limit": limit}))
        response = await self._request("GET", f"{path}?{query}" if query else path)
        return json_object(response)

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
        payload = without_none({"recipient": recipient, "topics": topics, "ttl": ttl})
        # Issuing a token stores nothing that a repeat could duplicate: safe to retry.
        response = await self._request("POST", "/v1/subscriber-tokens", json=payload, retry=True)
        return json_object(response)

    # -- templates -----------------------------------------------------------------------

    async def put_template(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Store the next version of a template (``PUT /v1/templates/{name}``, ``admin``).

        Not retried: every ``PUT`` creates a version, so a repeat after a lost answer
        would store two.

        Args:
            name: The template name, e.g. ``order-shipped``.
            spec: ``{"default_locale", "description"?, "variants": [{"channel"?, "locale",
                "title"?, "body"?, "html"?}]}``; Jinja2 text rendered in a sandbox.

        Returns:
            The stored version: ``{"name", "version", "created_at", "created_by", ...spec}``.

        Raises:
            ProblemError: ``invalid-template`` (422) when the spec reaches outside the
                sandbox, does not parse or has no ``"*"`` variant in its default locale;
                ``forbidden`` without the ``admin`` scope.
            ConnectionFailed: The server could not be reached.
        """
        response = await self._request("PUT", _template_path(name), json=dict(spec), retry=False)
        return json_object(response)

    async def get_template(self, name: str, version: int | None = None) -> dict[str, Any]:
        """Fetch one version of a template (``GET /v1/templates/{name}``).

        Args:
            name: The template name.
            version: The version; the newest by default.

        Returns:
            ``{"name", "version", "created_at", "created_by", "default_locale",
            "variants", ...}``.

        Raises:
            ProblemError: No such template (or version), or not allowed to read templates.
            ConnectionFailed: The server could not be reached, retries included.
        """
        response = await self._request("GET", _with_query(_template_path(name), version=version))
        return json_object(response)

    async def list_templates(self) -> dict[str, Any]:
        """List the tenant's templates (``GET /v1/templates``).

        Returns:
            ``{"templates": [{"name", "version", "created_at"}]}``, the newest version of
            each.

        Raises:
            ProblemError: Not allowed to read templates.
            ConnectionFailed: The server could not be reached, retries included.
        """
        response = await self._request("GET", "/v1/templates")
        return json_object(response)

    async def render_template(
        self,
        name: str,
        *,
        channel: str | None = None,
        locale: str | None = None,
        version: int | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Preview what a channel would show (``POST /v1/templates/{name}:render``).

        Renders without sending or storing anything, so it is safe to retry.

        Args:
            name: The template name.
            channel: The channel whose variant to render; ``"*"`` (the default variant) by
                default.
            locale: The reader's locale (RFC 4647 lookup down to the default locale).
            version: The version; the newest by default.
            variables: Sample variables.

        Returns:
            ``{"version", "channel", "locale", "title", "body", "html"}``.

        Raises:
            ProblemError: No such template, or ``template-render-failed`` (422), e.g. for
                a missing variable.
            ConnectionFailed: The server could not be reached, retries included.
        """
        payload = without_none(
            {
                "channel": channel,
                "locale": locale,
                "version": version,
                "variables": None if variables is None else dict(variables),
            }
        )
        path = f"{_template_path(name)}:render"
        response = await self._request("POST", path, json=payload, retry=True)
        return json_object(response)

    # -- recipients and deliveries -------------------------------------------------------

    async def put_recipient(
        self,
        recipient: str,
        endpoints: Sequence[Mapping[str, Any]],
        preferences: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Replace a recipient's endpoints and preferences (``PUT /v1/recipients/{id}``).

        Needs the ``admin`` scope. Retried: a ``PUT`` replaces, so a repeat leaves the
        same state.

        Args:
            recipient: The recipient id.
            endpoints: Every endpoint of the recipient, e.g. ``{"channel": "webhook",
                "url": ..., "secret": ...}``; the ones not listed are removed.
            preferences: ``locale``, ``timezone``, ``quiet_hours``, ``categories``,
                ``fallback``; ``None`` resets them to the defaults.

        Returns:
            ``{"recipient", "endpoints": [<secrets redacted>], "preferences"}``.

        Raises:
            ProblemError: An endpoint or the preferences were refused (400), or no
                ``admin`` scope.
            ConnectionFailed: The server could not be reached, retries included.
        """
        payload = without_none(
            {
                "endpoints": [dict(endpoint) for endpoint in endpoints],
                "preferences": None if preferences is None else dict(preferences),
            }
        )
        response = await self._request("PUT", _recipient_path(recipient), json=payload, retry=True)
        return json_object(response)

    async def get_recipient(self, recipient: str) -> dict[str, Any]:
        """Fetch a recipient's endpoints and preferences (``GET /v1/recipients/{id}``).

        Args:
            recipient: The recipient id.

        Returns:
            ``{"recipient", "endpoints": [<secrets redacted>], "preferences"}``.

        Raises:
            ProblemError: No such recipient, or not allowed to read recipients.
            ConnectionFailed: The server could not be reached, retries included.
        """
        response = await self._request("GET", _recipient_path(recipient))
        return json_object(response)

    async def deliveries(
        self, state: str | None = None, limit: int | None = None, after: str | None = None
    ) -> dict[str, Any]:
        """List the tenant's deliveries, oldest first (``GET /v1/deliveries``).

        Args:
            state: Only deliveries in this state, e.g. ``dead`` (the dead letters).
            limit: Page size, 1 to 1,000 (server default 100).
            after: Return only deliveries after this delivery id (the previous ``next``).

        Returns:
            ``{"deliveries": [...], "next": <id of the last one or None>}``.

        Raises:
            ProblemError: A bad ``state`` or ``limit``, or not allowed to list deliveries.
            ConnectionFailed: The server could not be reached, retries included.
        """
        path = _with_query("/v1/deliveries", state=state, limit=limit, after=after)
        response = await self._request("GET", path)
        return json_object(response)

    async def retry_delivery(self, delivery_id: str) -> dict[str, Any]:
        """Make a dead delivery due again (``POST /v1/deliveries/{id}:retry``, ``admin``).

        Not retried: after a lost answer a repeat would say 404 (no *dead* delivery)
        although the first one re-queued it.

        Args:
            delivery_id: The delivery id.

        Returns:
            The re-queued delivery.

        Raises:
            ProblemError: 404 when there is no such dead delivery, 409 when its endpoint
                was removed or disabled.
            ConnectionFailed: The server could not be reached.
        """
        path = f"/v1/deliveries/{quote(delivery_id, safe='')}:retry"
        response = await self._request("POST", path, retry=False)
        return json_object(response)


def _publish_result(body: dict[str, Any], default_topic: str) -> PublishResult:
    audit = body.get("audit")
    message_id = body.get("id")
    if not isinstance(message_id, str) or not isinstance(audit, dict):
        raise HeraldClientError(_UNEXPECTED)
    index = audit.get("index")
    leaf_hash = audit.get("leaf_hash")
    if not isinstance(index, int) or not isinstance(leaf_hash, str):
        raise HeraldClientError(_UNEXPECTED)
    scheduled = body.get("scheduled", False)
    deliver_at = body.get("deliver_at")
    if not isinstance(scheduled, bool) or (scheduled and not isinstance(deliver_at, str)):
        raise HeraldClientError(_UNEXPECTED)
    topic = body.get("topic")
    return PublishResult(
        id=message_id,
        topic=topic if isinstance(topic, str) else default_topic,
        audit_index=index,
        leaf_hash=leaf_hash,
        scheduled=scheduled,
        deliver_at=deliver_at if scheduled else None,
    )


def _rfc3339(value: datetime | str) -> str:
    """``deliver_at`` on the wire: RFC 3339 with an offset (a string is the caller's)."""
    if isinstance(value, str):
        return value
    # A naive datetime means "local time" to one reader and "UTC" to another: refuse it
    # rather than guess, before anything is sent.
    if value.tzinfo is None or value.utcoffset() is None:
        raise HeraldClientError(
            "deliver_at must be timezone-aware (e.g. datetime.now(UTC) + timedelta(hours=1))"
        )
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _template_path(name: str) -> str:
    return f"/v1/templates/{quote(name, safe='')}"


def _recipient_path(recipient: str) -> str:
    return f"/v1/recipients/{quote(recipient, safe='')}"


def _with_query(path: str, **params: str | int | None) -> str:
    query = urlencode(without_none(params))
    return f"{path}?{query}" if query else path
