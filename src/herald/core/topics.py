"""Topic names and topic patterns, in the style of NATS subjects.

A *topic* is a dot-separated list of tokens such as ``orders.eu.created``. Each token is a
non-empty run of ASCII letters, digits, ``_`` and ``-``; there is no escaping, no
whitespace and no empty token (so no leading, trailing or doubled dot).

A *pattern* follows the same rules, except that a whole token may be a wildcard:

* ``*`` matches exactly one token: ``orders.*`` matches ``orders.eu`` but not
  ``orders`` or ``orders.eu.created``;
* ``>`` matches one or more remaining tokens and may only be the last token:
  ``orders.>`` matches ``orders.eu`` and ``orders.eu.created`` but not ``orders``.

Patterns are compared with :meth:`TopicPattern.covers`, which decides whether every topic
one pattern matches is also matched by another; scopes use it to check that a subscriber
only asks for topics it was granted (see :mod:`herald.core.scopes`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from herald.errors import BadRequest
from herald.limits import TOPIC_MAX

__all__ = [
    "MULTI_WILDCARD",
    "SINGLE_WILDCARD",
    "TOPIC_TOKENS_MAX",
    "TopicPattern",
    "matches_any",
    "validate_topic",
]

#: Tokens in one topic or pattern. Deep hierarchies buy nothing and make every match and
#: every ``covers`` check slower; 16 levels is far beyond any real naming scheme.
TOPIC_TOKENS_MAX = 16
#: The pattern token that matches exactly one topic token.
SINGLE_WILDCARD = "*"
#: The pattern token that matches one or more trailing topic tokens (last position only).
MULTI_WILDCARD = ">"

_SLUG = "invalid-topic"
#: How much of a rejected input an error message may quote: enough to recognise it,
#: never enough to turn the error response into an amplifier or a log-injection vector.
_ECHO_MAX = 64
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)


def _excerpt(text: str) -> str:
    """Quote at most ``_ECHO_MAX`` characters of untrusted input for an error detail."""
    if len(text) <= _ECHO_MAX:
        return repr(text)
    return repr(text[:_ECHO_MAX]) + "..."


def _split(text: object, *, kind: str, wildcards: bool) -> tuple[str, ...]:
    """Check a topic or pattern and return its tokens, or raise ``BadRequest``."""
    if not isinstance(text, str):
        raise BadRequest(f"a {kind} must be a string", slug=_SLUG)
    if not text:
        raise BadRequest(f"a {kind} must not be empty", slug=_SLUG)
    # Length first, so that nothing below ever scans an oversized input.
    if len(text) > TOPIC_MAX:
        raise BadRequest(
            f"{kind} {_excerpt(text)} is longer than {TOPIC_MAX} characters", slug=_SLUG
        )
    tokens = tuple(text.split("."))
    if len(tokens) > TOPIC_TOKENS_MAX:
        raise BadRequest(
            f"{kind} {_excerpt(text)} has more than {TOPIC_TOKENS_MAX} tokens", slug=_SLUG
        )
    last = len(tokens) - 1
    for index, token in enumerate(tokens):
        if not token:
            raise BadRequest(
                f"{kind} {_excerpt(text)} has an empty token (leading, trailing or doubled '.')",
                slug=_SLUG,
            )
        if wildcards and token == SINGLE_WILDCARD:
            continue
        if wildcards and token == MULTI_WILDCARD:
            if index != last:
                raise BadRequest(
                    f"{kind} {_excerpt(text)}: '>' is only allowed as the last token",
                    slug=_SLUG,
                )
            continue
        if _TOKEN_RE.fullmatch(token) is None:
            allowed = "ASCII letters, digits, '_' and '-'"
            if wildcards:
                allowed += ", or a whole token '*' or '>'"
            else:
                allowed += " (topics take no wildcards)"
            raise BadRequest(
                f"{kind} {_excerpt(text)} has a token with characters other than {allowed}",
                slug=_SLUG,
            )
    return tokens


def validate_topic(name: str) -> str:
    """Check that ``name`` is a valid topic name and return it unchanged.

    Args:
        name: The candidate topic, e.g. ``"orders.eu.created"``.

    Returns:
        ``name`` itself.

    Raises:
        BadRequest: With slug ``invalid-topic`` if the name is empty, longer than
            :data:`herald.limits.TOPIC_MAX`, has more than :data:`TOPIC_TOKENS_MAX`
            tokens, has an empty token or a character outside ``[A-Za-z0-9_-]``.
    """
    _split(name, kind="topic", wildcards=False)
    return name


@dataclass(frozen=True, slots=True)
class TopicPattern:
    """A validated topic pattern, with its matcher precomputed.

    Build one with :meth:`parse` (or the constructor, which validates the same way).
    Two patterns are equal when their texts are equal.

    Attributes:
        text: The pattern as written, e.g. ``"orders.*.created"``.
        tokens: ``text`` split on ``'.'``.
    """

    text: str
    tokens: tuple[str, ...] = field(init=False, compare=False)
    # Precomputed matcher state (see __post_init__); not part of equality or repr.
    _exact: bool = field(init=False, compare=False, repr=False)
    _tail: bool = field(init=False, compare=False, repr=False)
    _prefix: str | None = field(init=False, compare=False, repr=False)
    _literals: tuple[tuple[int, str], ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        tokens = _split(self.text, kind="topic pattern", wildcards=True)
        tail = tokens[-1] == MULTI_WILDCARD
        fixed = tokens[:-1] if tail else tokens
        has_star = SINGLE_WILDCARD in fixed
        literals = tuple((i, t) for i, t in enumerate(fixed) if t != SINGLE_WILDCARD)
        # A tail pattern without '*' (e.g. "orders.>") is a plain prefix test: a valid
        # topic has no empty tokens, so anything after "orders." is at least one token.
        prefix = None
        if tail and not has_star:
            prefix = "".join(t + "." for t in fixed)
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "_exact", not tail and not has_star)
        object.__setattr__(self, "_tail", tail)
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_literals", literals)

    @property
    def is_literal(self) -> bool:
        """Whether the pattern has no wildcard (it matches exactly the topic ``text``)."""
        return self._exact

    @classmethod
    def parse(cls, text: str) -> TopicPattern:
        """Parse and validate a topic pattern.

        Args:
            text: The pattern, e.g. ``"orders.*"`` or ``"orders.>"``.

        Returns:
            The pattern.

        Raises:
            BadRequest: With slug ``invalid-topic`` if ``text`` breaks the topic rules,
                or uses ``>`` anywhere but as the last token.
        """
        return cls(text)

    @property
    def is_exact(self) -> bool:
        """Whether the pattern has no wildcard, i.e. matches exactly one topic."""
        return self._exact

    def matches(self, topic: str) -> bool:
        """Tell whether ``topic`` is matched by this pattern.

        Args:
            topic: A topic already checked with :func:`validate_topic`; an invalid topic
                gives an unspecified (but never exceptional) answer.

        Returns:
            True if the pattern matches the topic.
        """
        if self._exact:
            return topic == self.text
        if self._prefix is not None:
            return len(topic) > len(self._prefix) and topic.startswith(self._prefix)
        parts = topic.split(".")
        if self._tail:
            # '>' needs at least one token of its own.
            if len(parts) < len(self.tokens):
                return False
        elif len(parts) != len(self.tokens):
            return False
        return all(parts[i] == token for i, token in self._literals)

    def covers(self, other: TopicPattern) -> bool:
        """Tell whether every topic matched by ``other`` is also matched by this pattern.

        ``orders.>`` covers ``orders.*``, ``orders.eu.>`` and ``orders.x``; ``orders.*``
        covers ``orders.x`` and ``orders.*`` but not ``orders.>``; ``>`` covers every
        pattern. Every pattern covers itself.

        Args:
            other: The pattern to compare with.

        Returns:
            True if the set of topics ``other`` matches is a subset of this pattern's.
        """
        mine, theirs = self.tokens, other.tokens
        if self._tail:
            # Our fixed part must match token by token, and `other` must be at least as
            # long as our whole pattern so that our '>' always has a token to eat; what
            # `other` has from there on (literals, '*' or its own '>') is all covered.
            fixed = len(mine) - 1
            if len(theirs) < len(mine):
                return False
        else:
            # Without '>' we match one length only, so `other` must not have '>' either
            # (it would match unboundedly long topics) and must have our length.
            fixed = len(mine)
            if other._tail or len(theirs) != len(mine):
                return False
        # A '*' of ours covers anything in that position; a literal only the same literal
        # (a '*' of theirs there would match tokens other than our literal).
        return all(
            m in (SINGLE_WILDCARD, t) for m, t in zip(mine[:fixed], theirs[:fixed], strict=True)
        )

    def __str__(self) -> str:
        return self.text


def matches_any(patterns: Iterable[TopicPattern], topic: str) -> bool:
    """Tell whether any of ``patterns`` matches ``topic``.

    Args:
        patterns: Patterns to try, in order; the search stops at the first match.
        topic: A topic already checked with :func:`validate_topic`.

    Returns:
        True if at least one pattern matches.
    """
    return any(pattern.matches(topic) for pattern in patterns)
