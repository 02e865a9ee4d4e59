from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from herald.core import scopes
from herald.core.scopes import (
    ADMIN,
    MESSAGES_READ,
    PUBLISH,
    SCOPES_MAX,
    SUBSCRIBE,
    Scope,
    ScopeSet,
    parse_scope,
)
from herald.core.topics import TopicPattern
from herald.errors import BadRequest
from herald.limits import TOPIC_MAX


def P(text: str) -> TopicPattern:  # noqa: N802 - reads like a literal
    return TopicPattern.parse(text)


def test_exports() -> None:
    assert set(scopes.__all__) == {
        "ADMIN",
        "MESSAGES_READ",
        "PUBLISH",
        "SCOPES_MAX",
        "SUBSCRIBE",
        "Scope",
        "ScopeSet",
        "parse_scope",
    }
    for name in scopes.__all__:
        assert hasattr(scopes, name)


# --- parse_scope ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("admin", Scope(ADMIN)),
        ("messages:read", Scope(MESSAGES_READ)),
        ("publish:orders.>", Scope(PUBLISH, P("orders.>"))),
        ("publish:a", Scope(PUBLISH, P("a"))),
        ("subscribe:orders.*", Scope(SUBSCRIBE, P("orders.*"))),
        ("subscribe:>", Scope(SUBSCRIBE, P(">"))),
    ],
)
def test_parse_scope(text: str, expected: Scope) -> None:
    scope = parse_scope(text)
    assert scope == expected
    assert str(scope) == text
    assert parse_scope(str(scope)) == scope


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Admin",
        "ADMIN",
        "admin:",
        "admin:x",
        "messages",
        "messages:write",
        "messages:read:x",
        "publish",
        "publish:",
        "publish:a..b",
        "publish:>.a",
        "publish:a b",
        "subscribe",
        "subscribe:",
        "subscribe:a.>.b",
        "Subscribe:a",
        "delete:a",
        ":a",
        " admin",
        "admin ",
        "admin\n",
        "publish:" + "a" * (TOPIC_MAX + 1),
    ],
)
def test_parse_scope_refuses(text: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_scope(text)
    assert info.value.slug == "invalid-scope"
    assert info.value.status == 400


def test_parse_scope_pattern_error_keeps_detail_but_changes_slug() -> None:
    with pytest.raises(BadRequest) as info:
        parse_scope("publish:a..b")
    assert info.value.slug == "invalid-scope"
    assert "empty token" in info.value.detail
    assert info.value.__cause__ is None


def test_parse_scope_refuses_non_strings() -> None:
    with pytest.raises(BadRequest) as info:
        parse_scope(None)  # type: ignore[arg-type]
    assert info.value.slug == "invalid-scope"


def test_parse_scope_does_not_echo_long_input() -> None:
    with pytest.raises(BadRequest) as info:
        parse_scope("x" * 64 + "SECRET")
    assert "SECRET" not in info.value.detail


# --- Scope --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "pattern"),
    [
        (PUBLISH, None),
        (SUBSCRIBE, None),
        (ADMIN, P("a")),
        (MESSAGES_READ, P("a")),
        ("delete", None),
        ("delete", P("a")),
    ],
)
def test_scope_constructor_validates(action: str, pattern: TopicPattern | None) -> None:
    with pytest.raises(BadRequest) as info:
        Scope(action, pattern)
    assert info.value.slug == "invalid-scope"


def test_scope_is_frozen_and_hashable() -> None:
    scope = Scope(PUBLISH, P("a.*"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        scope.action = ADMIN  # type: ignore[misc]
    assert len({scope, Scope(PUBLISH, P("a.*"))}) == 1


@pytest.mark.parametrize(
    ("granted", "wanted", "expected"),
    [
        ("admin", "admin", True),
        ("messages:read", "messages:read", True),
        ("admin", "messages:read", False),
        ("admin", "publish:a", False),
        ("admin", "subscribe:a", False),
        ("publish:>", "subscribe:a", False),
        ("subscribe:>", "publish:a", False),
        ("publish:a.>", "publish:a.b", True),
        ("publish:a.*", "publish:a.>", False),
        ("subscribe:a.>", "subscribe:a.*.c", True),
        ("subscribe:a.b", "subscribe:a.*", False),
        ("publish:a", "admin", False),
    ],
)
def test_scope_covers(granted: str, wanted: str, expected: bool) -> None:
    assert parse_scope(granted).covers(parse_scope(wanted)) is expected


# --- ScopeSet.parse / from_iter / str ------------------------------------------------------


def test_parse_set_keeps_order_and_drops_duplicates() -> None:
    text = "subscribe:b.* admin publish:a.> admin subscribe:b.* messages:read"
    ss = ScopeSet.parse(text)
    assert [str(s) for s in ss] == ["subscribe:b.*", "admin", "publish:a.>", "messages:read"]
    assert str(ss) == "subscribe:b.* admin publish:a.> messages:read"
    assert len(ss) == 4
    assert ScopeSet.parse(str(ss)) == ss


def test_parse_set_empty() -> None:
    for text in ("", " ", "   "):
        ss = ScopeSet.parse(text)
        assert ss == ScopeSet()
        assert len(ss) == 0
        assert str(ss) == ""
        assert not ss.can_publish("a")
        assert not ss.can_subscribe(P("a"))


def test_parse_set_tolerates_runs_of_spaces() -> None:
    assert str(ScopeSet.parse("  admin   messages:read ")) == "admin messages:read"


@pytest.mark.parametrize(
    "text",
    [
        "admin\tmessages:read",
        "admin\nmessages:read",
        "admin,messages:read",
        "admin bogus",
        "publish:a..b",
        None,
    ],
)
def test_parse_set_refuses(text: str) -> None:
    with pytest.raises(BadRequest) as info:
        ScopeSet.parse(text)
    assert info.value.slug == "invalid-scope"


def test_parse_set_limits_count() -> None:
    exactly = " ".join(f"publish:t{i}" for i in range(SCOPES_MAX))
    assert len(ScopeSet.parse(exactly)) == SCOPES_MAX
    # Duplicates do not count against the limit.
    assert len(ScopeSet.parse(exactly + " " + exactly)) == SCOPES_MAX
    with pytest.raises(BadRequest, match="more than 64 scopes") as info:
        ScopeSet.parse(exactly + " admin")
    assert info.value.slug == "invalid-scope"


def test_parse_set_limits_length_before_splitting() -> None:
    with pytest.raises(BadRequest, match="too long"):
        ScopeSet.parse("admin " * 10_000)


def test_from_iter_accepts_scopes_and_strings() -> None:
    ss = ScopeSet.from_iter(["admin", Scope(PUBLISH, P("a")), "publish:a", Scope(ADMIN)])
    assert str(ss) == "admin publish:a"
    assert ScopeSet.from_iter(iter(())) == ScopeSet()


def test_from_iter_limits_count_lazily() -> None:
    def endless() -> Iterator[str]:
        i = 0
        while True:
            yield f"publish:t{i}"
            i += 1

    with pytest.raises(BadRequest, match="more than 64 scopes"):
        ScopeSet.from_iter(endless())


def test_from_iter_refuses_bad_strings() -> None:
    with pytest.raises(BadRequest) as info:
        ScopeSet.from_iter(["admin", "root"])
    assert info.value.slug == "invalid-scope"


def test_constructor_deduplicates_and_limits() -> None:
    ss = ScopeSet((Scope(ADMIN), Scope(ADMIN)))
    assert ss.scopes == (Scope(ADMIN),)
    too_many = tuple(Scope(PUBLISH, P(f"t{i}")) for i in range(SCOPES_MAX + 1))
    with pytest.raises(BadRequest):
        ScopeSet(too_many)


def test_scope_set_is_frozen_and_hashable() -> None:
    ss = ScopeSet.parse("admin")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ss.scopes = ()  # type: ignore[misc]
    assert hash(ss) == hash(ScopeSet.parse("admin"))


def test_equality_depends_on_order() -> None:
    # The canonical string keeps order, so equality does too.
    assert ScopeSet.parse("admin messages:read") != ScopeSet.parse("messages:read admin")


# --- queries ------------------------------------------------------------------------------


def test_has() -> None:
    ss = ScopeSet.parse("publish:a messages:read")
    assert ss.has(PUBLISH)
    assert ss.has(MESSAGES_READ)
    assert not ss.has(SUBSCRIBE)
    assert not ss.has(ADMIN)
    assert not ss.has("publish:a")


@pytest.mark.parametrize(
    ("granted", "topic", "expected"),
    [
        ("publish:orders.>", "orders.eu", True),
        ("publish:orders.>", "orders", False),
        ("publish:orders.*", "orders.eu.x", False),
        ("publish:a publish:orders.*", "orders.eu", True),
        ("subscribe:>", "orders", False),
        ("messages:read", "orders", False),
        ("admin", "anything.at.all", True),
        ("", "orders", False),
    ],
)
def test_can_publish(granted: str, topic: str, expected: bool) -> None:
    assert ScopeSet.parse(granted).can_publish(topic) is expected


@pytest.mark.parametrize(
    ("granted", "pattern", "expected"),
    [
        ("subscribe:orders.>", "orders.*", True),
        ("subscribe:orders.>", "orders.>", True),
        ("subscribe:orders.>", ">", False),
        ("subscribe:orders.*", "orders.>", False),
        ("subscribe:a subscribe:orders.*", "orders.x", True),
        ("publish:>", "orders", False),
        ("admin", "orders", False),  # admin does not grant subscribe
        ("admin", ">", False),
        ("subscribe:>", ">", True),
    ],
)
def test_can_subscribe(granted: str, pattern: str, expected: bool) -> None:
    assert ScopeSet.parse(granted).can_subscribe(P(pattern)) is expected


def test_subscribe_patterns() -> None:
    ss = ScopeSet.parse("subscribe:b publish:x subscribe:a.> admin subscribe:b")
    assert ss.subscribe_patterns() == (P("b"), P("a.>"))
    assert ScopeSet.parse("admin").subscribe_patterns() == ()


# --- narrow -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("granted", "requested"),
    [
        ("publish:orders.> subscribe:orders.>", "publish:orders.eu"),
        ("publish:orders.> subscribe:orders.>", "subscribe:orders.*.created publish:orders.>"),
        ("admin messages:read", "admin"),
        ("admin messages:read", "messages:read"),
        ("admin messages:read", "messages:read admin"),
        ("subscribe:a.* subscribe:b.>", "subscribe:a.x subscribe:b.y.z"),
        ("admin", ""),
        ("", ""),
    ],
)
def test_narrow_allows_subsets(granted: str, requested: str) -> None:
    wanted = ScopeSet.parse(requested)
    assert ScopeSet.parse(granted).narrow(wanted) is wanted


@pytest.mark.parametrize(
    ("granted", "requested", "culprit"),
    [
        ("publish:orders.*", "publish:orders.>", "publish:orders.>"),
        ("publish:orders.>", "subscribe:orders.x", "subscribe:orders.x"),
        ("subscribe:orders.>", "publish:orders.x", "publish:orders.x"),
        ("admin", "publish:a", "publish:a"),
        ("admin", "subscribe:a", "subscribe:a"),
        ("admin", "messages:read", "messages:read"),
        ("messages:read", "admin", "admin"),
        ("publish:a", "publish:a publish:b", "publish:b"),
        ("", "publish:a", "publish:a"),
    ],
)
def test_narrow_refuses_more_than_granted(granted: str, requested: str, culprit: str) -> None:
    with pytest.raises(BadRequest) as info:
        ScopeSet.parse(granted).narrow(ScopeSet.parse(requested))
    assert info.value.slug == "invalid-scope"
    assert info.value.status == 400
    assert repr(culprit) in info.value.detail
