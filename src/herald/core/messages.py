"""Message payloads: the typed shapes of publish requests and how they are validated.

Decoding and validation use msgspec (one C pass, no intermediate objects). Rules that the
type system cannot say — topic syntax, recipient count, ``data`` depth — are checked right
after decoding and raise the same typed :class:`~herald.errors.BadRequest` problems.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec

from herald import limits
from herald.core.topics import validate_topic
from herald.errors import BadRequest

__all__ = [
    "Priority",
    "PublishBatch",
    "PublishRequest",
    "SubscriberTokenRequest",
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


class PublishRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One message to publish (``POST /v1/messages``)."""

    topic: Topic
    title: Annotated[str, msgspec.Meta(max_length=limits.TITLE_MAX)] | None = None
    body: str | None = None
    data: dict[str, Any] | None = None
    priority: Priority = "normal"
    ttl: Annotated[int, msgspec.Meta(ge=1, le=limits.MESSAGE_TTL_MAX)] = 86400
    recipients: list[RecipientId] | None = None


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
    return req


def content_of(req: PublishRequest) -> dict[str, Any]:
    """The content fields that are sealed at rest (DESIGN §5)."""
    return {"title": req.title, "body": req.body, "data": req.data}
