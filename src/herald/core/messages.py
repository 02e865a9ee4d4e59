"""Message payloads: the typed shapes of publish requests and how they are validated.

Decoding and validation use msgspec (one C pass, no intermediate objects). Rules that the
type system cannot say — topic syntax, recipient count, ``data`` depth — are checked right
after decoding and raise the same typed :class:`~herald.errors.BadRequest` problems.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from herald import limits
from herald.core.ids import parse_message_id
from herald.core.preferences import CATEGORY_RE, FallbackStep, validate_fallback
from herald.core.topics import validate_topic
from herald.errors import BadRequest

__all__ = [
    "DeviceRequest",
    "E2EContent",
    "E2EEnvelope",
    "Priority",
    "PublishBatch",
    "PublishRequest",
    "SubscriberTokenRequest",
    "TemplateRef",
    "content_of",
    "decode_json",
    "validate_publish",
]

_T = TypeVar("_T")

Priority = Literal["low", "normal", "high", "urgent"]

RecipientId = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.RECIPIENT_ID_MAX)]
# Topic syntax and length are checked by validate_topic, so that every topic problem has the
# one slug ``invalid-topic``.
Topic = str


class E2EEnvelope(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One device's HPKE-sealed copy of the content (opaque to Herald)."""

    recipient: RecipientId
    device_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    enc: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    ct: Annotated[str, msgspec.Meta(min_length=1, max_length=48 * 1024)]


class E2EContent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """End-to-end content: per-device HPKE ciphertexts (RFC 9180 base mode)."""

    suite: Literal["hpke-base-x25519-sha256-aes128gcm"]
    payloads: Annotated[
        list[E2EEnvelope], msgspec.Meta(min_length=1, max_length=limits.E2E_PAYLOADS_MAX)
    ]


#: Template names: like categories, lower-case words joined by ``.``, ``_`` or ``-``.
TEMPLATE_NAME_RE = CATEGORY_RE

#: Longest content de-duplication window a message may ask for (seconds): a week.
DEDUP_WINDOW_MAX = 7 * 86400


class TemplateRef(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Render the message from a stored template (title/body/html per channel and locale)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    version: Annotated[int, msgspec.Meta(ge=1, le=limits.TEMPLATE_VERSION_MAX)] | None = None
    locale: Annotated[str, msgspec.Meta(min_length=2, max_length=35)] | None = None
    variables: dict[str, Any] | None = None


class PublishRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One message to publish (``POST /v1/messages``)."""

    id: str | None = None
    topic: Topic
    title: Annotated[str, msgspec.Meta(max_length=limits.TITLE_MAX)] | None = None
    body: str | None = None
    data: dict[str, Any] | None = None
    priority: Priority = "normal"
    ttl: Annotated[int, msgspec.Meta(ge=1, le=limits.MESSAGE_TTL_MAX)] = 86400
    recipients: list[RecipientId] | None = None
    #: Channel policy: deliver only on these channels (default: every endpoint).
    channels: (
        Annotated[
            list[Annotated[str, msgspec.Meta(min_length=1, max_length=32)]],
            msgspec.Meta(max_length=16),
        ]
        | None
    ) = None
    #: Fallback plan: steps of channels, each after the previous failed or ``after`` seconds.
    fallback: Annotated[list[FallbackStep], msgspec.Meta(min_length=1, max_length=8)] | None = None
    #: Selects the recipients' per-category preferences and frequency caps.
    category: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    template: TemplateRef | None = None
    #: Publish at this time instead of now (RFC 3339, at most 30 days ahead).
    deliver_at: datetime | None = None
    #: Suppress this content to a recipient who got the same within this many seconds.
    dedup_window: Annotated[int, msgspec.Meta(ge=0, le=DEDUP_WINDOW_MAX)] | None = None
    e2e: E2EContent | None = None


class DeviceRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/recipients/{id}/devices``: an X25519 public key (base64url, 32 bytes)."""

    public_key: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    label: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class PublishBatch(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/messages:batch``: each element is validated on its own."""

    messages: Annotated[
        list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=limits.BATCH_MAX_MESSAGES)
    ]


class SubscriberTokenRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/subscriber-tokens``."""

    recipient: RecipientId
    topics: Annotated[list[Topic], msgspec.Meta(min_length=1, max_length=limits.TOPIC_PATTERNS_MAX)]
    ttl: Annotated[int, msgspec.Meta(ge=60, le=limits.SUBSCRIBER_TOKEN_TTL_MAX)] = (
        limits.SUBSCRIBER_TOKEN_TTL_DEFAULT
    )


def decode_json(raw: bytes, kind: type[_T]) -> _T:
    """Decode and validate ``raw`` as ``kind``; typed problems for every failure."""
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request body: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON", slug="malformed-json") from None
    except RecursionError:
        # msgspec recurses per nesting level; a hostile document within the size cap can
        # exhaust the stack. Refuse it as what it is: far too deep.
        raise BadRequest("the request body nests too deeply") from None


def _depth_ok(value: Any, max_depth: int) -> bool:
    # Iterative, so a hostile document cannot exhaust the interpreter stack. Only
    # containers count as levels: ``{"a": {"b": 1}}`` nests 2 deep.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > max_depth:
            return False
        stack.extend((v, depth + 1) for v in children if isinstance(v, dict | list))
    return True


def validate_publish(req: PublishRequest) -> PublishRequest:
    """Check what the schema cannot: topic syntax, recipient count, ``data`` depth."""
    validate_topic(req.topic)
    if req.recipients is not None:
        if len(req.recipients) > limits.RECIPIENTS_MAX:
            raise BadRequest(
                f"at most {limits.RECIPIENTS_MAX} recipients per message",
                slug="too-many-recipients",
            )
        if len(set(req.recipients)) != len(req.recipients):
            raise BadRequest("recipients must not repeat")
    if req.data is not None and not _depth_ok(req.data, limits.DATA_MAX_DEPTH):
        raise BadRequest(f"data nests deeper than {limits.DATA_MAX_DEPTH} levels")
    if req.category is not None and not CATEGORY_RE.match(req.category):
        raise BadRequest("category must be lower-case letters, digits, '.', '_' or '-'")
    if req.fallback is not None:
        if req.channels is not None:
            raise BadRequest("give either channels or fallback, not both")
        validate_fallback(req.fallback)
    if req.deliver_at is not None and req.deliver_at.tzinfo is None:
        raise BadRequest("deliver_at needs a time zone offset (RFC 3339), e.g. ...Z")
    if req.template is not None:
        _validate_template(req, req.template)
    if req.e2e is not None:
        _validate_e2e(req, req.e2e)
    elif req.id is not None:
        raise BadRequest("a client-chosen id is only accepted with end-to-end content (e2e)")
    return req


def _validate_template(req: PublishRequest, ref: TemplateRef) -> None:
    if not TEMPLATE_NAME_RE.match(ref.name):
        raise BadRequest("template.name must be lower-case letters, digits, '.', '_' or '-'")
    if req.title is not None or req.body is not None or req.e2e is not None:
        raise BadRequest("with a template, title and body come from the template (and no e2e)")
    if ref.variables is not None and not _depth_ok(ref.variables, limits.DATA_MAX_DEPTH):
        raise BadRequest(f"template.variables nest deeper than {limits.DATA_MAX_DEPTH} levels")


def _validate_e2e(req: PublishRequest, e2e: E2EContent) -> None:
    # Herald cannot read end-to-end content, so plaintext fields would defeat its purpose.
    if req.title is not None or req.body is not None or req.data is not None:
        raise BadRequest("with e2e, title, body and data travel only inside the ciphertexts")
    if req.id is None:
        raise BadRequest("e2e messages carry their client-generated UUIDv7 id (it is sealed in)")
    req.id = parse_message_id(req.id)
    if not req.recipients:
        raise BadRequest("e2e messages name their recipients")
    named = set(req.recipients)
    seen = set()
    for envelope in e2e.payloads:
        if envelope.recipient not in named:
            raise BadRequest(f"e2e payload for {envelope.recipient!r}, who is not a recipient")
        if envelope.device_id in seen:
            raise BadRequest(f"two e2e payloads for device {envelope.device_id!r}")
        seen.add(envelope.device_id)


def content_of(req: PublishRequest) -> dict[str, Any]:
    """The content fields that are sealed at rest (DESIGN §5).

    End-to-end content is stored as received (opaque per-device ciphertexts), sealed once
    more at rest like any content.
    """
    if req.e2e is not None:
        return {"title": None, "body": None, "data": None, "e2e": msgspec.to_builtins(req.e2e)}
    content: dict[str, Any] = {"title": req.title, "body": req.body, "data": req.data}
    if req.template is not None:
        # Variables are content too; channels render from them at delivery time.
        content["template"] = msgspec.to_builtins(req.template)
    return content
