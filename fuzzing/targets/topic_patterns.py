"""Topic names, topic patterns and OAuth scope strings (which embed patterns).

Input: ``mode byte`` then ``a NUL b NUL topic``:

* mode 0: ``a`` and ``b`` as patterns, ``topic`` as a topic; then ``covers`` and ``matches``
  must agree: when ``a`` covers ``b`` and ``b`` matches the topic, ``a`` matches it too;
* mode 1: ``a`` and ``b`` as scope strings (RFC 6749 §3.3), ``a.narrow(b)``, and the
  publish/subscribe checks against ``topic``;
* mode 2: ``a`` as the ``topics`` query parameter of a stream (comma-separated patterns).

Allowed refusal: ``BadRequest`` (slugs ``invalid-topic``, ``invalid-scope``).
"""

from __future__ import annotations

from fuzzing._input import fields, mode, text
from herald.core.scopes import ScopeSet
from herald.core.topics import TopicPattern, matches_any, validate_topic
from herald.errors import BadRequest

REFUSALS = (BadRequest,)


def _patterns(a: str, b: str, topic: str) -> None:
    first = TopicPattern.parse(a)
    second = TopicPattern.parse(b)
    covers = first.covers(second)
    if not first.covers(first):
        raise AssertionError(f"{first.text!r} does not cover itself")
    validate_topic(topic)
    if covers and second.matches(topic) and not first.matches(topic):
        raise AssertionError(f"{a!r} covers {b!r}, which matches {topic!r}, but {a!r} does not")
    matches_any((first, second), topic)


def _scopes(a: str, b: str, topic: str) -> None:
    granted = ScopeSet.parse(a)
    requested = ScopeSet.parse(b)
    # A set parsed from its own text is the same set (scopes print canonically).
    if ScopeSet.parse(str(granted)).scopes != granted.scopes:
        raise AssertionError(f"scope set {a!r} does not survive printing")
    for pattern in requested.subscribe_patterns():
        granted.can_subscribe(pattern)
    granted.narrow(requested)
    granted.can_publish(validate_topic(topic))


def _query(a: str) -> None:
    for part in a.split(","):
        TopicPattern.parse(part.strip())


def test_one_input(data: bytes) -> None:
    """Parse and compare patterns, scopes or a topics parameter."""
    selected, rest = mode(data, 3)
    a, b, topic = (text(part) for part in fields(rest, 3))
    try:
        if selected == 0:
            _patterns(a, b, topic)
        elif selected == 1:
            _scopes(a, b, topic)
        else:
            _query(a)
    except BadRequest:
        return
