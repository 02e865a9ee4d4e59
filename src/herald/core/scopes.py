"""Access-token scopes: what a token may publish, subscribe to, read and administer.

A scope string is a space-separated list (RFC 6749 §3.3) of:

* ``publish:<pattern>`` — publish to any topic the pattern matches;
* ``subscribe:<pattern>`` — subscribe to any pattern the granted pattern covers;
* ``messages:read`` — read message history and delivery status;
* ``admin`` — manage the tenant (clients, keys, channels) and publish anywhere. ``admin``
  deliberately does *not* grant ``subscribe``: reading the stream of every topic is a
  separate decision that must be granted explicitly.

Patterns use the syntax of :mod:`herald.core.topics`. Scopes are compared structurally,
so ``subscribe:orders.>`` can be narrowed to ``subscribe:orders.eu.*`` (see
:meth:`ScopeSet.narrow`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from herald.core.topics import TopicPattern
from herald.errors import BadRequest
from herald.limits import TOPIC_MAX

__all__ = [
    "ADMIN",
    "MESSAGES_READ",
    "PUBLISH",
    "SCOPES_MAX",
    "SUBSCRIBE",
    "Scope",
    "ScopeSet",
    "parse_scope",
]

#: Publish to topics matched by the scope's pattern.
PUBLISH = "publish"
#: Subscribe to patterns covered by the scope's pattern.
SUBSCRIBE = "subscribe"
#: Read message history and delivery status.
MESSAGES_READ = "messages:read"
#: Administer the tenant; also allows publishing to any topic, but not subscribing.
ADMIN = "admin"

#: Scopes in one scope set. Each scope is checked on every publish and subscribe, so the
#: list is kept short; 64 is well beyond what a real client needs.
SCOPES_MAX = 64

_SLUG = "invalid-scope"
_PATTERN_ACTIONS = frozenset({PUBLISH, SUBSCRIBE})
_PLAIN_ACTIONS = frozenset({MESSAGES_READ, ADMIN})
#: Longest scope text worth splitting: SCOPES_MAX of the longest scopes, with separators.
#: Checked first so a huge header is refused before any work is done on it.
_TEXT_MAX = SCOPES_MAX * (len(SUBSCRIBE) + 1 + TOPIC_MAX + 1)
_ECHO_MAX = 64


def _excerpt(text: str) -> str:
    """Quote at most ``_ECHO_MAX`` characters of untrusted input for an error detail."""
    if len(text) <= _ECHO_MAX:
        return repr(text)
    return repr(text[:_ECHO_MAX]) + "..."


@dataclass(frozen=True, slots=True)
class Scope:
    """One scope, e.g. ``publish:orders.>`` or ``admin``.

    Attributes:
        action: One of :data:`PUBLISH`, :data:`SUBSCRIBE`, :data:`MESSAGES_READ`,
            :data:`ADMIN`.
        pattern: The topic pattern of ``publish`` and ``subscribe`` scopes; None for the
            others.

    Raises:
        BadRequest: With slug ``invalid-scope`` if the action is unknown, or a pattern is
            missing where one is needed or present where none is allowed.
    """

    action: str
    pattern: TopicPattern | None = None

    def __post_init__(self) -> None:
        if self.action in _PATTERN_ACTIONS:
            if self.pattern is None:
                raise BadRequest(f"scope {self.action!r} needs a topic pattern", slug=_SLUG)
        elif self.action in _PLAIN_ACTIONS:
            if self.pattern is not None:
                raise BadRequest(f"scope {self.action!r} takes no topic pattern", slug=_SLUG)
        else:
            raise BadRequest(f"unknown scope action {_excerpt(self.action)}", slug=_SLUG)

    def covers(self, other: Scope) -> bool:
        """Tell whether this scope grants everything ``other`` grants.

        Args:
            other: The scope being asked for.

        Returns:
            True if the actions are equal and, for pattern scopes, this pattern covers
            the other's (see :meth:`TopicPattern.covers`).
        """
        if self.action != other.action:
            return False
        if self.pattern is None or other.pattern is None:
            return self.pattern is None and other.pattern is None
        return self.pattern.covers(other.pattern)

    def __str__(self) -> str:
        if self.pattern is None:
            return self.action
        return f"{self.action}:{self.pattern.text}"


def parse_scope(text: str) -> Scope:
    """Parse one scope.

    Args:
        text: E.g. ``"publish:orders.>"``, ``"subscribe:orders.*"``, ``"messages:read"``
            or ``"admin"``.

    Returns:
        The scope.

    Raises:
        BadRequest: With slug ``invalid-scope`` for anything else, including a
            ``publish:``/``subscribe:`` scope whose pattern is invalid.
    """
    if not isinstance(text, str):
        raise BadRequest("a scope must be a string", slug=_SLUG)
    if text in _PLAIN_ACTIONS:
        return Scope(text)
    action, sep, rest = text.partition(":")
    if not sep or action not in _PATTERN_ACTIONS:
        raise BadRequest(f"unknown scope {_excerpt(text)}", slug=_SLUG)
    try:
        pattern = TopicPattern.parse(rest)
    except BadRequest as exc:
        # Same detail, but the problem is the scope: OAuth's invalid_scope.
        raise BadRequest(f"scope {action!r}: {exc.detail}", slug=_SLUG) from None
    return Scope(action, pattern)


def _patterns(scopes: Iterable[Scope], action: str) -> tuple[TopicPattern, ...]:
    """Return the patterns of the scopes with the given action, in order."""
    return tuple(s.pattern for s in scopes if s.action == action and s.pattern is not None)


@dataclass(frozen=True, slots=True)
class ScopeSet:
    """An ordered, duplicate-free set of scopes, as carried by an access token.

    Build one with :meth:`parse` or :meth:`from_iter`; the constructor drops duplicates
    (keeping the first) and enforces :data:`SCOPES_MAX` the same way.

    Attributes:
        scopes: The scopes, in the order first given.

    Raises:
        BadRequest: With slug ``invalid-scope`` if there are more than
            :data:`SCOPES_MAX` distinct scopes.
    """

    scopes: tuple[Scope, ...] = ()
    _publish: tuple[TopicPattern, ...] = field(init=False, compare=False, repr=False)
    _subscribe: tuple[TopicPattern, ...] = field(init=False, compare=False, repr=False)
    _actions: frozenset[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        unique = tuple(dict.fromkeys(self.scopes))
        if len(unique) > SCOPES_MAX:
            raise BadRequest(f"more than {SCOPES_MAX} scopes", slug=_SLUG)
        object.__setattr__(self, "scopes", unique)
        object.__setattr__(self, "_publish", _patterns(unique, PUBLISH))
        object.__setattr__(self, "_subscribe", _patterns(unique, SUBSCRIBE))
        object.__setattr__(self, "_actions", frozenset(s.action for s in unique))

    @classmethod
    def parse(cls, text: str) -> ScopeSet:
        """Parse a space-separated scope string (RFC 6749 §3.3).

        Runs of spaces are tolerated; any other whitespace is part of a scope and makes it
        invalid. The empty string gives the empty set.

        Args:
            text: E.g. ``"publish:orders.> subscribe:orders.* messages:read"``.

        Returns:
            The scope set, duplicates removed, order kept.

        Raises:
            BadRequest: With slug ``invalid-scope`` if a scope is invalid or there are
                more than :data:`SCOPES_MAX` distinct scopes.
        """
        if not isinstance(text, str):
            raise BadRequest("scopes must be a string", slug=_SLUG)
        if len(text) > _TEXT_MAX:
            raise BadRequest("the scope string is too long", slug=_SLUG)
        # De-duplicate the raw strings before parsing, then bound the work by SCOPES_MAX.
        words = list(dict.fromkeys(w for w in text.split(" ") if w))
        if len(words) > SCOPES_MAX:
            raise BadRequest(f"more than {SCOPES_MAX} scopes", slug=_SLUG)
        return cls(tuple(parse_scope(w) for w in words))

    @classmethod
    def from_iter(cls, scopes: Iterable[Scope | str]) -> ScopeSet:
        """Build a scope set from scopes or scope strings.

        Args:
            scopes: :class:`Scope` objects or single-scope strings, in order.

        Returns:
            The scope set, duplicates removed, order kept.

        Raises:
            BadRequest: With slug ``invalid-scope`` if a string is not a valid scope or
                there are more than :data:`SCOPES_MAX` distinct scopes.
        """
        parsed: dict[Scope, None] = {}
        for item in scopes:
            parsed[item if isinstance(item, Scope) else parse_scope(item)] = None
            if len(parsed) > SCOPES_MAX:
                raise BadRequest(f"more than {SCOPES_MAX} scopes", slug=_SLUG)
        return cls(tuple(parsed))

    def has(self, action: str) -> bool:
        """Tell whether any scope of this set has the given action (e.g. ``"admin"``)."""
        return action in self._actions

    def can_publish(self, topic: str) -> bool:
        """Tell whether these scopes allow publishing to ``topic``.

        Args:
            topic: A topic already checked with
                :func:`herald.core.topics.validate_topic`.

        Returns:
            True if the set has ``admin`` or a ``publish`` pattern matching the topic.
        """
        if ADMIN in self._actions:
            return True
        return any(p.matches(topic) for p in self._publish)

    def can_subscribe(self, pattern: TopicPattern) -> bool:
        """Tell whether these scopes allow subscribing to ``pattern``.

        ``admin`` does not grant subscriptions.

        Args:
            pattern: The pattern the subscriber asks for.

        Returns:
            True if a ``subscribe`` pattern of the set covers ``pattern``.
        """
        return any(p.covers(pattern) for p in self._subscribe)

    def subscribe_patterns(self) -> tuple[TopicPattern, ...]:
        """Return the patterns of the ``subscribe`` scopes, in order."""
        return self._subscribe

    def narrow(self, requested: ScopeSet) -> ScopeSet:
        """Check that ``requested`` asks for no more than this set grants.

        Each requested scope must be covered by a granted scope of the same action:
        pattern scopes by a granted pattern that covers the requested one, ``admin`` and
        ``messages:read`` by the very same scope. ``admin`` grants nothing else here.

        Args:
            requested: The scopes a client asks for, e.g. in a token request.

        Returns:
            ``requested`` itself.

        Raises:
            BadRequest: With slug ``invalid-scope`` (OAuth's ``invalid_scope``, RFC 6749
                §5.2) naming the first requested scope that is not granted.
        """
        for wanted in requested.scopes:
            if not any(granted.covers(wanted) for granted in self.scopes):
                raise BadRequest(
                    f"scope {_excerpt(str(wanted))} exceeds the granted scopes", slug=_SLUG
                )
        return requested

    def __iter__(self) -> Iterator[Scope]:
        return iter(self.scopes)

    def __len__(self) -> int:
        return len(self.scopes)

    def __str__(self) -> str:
        return " ".join(str(s) for s in self.scopes)
