"""The Herald Python SDK: publish messages and read real-time streams.

Publishing (OAuth2 client credentials, idempotent retries)::

    from herald.client import AsyncPublisher

    async with AsyncPublisher(url, client_id, client_secret, ca=".herald/tls/ca.pem") as pub:
        receipt = await pub.publish("orders.shipped", title="Order 123 shipped")
        sub = await pub.subscriber_token("user-42", ["orders.>"])

Subscribing (WebSocket, resumes after outages without duplicates)::

    from herald.client import AsyncSubscriber

    async with AsyncSubscriber(url, sub["token"], ca=".herald/tls/ca.pem") as stream:
        async for message in stream:
            await stream.ack(message.id)

End-to-end mode (Herald forwards content it cannot read; HPKE per device)::

    key = DeviceKey.generate()  # on the device; keep key.private_key secret
    device = await register_device_with_token(url, sub["token"], "user-42", key.public_key_raw)
    key = key.with_device_id(device["device_id"])
    await pub.publish_e2e("orders.shipped", recipients=["user-42"], title="Order 123 shipped")
    async with AsyncSubscriber(url, sub["token"], device_key=key) as stream:
        ...  # messages arrive opened; E2EDecryptionError for one this device cannot open

Verifiable delivery receipts (the message is in the signed audit log; pin the audit key
once, e.g. from ``/.well-known/herald-audit-key``, and never re-fetch it to verify)::

    receipt = await stream.verify_receipt(message, audit_key=PINNED_AUDIT_KEY)
    # ReceiptInvalid when the server cannot prove the message was logged

Operators (people who run Herald; ``herald admin create``) sign in with a password::

    async with AsyncAdmin(url, "alice", password, ca=".herald/tls/ca.pem") as admin:
        app = await admin.create_app(tenant_id, ["publish:orders.>"])

Mutual TLS: ``AsyncPublisher(..., client_cert=(cert_file, key_file))`` presents a client
certificate; a server that requests one binds the access tokens to it (RFC 8705).

:class:`Publisher` and :class:`Subscriber` are blocking equivalents. TLS certificates are
always verified; every error raised on purpose is a :class:`HeraldClientError`.
"""

from herald.client._admin import AsyncAdmin
from herald.client._e2e import DeviceKey, E2EDecryptionError, register_device_with_token
from herald.client._errors import (
    AuthenticationError,
    ConnectionFailed,
    HeraldClientError,
    ProblemError,
    StreamClosed,
)
from herald.client._publisher import AsyncPublisher, PublishResult
from herald.client._receipts import Receipt, ReceiptInvalid
from herald.client._signing import RequestSigner, sign_request
from herald.client._subscriber import AsyncSubscriber, StreamMessage
from herald.client._sync import Publisher, Subscriber
from herald.client._transport import make_ssl_context

__all__ = [
    "AsyncAdmin",
    "AsyncPublisher",
    "AsyncSubscriber",
    "AuthenticationError",
    "ConnectionFailed",
    "DeviceKey",
    "E2EDecryptionError",
    "HeraldClientError",
    "ProblemError",
    "PublishResult",
    "Publisher",
    "Receipt",
    "ReceiptInvalid",
    "RequestSigner",
    "StreamClosed",
    "StreamMessage",
    "Subscriber",
    "make_ssl_context",
    "register_device_with_token",
    "sign_request",
]
