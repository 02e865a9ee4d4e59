"""Blocking wrappers over the asynchronous SDK, for scripts and the CLI.

Each object owns a private :class:`asyncio.Runner` (one event loop, reused for every call,
so that connections are kept) and delegates to the asynchronous class. They cannot be used
from inside a running event loop (use the ``Async*`` classes there), and an instance belongs
to one thread at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from herald.client._api import ClientAuth, Sleep
from herald.client._e2e import DeviceKey, Devices
from herald.client._errors import ProblemError
from herald.client._publisher import AsyncPublisher, PublishResult
from herald.client._receipts import Receipt
from herald.client._signing import RequestSigner
from herald.client._subscriber import AsyncSubscriber, StreamMessage
from herald.client._transport import ClientCert

__all__ = ["Publisher", "Subscriber"]

_T = TypeVar("_T")


class _Blocking:
    """Owns the event loop that the wrapped asynchronous object lives on."""

    def __init__(self) -> None:
        self._runner = asyncio.Runner()
        self._closed = False

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return self._runner.run(coroutine)

    def _shutdown(self, aclose: Coroutine[Any, Any, None]) -> None:
        if self._closed:
            aclose.close()  # never awaited: avoid "coroutine was never awaited"
            return
        self._closed = True
        try:
            self._runner.run(aclose)
        finally:
            self._runner.close()


class Publisher(_Blocking):
    """Blocking :class:`~herald.client.AsyncPublisher`; same arguments, same methods.

    Example::

        with Publisher(url, client_id, secret, ca=".herald/tls/ca.pem") as pub:
            receipt = pub.publish("orders.shipped", title="Order 123 shipped")
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
        super().__init__()
        self._publisher = AsyncPublisher(
            base_url,
            client_id,
            client_secret,
            ca=ca,
            scope=scope,
            transport=transport,
            max_retries=max_retries,
            clock=clock,
            sleep=sleep,
            signer=signer,
            client_auth=client_auth,
            client_cert=client_cert,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and the private event loop."""
        self._shutdown(self._publisher.aclose())

    def token(self) -> str:
        """See :meth:`AsyncPublisher.token <herald.client.AsyncPublisher.token>`."""
        return self._run(self._publisher.token())

    def publish(
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
        """See :meth:`AsyncPublisher.publish <herald.client.AsyncPublisher.publish>`."""
        return self._run(
            self._publisher.publish(
                topic,
                title=title,
                body=body,
                data=data,
                priority=priority,
                ttl=ttl,
                recipients=recipients,
                channels=channels,
                fallback=fallback,
                category=category,
                template=template,
                deliver_at=deliver_at,
                dedup_window=dedup_window,
                idempotency_key=idempotency_key,
            )
        )

    def publish_e2e(
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
        """See :meth:`AsyncPublisher.publish_e2e <herald.client.AsyncPublisher.publish_e2e>`."""
        return self._run(
            self._publisher.publish_e2e(
                topic,
                recipients=recipients,
                title=title,
                body=body,
                data=data,
                priority=priority,
                ttl=ttl,
                devices=devices,
                idempotency_key=idempotency_key,
            )
        )

    def list_devices(self, recipient: str) -> list[dict[str, Any]]:
        """See :meth:`AsyncPublisher.list_devices <herald.client.AsyncPublisher.list_devices>`."""
        return self._run(self._publisher.list_devices(recipient))

    def register_device(
        self, recipient: str, public_key_raw: bytes, label: str | None = None
    ) -> dict[str, Any]:
        """See :meth:`AsyncPublisher.register_device`."""
        return self._run(self._publisher.register_device(recipient, public_key_raw, label))

    def publish_batch(
        self, messages: list[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> list[PublishResult | ProblemError]:
        """See :meth:`AsyncPublisher.publish_batch <herald.client.AsyncPublisher.publish_batch>`."""
        return self._run(self._publisher.publish_batch(messages, idempotency_key=idempotency_key))

    def get_message(self, message_id: str) -> dict[str, Any]:
        """See :meth:`AsyncPublisher.get_message <herald.client.AsyncPublisher.get_message>`."""
        return self._run(self._publisher.get_message(message_id))

    def revoke_token(self, token: str | None = None) -> None:
        """See :meth:`AsyncPublisher.revoke_token <herald.client.AsyncPublisher.revoke_token>`."""
        self._run(self._publisher.revoke_token(token))

    def cancel(self, message_id: str) -> dict[str, Any]:
        """See :meth:`AsyncPublisher.cancel <herald.client.AsyncPublisher.cancel>`."""
        return self._run(self._publisher.cancel(message_id))

    def history(
        self, topic: str, since: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """See :meth:`AsyncPublisher.history <herald.client.AsyncPublisher.history>`."""
        return self._run(self._publisher.history(topic, since, limit))

    def subscriber_token(
        self, recipient: str, topics: list[str], ttl: int | None = None
    ) -> dict[str, Any]:
        """See :meth:`AsyncPublisher.subscriber_token`."""
        return self._run(self._publisher.subscriber_token(recipient, topics, ttl))

    def put_template(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """See :meth:`AsyncPublisher.put_template <herald.client.AsyncPublisher.put_template>`."""
        return self._run(self._publisher.put_template(name, spec))

    def get_template(self, name: str, version: int | None = None) -> dict[str, Any]:
        """See :meth:`AsyncPublisher.get_template <herald.client.AsyncPublisher.get_template>`."""
        return self._run(self._publisher.get_template(name, version))

    def list_templates(self) -> dict[str, Any]:
        """See :meth:`AsyncPublisher.list_templates`."""
        return self._run(self._publisher.list_templates())

    def render_template(
        self,
        name: str,
        *,
        channel: str | None = None,
        locale: str | None = None,
        version: int | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """See :meth:`AsyncPublisher.render_template`."""
        return self._run(
            self._publisher.render_template(
                name, channel=channel, locale=locale, version=version, variables=variables
            )
        )

    def put_recipient(
        self,
        recipient: str,
        endpoints: Sequence[Mapping[str, Any]],
        preferences: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """See :meth:`AsyncPublisher.put_recipient`."""
        return self._run(self._publisher.put_recipient(recipient, endpoints, preferences))

    def get_recipient(self, recipient: str) -> dict[str, Any]:
        """See :meth:`AsyncPublisher.get_recipient`."""
        return self._run(self._publisher.get_recipient(recipient))

    def deliveries(
        self, state: str | None = None, limit: int | None = None, after: str | None = None
    ) -> dict[str, Any]:
        """See :meth:`AsyncPublisher.deliveries <herald.client.AsyncPublisher.deliveries>`."""
        return self._run(self._publisher.deliveries(state, limit, after))

    def retry_delivery(self, delivery_id: str) -> dict[str, Any]:
        """See :meth:`AsyncPublisher.retry_delivery`."""
        return self._run(self._publisher.retry_delivery(delivery_id))


class Subscriber(_Blocking):
    """Blocking :class:`~herald.client.AsyncSubscriber`: a plain iterator of messages.

    Example::

        with Subscriber(url, token, topics=["orders.>"], ca=ca) as sub:
            for message in sub:
                print(message.topic, message.title)

    With ``device_key``, ``next()`` raises :class:`~herald.client.E2EDecryptionError` for an
    end-to-end message this device cannot open, and the following ``next()`` continues.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        topics: list[str] | None = None,
        since: str | None = None,
        ca: str | Path | None = None,
        reconnect: bool = True,
        max_backoff: float = 10.0,
        open_timeout: float = 10.0,
        auto_ack: bool = False,
        device_key: DeviceKey | None = None,
    ) -> None:
        super().__init__()
        self._subscriber = AsyncSubscriber(
            base_url,
            token,
            topics=topics,
            since=since,
            ca=ca,
            reconnect=reconnect,
            max_backoff=max_backoff,
            open_timeout=open_timeout,
            auto_ack=auto_ack,
            device_key=device_key,
        )

    @property
    def last_id(self) -> str | None:
        """Id of the last message yielded (initially ``since``)."""
        return self._subscriber.last_id

    def __enter__(self) -> Self:
        try:
            self._run(self._subscriber.__aenter__())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> StreamMessage:
        try:
            return self._run(self._subscriber.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def ack(self, message_id: str) -> None:
        """Acknowledge a message (see :meth:`AsyncSubscriber.ack`)."""
        self._run(self._subscriber.ack(message_id))

    def verify_receipt(
        self, message: StreamMessage, *, audit_key: str, wait: float = 15.0
    ) -> Receipt:
        """Prove that ``message`` is in the audit log (see :meth:`AsyncSubscriber.verify_receipt`).

        ``audit_key`` is the verifier key you pinned beforehand, never one fetched from the
        server at verification time.
        """
        return self._run(self._subscriber.verify_receipt(message, audit_key=audit_key, wait=wait))

    def close(self) -> None:
        """Close the connection and the private event loop."""
        self._shutdown(self._subscriber.close())
