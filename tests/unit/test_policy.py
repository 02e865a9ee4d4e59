"""The authorisation policy (core/policy.py): its table, tenant isolation, concealment.

Also pins that it is the *only* place that decides: no other module of Herald compares
scopes or topic patterns to grant a request.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import herald
from herald.core.policy import (
    POLICY,
    Action,
    Kind,
    Principal,
    Resource,
    allowed,
    authorize,
    kinds_for,
)
from herald.core.scopes import ScopeSet
from herald.core.topics import TopicPattern
from herald.errors import Forbidden, InvalidToken, NotFound

A, B = "tnt_a", "tnt_b"


def app(*scopes: str, tenant: str = A) -> Principal:
    return Principal.app(tenant, "app_1", ScopeSet.from_iter(scopes))


def subscriber(*patterns: str, recipient: str = "u1", tenant: str = A) -> Principal:
    parsed = tuple(TopicPattern.parse(p) for p in patterns)
    return Principal.subscriber(tenant, recipient, parsed, "app_1")


GLOBAL = Principal.operator("op_root", None)
TENANT_OP = Principal.operator("op_a", A)


def pattern(text: str) -> TopicPattern:
    return TopicPattern.parse(text)


# (principal, action, resource, allowed) — one row per rule worth pinning.
CASES: list[tuple[str, Principal, Action, Resource, bool]] = [
    (
        "publish in scope",
        app("publish:orders.>"),
        Action.PUBLISH,
        Resource(A, topic="orders.eu"),
        True,
    ),
    (
        "publish out of scope",
        app("publish:orders.>"),
        Action.PUBLISH,
        Resource(A, topic="billing.x"),
        False,
    ),
    (
        "admin publishes anywhere",
        app("admin"),
        Action.PUBLISH,
        Resource(A, topic="billing.x"),
        True,
    ),
    ("reader reads", app("messages:read"), Action.MESSAGE_READ, Resource(A, topic="x.y"), True),
    (
        "subscribe scope reads",
        app("subscribe:x.*"),
        Action.MESSAGE_READ,
        Resource(A, topic="x.y"),
        True,
    ),
    (
        "publish scope reads its topics",
        app("publish:x.>"),
        Action.HISTORY_READ,
        Resource(A, topic="x.y"),
        True,
    ),
    (
        "no scope reaching topic",
        app("publish:y.>"),
        Action.HISTORY_READ,
        Resource(A, topic="x.y"),
        False,
    ),
    (
        "cancel needs publish",
        app("messages:read"),
        Action.MESSAGE_CANCEL,
        Resource(A, topic="x"),
        False,
    ),
    ("cancel with publish", app("publish:x"), Action.MESSAGE_CANCEL, Resource(A, topic="x"), True),
    (
        "grant covered",
        app("subscribe:orders.>"),
        Action.SUBSCRIBER_TOKEN_ISSUE,
        Resource(A, pattern=pattern("orders.*")),
        True,
    ),
    (
        "grant wider",
        app("subscribe:orders.*"),
        Action.SUBSCRIBER_TOKEN_ISSUE,
        Resource(A, pattern=pattern("orders.>")),
        False,
    ),
    (
        "admin does not grant subscriptions",
        app("admin"),
        Action.SUBSCRIBER_TOKEN_ISSUE,
        Resource(A, pattern=pattern("x")),
        False,
    ),
    ("ticket for subscriber", subscriber("x"), Action.STREAM_TICKET_ISSUE, Resource(A), True),
    (
        "stream covered",
        subscriber("orders.>"),
        Action.STREAM_SUBSCRIBE,
        Resource(A, pattern=pattern("orders.eu")),
        True,
    ),
    (
        "stream not covered",
        subscriber("orders.eu"),
        Action.STREAM_SUBSCRIBE,
        Resource(A, pattern=pattern("orders.>")),
        False,
    ),
    ("own device", subscriber("x"), Action.DEVICE_REGISTER, Resource(A, recipient="u1"), True),
    (
        "another's device",
        subscriber("x"),
        Action.DEVICE_REGISTER,
        Resource(A, recipient="u2"),
        False,
    ),
    (
        "admin registers devices",
        app("admin"),
        Action.DEVICE_REGISTER,
        Resource(A, recipient="u2"),
        True,
    ),
    (
        "publisher may not register devices",
        app("publish:>"),
        Action.DEVICE_REGISTER,
        Resource(A, recipient="u2"),
        False,
    ),
    ("devices listed by any app", app("publish:x"), Action.DEVICE_LIST, Resource(A), True),
    ("recipients written by admin", app("admin"), Action.RECIPIENT_WRITE, Resource(A), True),
    ("recipients not by reader", app("messages:read"), Action.RECIPIENT_WRITE, Resource(A), False),
    ("recipients read by reader", app("messages:read"), Action.RECIPIENT_READ, Resource(A), True),
    ("deliveries listed by reader", app("messages:read"), Action.DELIVERY_LIST, Resource(A), True),
    ("retry by admin only", app("messages:read"), Action.DELIVERY_RETRY, Resource(A), False),
    ("templates written by admin", app("admin"), Action.TEMPLATE_WRITE, Resource(A), True),
    ("templates read by reader", app("messages:read"), Action.TEMPLATE_READ, Resource(A), True),
    ("templates not by publisher", app("publish:>"), Action.TEMPLATE_READ, Resource(A), False),
    ("app reads own tenant's log", app("publish:x"), Action.AUDIT_READ, Resource(A), True),
    ("admin app not another tenant's log", app("admin"), Action.AUDIT_READ, Resource(B), False),
    ("admin app not tenant-less entries", app("admin"), Action.AUDIT_READ, Resource(None), False),
    ("subscriber reads own tenant's log", subscriber("x"), Action.AUDIT_READ, Resource(A), True),
    ("global operator reads all", GLOBAL, Action.AUDIT_READ, Resource(B), True),
    ("global operator reads tenant-less", GLOBAL, Action.AUDIT_READ, Resource(None), True),
    ("tenant operator reads own", TENANT_OP, Action.AUDIT_READ, Resource(A), True),
    ("tenant operator not another's", TENANT_OP, Action.AUDIT_READ, Resource(B), False),
    ("tenant operator not tenant-less", TENANT_OP, Action.AUDIT_READ, Resource(None), False),
    ("global creates tenants", GLOBAL, Action.TENANT_CREATE, Resource(None), True),
    ("tenant operator may not", TENANT_OP, Action.TENANT_CREATE, Resource(None), False),
    ("tenant operator manages own apps", TENANT_OP, Action.APP_UPDATE, Resource(A), True),
    ("not another tenant's apps", TENANT_OP, Action.APP_UPDATE, Resource(B), False),
    ("global manages any apps", GLOBAL, Action.APP_CREATE, Resource(B), True),
    ("admin app is not an operator", app("admin"), Action.APP_CREATE, Resource(A), False),
    ("operator does not publish", GLOBAL, Action.PUBLISH, Resource(A, topic="x"), False),
    ("operator does not read messages", GLOBAL, Action.MESSAGE_READ, Resource(A, topic="x"), False),
    (
        "app of tenant A, resource of B",
        app("admin", "messages:read"),
        Action.RECIPIENT_READ,
        Resource(B),
        False,
    ),
    (
        "subscriber of A, resource of B",
        subscriber(">"),
        Action.STREAM_SUBSCRIBE,
        Resource(B, pattern=pattern("x")),
        False,
    ),
]


@pytest.mark.parametrize(
    ("principal", "action", "resource", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_policy_table(
    principal: Principal, action: Action, resource: Resource, expected: bool
) -> None:
    assert allowed(principal, action, resource) is expected
    if expected:
        authorize(principal, action, resource)
    else:
        with pytest.raises((Forbidden, NotFound, InvalidToken)):
            authorize(principal, action, resource)


def test_every_action_has_a_rule_and_a_reason() -> None:
    assert set(POLICY) == set(Action)
    for action, entry in POLICY.items():
        assert entry.rules, action
        assert entry.needs, action
        assert kinds_for(action) == frozenset(entry.rules)


def test_a_kind_the_action_does_not_admit_is_an_invalid_token() -> None:
    # The token was presented to an API that is not its audience.
    with pytest.raises(InvalidToken):
        authorize(subscriber(">"), Action.PUBLISH, Resource(A, topic="x"))
    with pytest.raises(InvalidToken):
        authorize(app("admin"), Action.TENANT_READ, Resource(A))
    with pytest.raises(InvalidToken):
        authorize(GLOBAL, Action.TEMPLATE_WRITE, Resource(A))


def test_another_tenants_named_object_is_not_found_with_the_same_detail() -> None:
    resource = Resource(B, name="message 0190", topic="x")
    with pytest.raises(NotFound) as foreign:
        authorize(app("admin", "messages:read"), Action.MESSAGE_READ, resource)
    assert foreign.value.detail == "no message 0190"


def test_a_refused_read_conceals_and_a_refused_write_explains() -> None:
    hidden = Resource(A, name="message 0190", topic="billing.x")
    with pytest.raises(NotFound) as read:
        authorize(app("publish:orders.>"), Action.MESSAGE_READ, hidden)
    assert read.value.detail == "no message 0190"
    # Cancelling what the caller can read but not publish to: 403 naming the need...
    visible = Resource(A, name="scheduled message 0190", topic="x.y")
    with pytest.raises(Forbidden) as cancel:
        authorize(app("messages:read"), Action.MESSAGE_CANCEL, visible)
    assert "publish scope" in cancel.value.detail
    # ...and 404 for one it cannot even read.
    with pytest.raises(NotFound):
        authorize(app("publish:orders.>"), Action.MESSAGE_CANCEL, hidden)


def test_only_operators_may_be_global() -> None:
    with pytest.raises(ValueError, match="only an operator"):
        Principal(Kind.APP, "app_1", None)
    assert GLOBAL.is_global
    assert not TENANT_OP.is_global
    with pytest.raises(Forbidden):
        _ = GLOBAL.home
    assert TENANT_OP.home == A


def test_actors_name_the_principal_for_the_audit_log() -> None:
    assert app("admin").actor == "app:app_1"
    assert subscriber("x", recipient="u9").actor == "recipient:u9"
    assert GLOBAL.actor == "operator:op_root"


_tenants = st.sampled_from([A, B, "tnt_c"])
_topics = st.sampled_from(["orders.eu", "orders.us", "billing.x", "x"])
_scopes = st.lists(
    st.sampled_from(["admin", "messages:read", "publish:>", "publish:orders.>", "subscribe:>"]),
    max_size=4,
)
_principals = st.one_of(
    st.builds(lambda s, t: app(*s, tenant=t), _scopes, _tenants),
    st.builds(lambda t: subscriber(">", tenant=t), _tenants),
    st.builds(lambda t: Principal.operator("op_x", t), st.one_of(st.none(), _tenants)),
)


@given(_principals, st.sampled_from(list(Action)), _tenants, _topics)
def test_no_principal_reaches_another_tenant(
    principal: Principal, action: Action, tenant: str, topic: str
) -> None:
    resource = Resource(
        tenant, name="thing", topic=topic, pattern=pattern(topic), recipient=principal.id
    )
    if principal.tenant_id is not None and tenant != principal.tenant_id:
        assert not allowed(principal, action, resource)
        with pytest.raises((NotFound, InvalidToken)):
            authorize(principal, action, resource)
    # allowed() and authorize() never disagree.
    try:
        authorize(principal, action, resource)
    except (Forbidden, NotFound, InvalidToken):
        assert not allowed(principal, action, resource)
    else:
        assert allowed(principal, action, resource)


# -- one decider ------------------------------------------------------------------------------
_DECIDING_CALLS = {"can_publish", "can_subscribe", "has"}
_ALLOWED_MODULES = {Path("core/policy.py"), Path("core/scopes.py")}


def test_no_module_but_the_policy_decides_from_scopes() -> None:
    """Scope checks live in core/policy.py only: a route cannot grow its own rule."""
    root = Path(herald.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative in _ALLOWED_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _DECIDING_CALLS
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "scopes"
            ):
                offenders.append(f"{relative}:{node.lineno}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"can_publish", "can_subscribe"}
            ):
                offenders.append(f"{relative}:{node.lineno}")
    assert not offenders, "authorise through herald.core.policy instead: " + ", ".join(
        sorted(set(offenders))
    )
