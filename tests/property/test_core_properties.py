"""Hypothesis properties, and exhaustive small-universe checks, for herald.core."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from herald.core.delivery import (
    ALLOWED_TRANSITIONS,
    DeliveryState,
    backoff_delay,
    is_terminal,
    transition,
)
from herald.core.ids import UUIDv7Generator, parse_message_id, timestamp_ms
from herald.core.scopes import Scope, ScopeSet, parse_scope
from herald.core.topics import TOPIC_TOKENS_MAX, TopicPattern, validate_topic
from herald.errors import BadRequest, InvalidTransition
from herald.limits import TOPIC_MAX

# --- strategies -------------------------------------------------------------------------

# A small alphabet makes overlaps (and so interesting covers/matches cases) common.
small_token = st.sampled_from(["a", "b", "c"])
any_token = st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True)
token = st.one_of(small_token, small_token, any_token)

topics = st.lists(token, min_size=1, max_size=6).map(".".join)


@st.composite
def patterns(draw: st.DrawFn, max_fixed: int = 5) -> TopicPattern:
    fixed = draw(st.lists(st.one_of(token, st.just("*")), max_size=max_fixed))
    tail = draw(st.booleans()) or not fixed
    return TopicPattern.parse(".".join([*fixed, ">"] if tail else fixed))


@st.composite
def pattern_and_matching_topic(draw: st.DrawFn) -> tuple[TopicPattern, str]:
    """A pattern and a topic built to match it (wildcards filled in)."""
    pattern = draw(patterns())
    parts: list[str] = []
    for tok in pattern.tokens:
        if tok == "*":
            parts.append(draw(token))
        elif tok == ">":
            parts.extend(draw(st.lists(token, min_size=1, max_size=3)))
        else:
            parts.append(tok)
    return pattern, ".".join(parts)


def reference_match(pattern: tuple[str, ...], topic: tuple[str, ...]) -> bool:
    """Obviously-correct recursive matcher to compare the optimised one against."""
    if not pattern:
        return not topic
    head, rest = pattern[0], pattern[1:]
    if head == ">":
        return len(topic) >= 1
    if not topic:
        return False
    return (head in ("*", topic[0])) and reference_match(rest, topic[1:])


T = TypeVar("T")


def outcome(fn: Callable[[str], T], arg: str) -> T | BadRequest:
    """Call ``fn(arg)`` and return its result, or the BadRequest it raised."""
    try:
        return fn(arg)
    except BadRequest as exc:
        return exc


VALID_TOPIC = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", re.ASCII)

# --- topics -----------------------------------------------------------------------------


@settings(max_examples=300)
@given(pattern=patterns(), topic=topics)
def test_matches_agrees_with_reference(pattern: TopicPattern, topic: str) -> None:
    expected = reference_match(pattern.tokens, tuple(topic.split(".")))
    assert pattern.matches(topic) is expected


@settings(max_examples=200)
@given(p=patterns(), qt=pattern_and_matching_topic(), t=topics)
def test_covers_implies_matches(p: TopicPattern, qt: tuple[TopicPattern, str], t: str) -> None:
    q, built = qt
    assert q.matches(built)
    if p.covers(q):
        assert p.matches(built)
        if q.matches(t):
            assert p.matches(t)


@settings(max_examples=200)
@given(p=patterns())
def test_covers_is_reflexive(p: TopicPattern) -> None:
    assert p.covers(p)
    assert TopicPattern.parse(">").covers(p)


@settings(max_examples=200)
@given(p=patterns(max_fixed=2), q=patterns(max_fixed=2), r=patterns(max_fixed=2))
def test_covers_is_transitive(p: TopicPattern, q: TopicPattern, r: TopicPattern) -> None:
    if p.covers(q) and q.covers(r):
        assert p.covers(r)


@settings(max_examples=300)
@given(p=patterns(), t=topics)
def test_covering_a_literal_is_matching_it(p: TopicPattern, t: str) -> None:
    assert p.covers(TopicPattern.parse(t)) is p.matches(t)


@settings(max_examples=200)
@given(t=topics)
def test_generated_topics_are_valid_and_round_trip(t: str) -> None:
    assert validate_topic(t) == t
    literal = TopicPattern.parse(t)
    assert literal.is_exact
    assert str(literal) == t
    assert literal.matches(t)


@settings(max_examples=200)
@given(p=patterns())
def test_pattern_round_trips(p: TopicPattern) -> None:
    assert TopicPattern.parse(str(p)) == p
    assert TopicPattern.parse(str(p)).tokens == p.tokens


@settings(max_examples=500)
@given(text=st.one_of(st.text(max_size=300), st.text(alphabet="ab.*> ", max_size=40)))
def test_validate_topic_accepts_exactly_the_grammar(text: str) -> None:
    good = (
        0 < len(text) <= TOPIC_MAX
        and VALID_TOPIC.fullmatch(text) is not None
        and text.count(".") < TOPIC_TOKENS_MAX
    )
    result = outcome(validate_topic, text)
    if isinstance(result, BadRequest):
        assert not good
        assert result.slug == "invalid-topic"
        # At most 64 input characters are quoted, each escaped to at most 10 (\U0001xxxx).
        assert len(result.detail) < 64 * 10 + 150
    else:
        assert good
        assert result == text


@settings(max_examples=500)
@given(text=st.one_of(st.text(max_size=300), st.text(alphabet="ab.*> ", max_size=40)))
def test_pattern_parser_only_raises_bad_request(text: str) -> None:
    pattern = outcome(TopicPattern.parse, text)
    if isinstance(pattern, BadRequest):
        assert pattern.slug == "invalid-topic"
    else:
        assert pattern.text == text
        assert ">" not in pattern.tokens[:-1]


# The universe: patterns of up to 4 tokens over {a, b, *, >} and topics of up to 5 tokens
# over {a, b}. One more topic length than pattern length is enough for the finite subset
# relation to be the real one: a pattern ending in '>' then always matches topics of at
# least two lengths in the universe, which no pattern without '>' can cover.
_ALPHABET = ("a", "b")
_UNIVERSE_TOPICS = [
    ".".join(parts) for n in range(1, 6) for parts in itertools.product(_ALPHABET, repeat=n)
]
_UNIVERSE_PATTERNS = [
    TopicPattern.parse(".".join(fixed + tail))
    for n in range(1, 5)
    for fixed in itertools.product((*_ALPHABET, "*"), repeat=n - 1)
    for tail in (("a",), ("b",), ("*",), (">",))
]


def test_covers_is_exactly_subset_over_small_universe() -> None:
    assert len(_UNIVERSE_PATTERNS) == 4 + 12 + 36 + 108
    assert len(_UNIVERSE_TOPICS) == 62
    matched = {
        p: frozenset(t for t in _UNIVERSE_TOPICS if p.matches(t)) for p in _UNIVERSE_PATTERNS
    }
    for p, t in itertools.product(_UNIVERSE_PATTERNS, _UNIVERSE_TOPICS):
        assert p.matches(t) is reference_match(p.tokens, tuple(t.split(".")))
    for p, q in itertools.product(_UNIVERSE_PATTERNS, repeat=2):
        assert p.covers(q) is (matched[q] <= matched[p]), (str(p), str(q))


# --- ids --------------------------------------------------------------------------------

_T0 = 1_700_000_000_000


@settings(max_examples=200)
@given(
    clock=st.lists(st.integers(_T0 - 5, _T0 + 5), min_size=1, max_size=50),
    seed=st.binary(min_size=1, max_size=32),
)
def test_ids_increase_whatever_the_clock_does(clock: list[int], seed: bytes) -> None:
    readings = iter(clock)
    stream = itertools.cycle(seed)
    gen = UUIDv7Generator(lambda: next(readings), lambda n: bytes(next(stream) for _ in range(n)))
    made = [gen.new() for _ in clock]
    for k, u in enumerate(made):
        assert u.version == 7
        assert u.variant == uuid.RFC_4122
        # Fewer than 2,048 ids: no counter overflow, so the timestamp is the latest
        # clock reading seen so far (never goes back).
        assert timestamp_ms(u) == max(clock[: k + 1])
    assert all(a < b for a, b in itertools.pairwise(made))
    texts = [str(u) for u in made]
    assert texts == sorted(texts)
    assert [parse_message_id(t) for t in texts] == texts


@settings(max_examples=300)
@given(text=st.one_of(st.text(max_size=50), st.uuids().map(str), st.uuids(version=4).map(str)))
def test_parse_message_id_accepts_only_v7(text: str) -> None:
    result = outcome(parse_message_id, text)
    if isinstance(result, BadRequest):
        assert result.slug == "invalid-id"
    else:
        assert result == text.lower()
        parsed = uuid.UUID(result)
        assert parsed.version == 7
        assert str(parsed) == result


@settings(max_examples=200)
@given(value=st.integers(0, (1 << 128) - 1))
def test_parse_message_id_agrees_with_uuid_module(value: int) -> None:
    u = uuid.UUID(int=value)
    is_v7 = u.variant == uuid.RFC_4122 and u.version == 7
    for text in (str(u), str(u).upper()):
        try:
            assert parse_message_id(text) == str(u)
        except BadRequest:
            assert not is_v7
        else:
            assert is_v7
            assert timestamp_ms(text) == timestamp_ms(u) == value >> 80


# --- scopes -----------------------------------------------------------------------------

scope_texts = st.one_of(
    st.sampled_from(["admin", "messages:read"]),
    st.builds(lambda a, p: f"{a}:{p}", st.sampled_from(["publish", "subscribe"]), patterns()),
)
scope_sets = st.lists(scope_texts, max_size=8).map(ScopeSet.from_iter)


@settings(max_examples=150)
@given(ss=scope_sets)
def test_scope_set_round_trips(ss: ScopeSet) -> None:
    assert ScopeSet.parse(str(ss)) == ss
    assert ScopeSet.from_iter(ss) == ss
    assert ss.narrow(ss) is ss
    assert len({str(s) for s in ss}) == len(ss)


@settings(max_examples=120)
@given(granted=scope_sets, requested=scope_sets, t=topics, wanted=patterns())
def test_narrowed_scopes_grant_no_more(
    granted: ScopeSet, requested: ScopeSet, t: str, wanted: TopicPattern
) -> None:
    narrowed = outcome(lambda _: granted.narrow(requested), "")
    if isinstance(narrowed, BadRequest):
        assert narrowed.slug == "invalid-scope"
        return
    if narrowed.can_publish(t):
        assert granted.can_publish(t)
    if narrowed.can_subscribe(wanted):
        assert granted.can_subscribe(wanted)
    for action in ("admin", "messages:read", "publish", "subscribe"):
        if narrowed.has(action):
            assert granted.has(action)


@settings(max_examples=300)
@given(text=st.one_of(st.text(max_size=60), scope_texts))
def test_parse_scope_only_raises_bad_request(text: str) -> None:
    scope = outcome(parse_scope, text)
    if isinstance(scope, BadRequest):
        assert scope.slug == "invalid-scope"
    else:
        assert isinstance(scope, Scope)
        assert str(scope) == text


# --- delivery ---------------------------------------------------------------------------


@settings(max_examples=300)
@given(walk=st.lists(st.sampled_from(list(DeliveryState)), max_size=12))
def test_random_walks_follow_the_table(walk: list[DeliveryState]) -> None:
    state = DeliveryState.PENDING
    for target in walk:
        allowed = target in ALLOWED_TRANSITIONS[state]
        try:
            state = transition(state, target)
        except InvalidTransition:
            assert not allowed
        else:
            assert allowed
            assert state is target
        if is_terminal(state):
            assert not ALLOWED_TRANSITIONS[state]


@settings(max_examples=300)
@given(
    attempt=st.integers(0, 10**6),
    base=st.floats(0, 1e6),
    cap=st.floats(0, 1e6),
    rand=st.floats(0, 1, exclude_max=True),
)
def test_backoff_is_bounded_and_grows(attempt: int, base: float, cap: float, rand: float) -> None:
    delay = backoff_delay(attempt, base=base, cap=cap, rand=rand)
    assert 0.0 <= delay <= cap
    assert delay <= rand * cap
    assert backoff_delay(attempt + 1, base=base, cap=cap, rand=rand) >= delay
