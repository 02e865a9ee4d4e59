"""The channel plugin interface (DESIGN §7): ``validate`` an endpoint, ``deliver`` a delivery.

A channel is a small object with a ``name``, a declarative ``secret_fields`` list (redacted
wherever an endpoint is shown or logged), a per-channel ``concurrency`` limit, a synchronous
``validate(endpoint) -> endpoint`` run when a recipient saves the endpoint (typed
:class:`~herald.errors.BadRequest` on anything wrong), and ``async deliver(job) -> Outcome``.

Channels never return ``False``: they return an :class:`Outcome` — ``Delivered``,
``Retry(after, reason)`` or ``Failed(reason, disable_endpoint)`` — and raise only for bugs
(the dispatcher turns an unexpected exception into a retry and logs its type, not its text).
Reasons are short, human, and never contain secrets or message content.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "Channel",
    "Delivered",
    "DeliveryJob",
    "Failed",
    "Outcome",
    "Retry",
    "redact_endpoint",
]


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """Everything a channel needs for one attempt, already decrypted in memory.

    Attributes:
        delivery_id: Stable across retries: receivers de-duplicate by it (it is the
            ``webhook-id`` of Standard Webhooks, the e-mail ``Message-ID`` local part, …).
        message_id: The message's UUIDv7.
        tenant_id: The tenant.
        recipient: The tenant's recipient id.
        topic: The message topic.
        attempt: 1 for the first attempt.
        title: Rendered title (templates applied), or None.
        body: Rendered plain-text body, or None.
        html: Rendered HTML body (e-mail), or None.
        data: The message's ``data`` object, or None.
        priority: ``low`` | ``normal`` | ``high`` | ``urgent``.
        created_at: ISO 8601 publish time.
        ttl: Seconds the message stays deliverable after ``created_at``.
        endpoint: The endpoint's configuration (secrets included; never log it).
    """

    delivery_id: str
    message_id: str
    tenant_id: str
    recipient: str
    topic: str
    attempt: int
    title: str | None
    body: str | None
    html: str | None
    data: dict[str, Any] | None
    priority: str
    created_at: str
    ttl: int
    endpoint: Mapping[str, Any]

    def payload(self) -> dict[str, Any]:
        """The JSON event Herald sends to machine receivers (webhooks, Apprise JSON)."""
        return {
            "type": "message",
            "id": self.message_id,
            "delivery_id": self.delivery_id,
            "topic": self.topic,
            "recipient": self.recipient,
            "title": self.title,
            "body": self.body,
            "data": self.data,
            "priority": self.priority,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class Delivered:
    """The receiver accepted the delivery."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class Retry:
    """A transient failure: try again, no earlier than ``after`` seconds from now."""

    reason: str
    after: float | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """A permanent failure; ``disable_endpoint`` when the receiver said it is gone (410)."""

    reason: str
    disable_endpoint: bool = False


Outcome = Delivered | Retry | Failed


class Channel(Protocol):
    """A delivery channel plugin."""

    name: ClassVar[str]
    #: Endpoint fields holding secrets: stored sealed, redacted in every view and log.
    secret_fields: ClassVar[tuple[str, ...]]
    #: Deliveries of this channel in flight at once on one node.
    concurrency: ClassVar[int]

    def validate(self, endpoint: Mapping[str, Any]) -> dict[str, Any]:
        """Check and normalise an endpoint's configuration (BadRequest when invalid)."""
        ...

    async def deliver(self, job: DeliveryJob) -> Outcome:
        """Attempt one delivery."""
        ...


def redact_endpoint(channel: Channel, endpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The endpoint with every secret field replaced (for API views and logs).

    A ``url`` that is not itself secret still loses its userinfo, query and fragment: those
    are where receivers put tokens.
    """
    shown: dict[str, Any] = {}
    for key, value in endpoint.items():
        if key in channel.secret_fields and value is not None:
            shown[key] = "[redacted]"
        elif key == "url" and isinstance(value, str):
            shown[key] = _strip_url(value)
        else:
            shown[key] = value
    return shown


def _strip_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    tail = "?[redacted]" if parts.query or parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + tail
