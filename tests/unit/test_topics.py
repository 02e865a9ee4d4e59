from __future__ import annotations

import dataclasses

import pytest

from herald.core import topics
from herald.core.topics import TOPIC_TOKENS_MAX, TopicPattern, matches_any, validate_topic
from herald.errors import BadRequest
from herald.limits import TOPIC_MAX


def test_exports() -> None:
    assert set(topics.__all__) == {
        "MULTI_WILDCARD",
        "SINGLE_WILDCARD",
        "TOPIC_TOKENS_MAX",
        "TopicPattern",
        "matches_any",
        "validate_topic",
    }
    for name in topics.__all__:
        assert hasattr(topics, name)


# --- validate_topic -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "orders",
        "orders.eu.created",
        "A-Z_0-9.x",
        "_",
        "-",
        "0.1.2",
        ".".join(["t"] * TOPIC_TOKENS_MAX),
        "a" * TOPIC_MAX,
    ],
)
def test_valid_topics(name: str) -> None:
    assert validate_topic(name) is name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        (".", "empty token"),
        (".a", "empty token"),
        ("a.", "empty token"),
        ("a..b", "empty token"),
        ("a.*", "characters"),
        ("a.>", "characters"),
        ("*", "characters"),
        (">", "characters"),
        ("a b", "characters"),
        ("a\tb", "characters"),
        ("a\n", "characters"),
        ("ä", "characters"),
        ("a.\u0660", "characters"),  # a Unicode digit, not an ASCII one
        ("K\u212a", "characters"),  # the Kelvin sign, a Unicode letter
        ("\uff41", "characters"),  # a fullwidth 'a'
        ("a/b", "characters"),
        ("a:b", "characters"),
        ("a\x00", "characters"),
        ("a" * (TOPIC_MAX + 1), "longer than"),
        (".".join(["t"] * (TOPIC_TOKENS_MAX + 1)), "more than 16 tokens"),
    ],
)
def test_invalid_topics(name: str, reason: str) -> None:
    with pytest.raises(BadRequest) as info:
        validate_topic(name)
    assert info.value.slug == "invalid-topic"
    assert info.value.status == 400
    assert reason in info.value.detail


def test_wildcards_in_topic_are_explained() -> None:
    with pytest.raises(BadRequest) as info:
        validate_topic("a.*")
    assert "topics take no wildcards" in info.value.detail


def test_invalid_topic_not_a_string() -> None:
    with pytest.raises(BadRequest) as info:
        validate_topic(123)  # type: ignore[arg-type]
    assert info.value.slug == "invalid-topic"


def test_error_never_echoes_more_than_64_characters() -> None:
    secret = "x" * 64 + "SECRET-TAIL" + "?" * 300
    with pytest.raises(BadRequest) as info:
        validate_topic(secret)
    assert "SECRET" not in info.value.detail
    assert "x" * 64 in info.value.detail
    with pytest.raises(BadRequest) as info:
        TopicPattern.parse("y" * 64 + "SECRET" + " ")
    assert "SECRET" not in info.value.detail


def test_short_input_is_quoted_in_full() -> None:
    with pytest.raises(BadRequest) as info:
        validate_topic("bad topic")
    assert "'bad topic'" in info.value.detail


# --- TopicPattern.parse ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("a", ("a",)),
        ("*", ("*",)),
        (">", (">",)),
        ("a.*", ("a", "*")),
        ("a.>", ("a", ">")),
        ("*.*.>", ("*", "*", ">")),
        ("a.*.c", ("a", "*", "c")),
        (".".join(["*"] * TOPIC_TOKENS_MAX), ("*",) * TOPIC_TOKENS_MAX),
    ],
)
def test_parse_valid_patterns(text: str, tokens: tuple[str, ...]) -> None:
    pattern = TopicPattern.parse(text)
    assert pattern.text == text
    assert pattern.tokens == tokens
    assert str(pattern) == text
    assert pattern == TopicPattern(text)
    assert hash(pattern) == hash(TopicPattern(text))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("a..b", "empty token"),
        ("a.", "empty token"),
        (">.a", "last token"),
        ("a.>.b", "last token"),
        (">.>", "last token"),
        ("a*", "characters"),
        ("a>", "characters"),
        ("**", "characters"),
        (">>", "characters"),
        ("a.#", "characters"),
        ("a. ", "characters"),
        ("a" * (TOPIC_MAX + 1), "longer than"),
        (".".join(["*"] * (TOPIC_TOKENS_MAX + 1)), "more than"),
    ],
)
def test_parse_invalid_patterns(text: str, reason: str) -> None:
    with pytest.raises(BadRequest) as info:
        TopicPattern.parse(text)
    assert info.value.slug == "invalid-topic"
    assert reason in info.value.detail


def test_pattern_is_frozen() -> None:
    pattern = TopicPattern.parse("a.*")
    with pytest.raises(dataclasses.FrozenInstanceError):
        pattern.text = "b"  # type: ignore[misc]


def test_pattern_repr_shows_text_only() -> None:
    assert repr(TopicPattern.parse("a.>")) == "TopicPattern(text='a.>', tokens=('a', '>'))"


def test_is_exact() -> None:
    assert TopicPattern.parse("a.b").is_exact
    assert not TopicPattern.parse("a.*").is_exact
    assert not TopicPattern.parse("a.>").is_exact


# --- matches ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        # exact
        ("a", "a", True),
        ("a", "b", False),
        ("a", "a.b", False),
        ("a.b", "a", False),
        ("a.b", "a.b", True),
        # single-token wildcard
        ("*", "a", True),
        ("*", "a.b", False),
        ("a.*", "a", False),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.*", "b.b", False),
        ("*.b", "a.b", True),
        ("*.b", "a.c", False),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.d", False),
        ("a.*.c", "a.c", False),
        ("*.*", "x.y", True),
        ("*.*", "x", False),
        # tail wildcard, prefix fast path
        (">", "a", True),
        (">", "a.b.c", True),
        ("a.>", "a", False),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c", True),
        ("a.>", "ab.c", False),
        ("a.>", "b.a", False),
        ("orders.>", "orders", False),
        ("orders.>", "ordersx.y", False),
        ("a.b.>", "a.b.c.d", True),
        ("a.b.>", "a.b", False),
        # tail wildcard with '*'
        ("*.>", "a", False),
        ("*.>", "a.b", True),
        ("*.>", "a.b.c", True),
        ("a.*.>", "a.b", False),
        ("a.*.>", "a.b.c", True),
        ("a.*.>", "x.b.c", False),
        ("*.b.>", "a.b.c.d", True),
        ("*.b.>", "a.c.c.d", False),
    ],
)
def test_matches(pattern: str, topic: str, expected: bool) -> None:
    assert TopicPattern.parse(pattern).matches(topic) is expected


def test_matches_any() -> None:
    patterns = [TopicPattern.parse("a.*"), TopicPattern.parse("b.>")]
    assert matches_any(patterns, "a.x")
    assert matches_any(patterns, "b.x.y")
    assert not matches_any(patterns, "c")
    assert not matches_any([], "a")
    # Works with any iterable, including a one-shot generator.
    assert matches_any((p for p in patterns), "b.z")


# --- covers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mine", "theirs", "expected"),
    [
        # examples from the spec
        ("orders.>", "orders.*", True),
        ("orders.>", "orders.eu.>", True),
        ("orders.>", "orders.x", True),
        ("orders.*", "orders.x", True),
        ("orders.*", "orders.*", True),
        ("orders.*", "orders.>", False),
        (">", "a", True),
        (">", "*", True),
        (">", ">", True),
        (">", "a.b.>", True),
        ("a.*.c", "a.b.c", True),
        # exact patterns cover only themselves
        ("a", "a", True),
        ("a", "b", False),
        ("a", "*", False),
        ("a", ">", False),
        ("a.b", "a", False),
        # '*' does not cover '>' or other lengths
        ("*", ">", False),
        ("*", "a.b", False),
        ("*.*", "*", False),
        ("*", "*.*", False),
        ("a.*", "*.*", False),
        ("*.*", "a.*", True),
        ("*.*", "*.a", True),
        # '>' needs at least one token
        ("a.>", "a", False),
        ("a.>", "a.>", True),
        ("a.>", "*.>", False),
        ("a.>", ">", False),
        ("a.b.>", "a.>", False),
        ("a.>", "a.b.>", True),
        ("*.>", "a.>", True),
        ("*.>", ">", False),
        ("*.>", "*", False),
        ("*.>", "a.*.c", True),
        ("a.*.>", "a.b.>", True),
        ("a.*.>", "a.>", False),
        ("a.*.>", "a.*.*", True),
        ("a.*.>", "a.*", False),
        ("a.b.>", "a.*.c", False),
        ("x.>", "a.>", False),
    ],
)
def test_covers(mine: str, theirs: str, expected: bool) -> None:
    assert TopicPattern.parse(mine).covers(TopicPattern.parse(theirs)) is expected
