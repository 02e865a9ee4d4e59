"""Authorisation: one pure function decides every request from (principal, action, resource).

Every route authenticates its caller into a :class:`Principal` and asks :func:`authorize`
before it touches data; nothing else in Herald compares scopes or tenants. The whole policy
is the table :data:`POLICY` below — read it to know who may do what.

Three kinds of principal exist:

* ``app`` — a publishing service of one tenant, with OAuth scopes (an access token);
* ``subscriber`` — one recipient of one tenant, limited to topic patterns (a subscriber
  token minted by an app);
* ``operator`` — a person who runs Herald (an operator token from ``/v1/admin/login``):
  a *global* operator (no tenant) administers every tenant, a *tenant* operator only its
  own. Operators manage tenants, apps, keys and the audit log, and see message *metadata*
  and delivery states (the web console); they publish nothing and read no message content.

Decisions, in order:

1. The action must admit the principal's kind (the table has a rule for it). Otherwise the
   refusal is :class:`~herald.errors.InvalidToken` — the token was presented to an API it
   is not meant for (its audience), exactly as if it had not verified.
2. Tenant isolation: a resource of another tenant does not exist for the caller (404 with
   the same detail as a resource that truly does not exist). A resource that belongs to no
   tenant (the list of tenants, tenant-less audit entries) exists only for global
   operators.
3. The kind's rule (scopes, topic patterns, own recipient). A refused *read* of one object
   is 404 (what does not concern the caller does not exist); other refusals are 403 — except
   that an action with a ``visible_via`` read answers 404 when the caller cannot even read
   the object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from herald.core.scopes import ADMIN, MESSAGES_READ, ScopeSet
from herald.core.topics import TopicPattern
from herald.errors import ApiError, Forbidden, InvalidToken, NotFound

__all__ = [
    "POLICY",
    "Action",
    "Kind",
    "Principal",
    "Resource",
    "Rule",
    "allowed",
    "authorize",
    "kinds_for",
]


_NO_SCOPES: Final = ScopeSet()


class Kind(StrEnum):
    """What kind of caller a principal is."""

    APP = "app"
    SUBSCRIBER = "subscriber"
    OPERATOR = "operator"


class Action(StrEnum):
    """Everything a request can ask to do; the value is the stable name used in logs."""

    PUBLISH = "message.publish"
    MESSAGE_READ = "message.read"
    MESSAGE_CANCEL = "message.cancel"
    HISTORY_READ = "topic.history"
    SUBSCRIBER_TOKEN_ISSUE = "subscriber_token.issue"  # noqa: S105 - an action name
    STREAM_TICKET_ISSUE = "stream_ticket.issue"
    STREAM_SUBSCRIBE = "stream.subscribe"
    DEVICE_REGISTER = "device.register"
    DEVICE_LIST = "device.list"
    RECIPIENT_WRITE = "recipient.write"
    RECIPIENT_READ = "recipient.read"
    DELIVERY_LIST = "delivery.list"
    DELIVERY_RETRY = "delivery.retry"
    TEMPLATE_WRITE = "template.write"
    TEMPLATE_READ = "template.read"
    AUDIT_READ = "audit.read"
    TENANT_CREATE = "tenant.create"
    TENANT_READ = "tenant.read"
    APP_CREATE = "app.create"
    APP_READ = "app.read"
    APP_UPDATE = "app.update"
    TENANT_MONITOR = "tenant.monitor"
    MESSAGE_SEARCH = "message.search"
    TENANT_KEY_ROTATE = "tenant_key.rotate"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    Attributes:
        kind: App, subscriber or operator.
        id: The app's client id, the subscriber's recipient id, or the operator id.
        tenant_id: The tenant it belongs to; None only for a global operator.
        scopes: An app's scopes (empty for other kinds).
        patterns: A subscriber's topic patterns (empty for other kinds).
        client_id: The app a subscriber token was minted by (the app itself for apps).
    """

    kind: Kind
    id: str
    tenant_id: str | None
    scopes: ScopeSet = _NO_SCOPES
    patterns: tuple[TopicPattern, ...] = ()
    client_id: str | None = None

    def __post_init__(self) -> None:
        if self.tenant_id is None and self.kind is not Kind.OPERATOR:
            raise ValueError("only an operator may be global (have no tenant)")

    @classmethod
    def app(cls, tenant_id: str, client_id: str, scopes: ScopeSet) -> Principal:
        """An app of ``tenant_id`` holding ``scopes``."""
        return cls(Kind.APP, client_id, tenant_id, scopes=scopes, client_id=client_id)

    @classmethod
    def subscriber(
        cls,
        tenant_id: str,
        recipient: str,
        patterns: tuple[TopicPattern, ...],
        client_id: str,
    ) -> Principal:
        """A recipient of ``tenant_id`` limited to ``patterns`` (minted by ``client_id``)."""
        return cls(Kind.SUBSCRIBER, recipient, tenant_id, patterns=patterns, client_id=client_id)

    @classmethod
    def operator(cls, operator_id: str, tenant_id: str | None) -> Principal:
        """An operator: global when ``tenant_id`` is None."""
        return cls(Kind.OPERATOR, operator_id, tenant_id)

    @property
    def is_global(self) -> bool:
        """A global operator, who administers every tenant."""
        return self.kind is Kind.OPERATOR and self.tenant_id is None

    @property
    def actor(self) -> str:
        """How the audit log names this principal: ``app:…``, ``recipient:…``, ``operator:…``."""
        prefix = "recipient" if self.kind is Kind.SUBSCRIBER else self.kind.value
        return f"{prefix}:{self.id}"

    @property
    def home(self) -> str:
        """The principal's tenant (callers that act on their own tenant use this).

        Raises:
            Forbidden: for a global operator, who has no tenant of its own and must name one.
        """
        if self.tenant_id is None:
            raise Forbidden("a global operator must name the tenant")
        return self.tenant_id


@dataclass(frozen=True, slots=True)
class Resource:
    """What an action is applied to.

    Attributes:
        tenant_id: The owning tenant; None for resources that belong to no tenant.
        name: How a refusal names the object when it answers 404, e.g. ``"message 0190…"``
            (the detail then reads ``no message 0190…``, as for an object that does not
            exist). None for collections and creations.
        topic: The topic concerned (publish, read, cancel, history).
        pattern: The topic pattern concerned (subscriber tokens, stream subscriptions).
        recipient: The recipient concerned (devices).
    """

    tenant_id: str | None
    name: str | None = None
    topic: str | None = None
    pattern: TopicPattern | None = None
    recipient: str | None = None


#: A kind's rule for one action: does this principal may do it to this resource.
Rule = Callable[[Principal, Resource], bool]


def _always(_: Principal, __: Resource) -> bool:
    return True


def _scope(*names: str) -> Rule:
    def rule(p: Principal, _: Resource) -> bool:
        return any(p.scopes.has(n) for n in names)

    return rule


def _may_publish(p: Principal, r: Resource) -> bool:
    return r.topic is not None and p.scopes.can_publish(r.topic)


def _may_read_topic(p: Principal, r: Resource) -> bool:
    """``messages:read``, or a publish/subscribe scope that reaches the topic."""
    if r.topic is None:
        return False
    return (
        p.scopes.has(MESSAGES_READ)
        or p.scopes.can_publish(r.topic)
        or p.scopes.can_subscribe(TopicPattern.parse(r.topic))
    )


def _may_grant(p: Principal, r: Resource) -> bool:
    return r.pattern is not None and p.scopes.can_subscribe(r.pattern)


def _covered(p: Principal, r: Resource) -> bool:
    return r.pattern is not None and any(g.covers(r.pattern) for g in p.patterns)


def _own_recipient(p: Principal, r: Resource) -> bool:
    return r.recipient is not None and r.recipient == p.id


def _global_only(p: Principal, _: Resource) -> bool:
    return p.is_global


_ADMIN = _scope(ADMIN)
_READER = _scope(ADMIN, MESSAGES_READ)


@dataclass(frozen=True, slots=True)
class _Entry:
    rules: Mapping[Kind, Rule]
    #: Why a refusal by the rule happens, for the 403 detail.
    needs: str
    #: A refused caller learns nothing: 404 instead of 403.
    conceal: bool = False
    #: 404 instead of 403 when the caller may not even do this (a read) to the resource.
    visible_via: Action | None = None


def _entry(
    needs: str,
    *,
    app: Rule | None = None,
    subscriber: Rule | None = None,
    operator: Rule | None = None,
    conceal: bool = False,
    visible_via: Action | None = None,
) -> _Entry:
    rules = {
        kind: rule
        for kind, rule in (
            (Kind.APP, app),
            (Kind.SUBSCRIBER, subscriber),
            (Kind.OPERATOR, operator),
        )
        if rule is not None
    }
    return _Entry(MappingProxyType(rules), needs, conceal, visible_via)


#: Who may do what. A kind missing from an action's rules cannot do it at all.
POLICY: Mapping[Action, _Entry] = MappingProxyType(
    {
        Action.PUBLISH: _entry("a publish scope matching the topic", app=_may_publish),
        Action.MESSAGE_READ: _entry(
            "messages:read or a scope reaching the topic", app=_may_read_topic, conceal=True
        ),
        Action.MESSAGE_CANCEL: _entry(
            "a publish scope matching the topic",
            app=_may_publish,
            visible_via=Action.MESSAGE_READ,
        ),
        Action.HISTORY_READ: _entry(
            "messages:read or a scope reaching the topic", app=_may_read_topic
        ),
        Action.SUBSCRIBER_TOKEN_ISSUE: _entry(
            "a subscribe scope covering every requested pattern", app=_may_grant
        ),
        Action.STREAM_TICKET_ISSUE: _entry("a subscriber token", subscriber=_always),
        Action.STREAM_SUBSCRIBE: _entry(
            "a subscriber token covering the pattern", subscriber=_covered
        ),
        Action.DEVICE_REGISTER: _entry(
            "the admin scope, or the recipient's own subscriber token",
            app=_ADMIN,
            subscriber=_own_recipient,
        ),
        # Device public keys are what publishers seal end-to-end content to.
        Action.DEVICE_LIST: _entry("an access token of the tenant", app=_always),
        Action.RECIPIENT_WRITE: _entry("the admin scope", app=_ADMIN),
        Action.RECIPIENT_READ: _entry("admin or messages:read", app=_READER),
        Action.DELIVERY_LIST: _entry(
            "admin or messages:read, or an operator of the tenant", app=_READER, operator=_always
        ),
        Action.DELIVERY_RETRY: _entry(
            "the admin scope, or an operator of the tenant", app=_ADMIN, operator=_always
        ),
        Action.TEMPLATE_WRITE: _entry("the admin scope", app=_ADMIN),
        Action.TEMPLATE_READ: _entry("admin or messages:read", app=_READER),
        # Every caller of a tenant may read its tenant's log (receipts need proofs);
        # only global operators see tenant-less entries, through the tenant check.
        Action.AUDIT_READ: _entry(
            "a token of the tenant", app=_always, subscriber=_always, operator=_always
        ),
        Action.TENANT_CREATE: _entry("a global operator", operator=_global_only),
        Action.TENANT_READ: _entry("an operator of the tenant", operator=_always),
        Action.APP_CREATE: _entry("an operator of the tenant", operator=_always),
        Action.APP_READ: _entry("an operator of the tenant", operator=_always, conceal=True),
        Action.APP_UPDATE: _entry(
            "an operator of the tenant", operator=_always, visible_via=Action.APP_READ
        ),
        # The console: activity, delivery states and message *metadata* of a tenant.
        Action.TENANT_MONITOR: _entry("an operator of the tenant", operator=_always),
        Action.MESSAGE_SEARCH: _entry("an operator of the tenant", operator=_always),
        Action.TENANT_KEY_ROTATE: _entry("an operator of the tenant", operator=_always),
    }
)


def kinds_for(action: Action) -> frozenset[Kind]:
    """The kinds of principal an action admits at all (which tokens a route verifies)."""
    return frozenset(POLICY[action].rules)


def _same_tenant(principal: Principal, resource: Resource) -> bool:
    if principal.is_global:
        return True
    return resource.tenant_id is not None and resource.tenant_id == principal.tenant_id


def allowed(principal: Principal, action: Action, resource: Resource) -> bool:
    """Whether ``principal`` may do ``action`` to ``resource`` (no exception)."""
    entry = POLICY[action]
    rule = entry.rules.get(principal.kind)
    return rule is not None and _same_tenant(principal, resource) and rule(principal, resource)


def _refusal(entry: _Entry, principal: Principal, resource: Resource) -> ApiError:
    hidden = entry.conceal or (
        entry.visible_via is not None and not allowed(principal, entry.visible_via, resource)
    )
    if hidden and resource.name is not None:
        return NotFound(f"no {resource.name}")
    return Forbidden(f"this needs {entry.needs}")


def authorize(principal: Principal, action: Action, resource: Resource) -> None:
    """Let the request through, or raise the refusal (see the module docstring).

    Raises:
        InvalidToken: the action admits no principal of this kind.
        NotFound: the resource is another tenant's (or tenant-less), or a refused read of
            a named object.
        Forbidden: any other refusal, naming what the action needs.
    """
    entry = POLICY[action]
    rule = entry.rules.get(principal.kind)
    if rule is None:
        raise InvalidToken(f"a {principal.kind.value} token cannot be used here")
    if not _same_tenant(principal, resource):
        if resource.name is not None:
            raise NotFound(f"no {resource.name}")
        raise Forbidden(f"this needs {entry.needs}")
    if not rule(principal, resource):
        raise _refusal(entry, principal, resource)
