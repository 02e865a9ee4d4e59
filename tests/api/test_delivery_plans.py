"""Delivery plans end to end: templates, preferences, fallback, scheduling and noise control.

docs/channels.md ("Routing, preferences and fallback", "Scheduling", "Templates") is the
contract. Every test drives a real ``herald serve`` over HTTPS as an operator would and
checks what real peers received (tests/api/peers.py): a Standard Webhooks HTTPS receiver,
an SMTP server that requires STARTTLS, and a WebSocket subscriber that acks.

The tests share one node (recipients, topics and template names are unique per test); the
crash test has a node of its own. Waits are bounded and nothing asserts on timing. Fallback
waits are a few seconds, and the planner ticks every second, so those tests take a few
seconds each; a scheduled message is due 3 s after it is scheduled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from tests.api.peers import (
    WAIT,
    Node,
    Pki,
    Receiver,
    Smtp,
    assert_problem,
    channel_settings,
    new_secret,
    running,
    unique,
    webhook,
)
from websockets.sync.client import ClientConnection, connect

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.api.conftest import NodeFactory

AFTER = 3  # seconds: the wait of the fallback steps under test
DUE_IN = 3.0  # seconds: how far ahead the scheduled messages are due


@pytest.fixture(scope="module")
def node(pki: Pki, smtp: Smtp, module_node_factory: NodeFactory) -> Iterator[Node]:
    """The shared node: loopback allowed, the trustme CA trusted, e-mail through ``smtp``."""
    created = Node.create(module_node_factory, "plans", **channel_settings(pki, smtp=smtp))
    with running(created):
        yield created


# -- helpers ------------------------------------------------------------------------------------


def topic_of(prefix: str) -> str:
    return f"plans.{unique(prefix)}"


def hooked(node: Node, receiver: Receiver, *statuses: int, **prefs: Any) -> tuple[str, str]:
    """A new recipient with one webhook endpoint (and ``prefs``); ``(recipient, path)``."""
    secret = new_secret()
    path = receiver.add(secret, *statuses)
    recipient = unique("rcpt")
    node.put_recipient(recipient, webhook(receiver.url(path), secret), preferences=prefs or None)
    return recipient, path


def payload_ids(receiver: Receiver, path: str) -> list[str]:
    """The message ids a hook received, verified, in arrival order."""
    seen = receiver.requests(path)
    assert all(s.error == "" for s in seen), seen
    return [str(s.payload["id"]) for s in seen]


def rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def history_ids(node: Node, topic: str) -> list[str]:
    response = node.http.get(f"/v1/topics/{topic}/messages")
    assert response.status_code == 200, response.text
    return [m["id"] for m in response.json()["messages"]]


def history_of(node: Node, topic: str, message_id: str) -> dict[str, Any]:
    response = node.http.get(f"/v1/topics/{topic}/messages")
    assert response.status_code == 200, response.text
    [found] = [m for m in response.json()["messages"] if m["id"] == message_id]
    return dict(found)


def listed(node: Node, state: str) -> set[str]:
    """Ids of the tenant's deliveries in ``state`` (``GET /v1/deliveries?state=``)."""
    response = node.http.get("/v1/deliveries", params={"state": state, "limit": "1000"})
    assert response.status_code == 200, response.text
    assert {d["state"] for d in response.json()["deliveries"]} <= {state}
    return {d["id"] for d in response.json()["deliveries"]}


def audited(node: Node, action: str, obj: str) -> list[dict[str, Any]]:
    """The details of the audit entries of ``action`` about ``obj``."""
    return [e.details for e in node.audit_entries(action) if e.object == obj]


def stored(variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Variants as a template view shows them: every field, ``channel`` "*" by default."""
    empty = {"channel": "*", "title": None, "body": None, "html": None}
    return [{**empty, **variant} for variant in variants]


def put_template(node: Node, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    response = node.http.put(f"/v1/templates/{name}", json=spec)
    assert response.status_code == 201, response.text
    return dict(response.json())


@contextlib.contextmanager
def open_stream(node: Node, recipient: str, topic: str) -> Iterator[ClientConnection]:
    """A WebSocket stream of ``recipient`` on ``topic``, once the server says it is ready."""
    with node.client(node.demo) as demo:
        response = demo.post(
            "/v1/subscriber-tokens", json={"recipient": recipient, "topics": [topic]}
        )
    assert response.status_code == 201, response.text
    with connect(
        node.herald.url.replace("https://", "wss://", 1) + "/v1/stream",
        additional_headers={"Authorization": f"Bearer {response.json()['token']}"},
        ssl=node.herald.ssl_context(),
        open_timeout=WAIT,
        close_timeout=2,
        compression=None,
    ) as ws:
        assert next_frame(ws)["type"] == "ready"
        yield ws


def next_frame(ws: ClientConnection) -> dict[str, Any]:
    """The next frame that is not a heartbeat."""
    deadline = time.monotonic() + WAIT
    while True:
        frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if frame.get("type") != "heartbeat":
            return dict(frame)


# -- 1. templates -------------------------------------------------------------------------------

SHIPPED_V1: dict[str, Any] = {
    "default_locale": "en",
    "variants": [{"locale": "en", "title": "Order {{ order }} shipped", "body": "Hi {{ name }}"}],
}
SHIPPED_V2: dict[str, Any] = {
    "default_locale": "en",
    "description": "second version",
    "variants": [
        {"locale": "en", "title": "Your order {{ order }} shipped", "body": "Hi {{ name }}!"}
    ],
}


@pytest.mark.parametrize(
    ("field", "source", "reason"),
    [
        ("title", "{{ ''.__class__.__mro__ }}", "'__class__' is outside the sandbox"),
        ("body", "Hi {{ x|attr('__globals__') }}", "'__globals__' is outside the sandbox"),
        ("html", "<p>{% include 'x' %}</p>", "include %} is not allowed"),
        ("html", "{{ x['__subclasses__'] }}", "'__subclasses__' is outside the sandbox"),
        ("body", "{% import 'x' as y %}", "import %} is not allowed"),
        ("title", "{% for a in x %}" * 4 + "{% endfor %}" * 4, "loops nest deeper than 3"),
        ("body", "{{ order", "unexpected end of template"),
    ],
    ids=["dunder-attribute", "attr-filter", "include", "dunder-item", "import", "loops", "syntax"],
)
def test_template_reaching_outside_the_sandbox_is_refused(
    node: Node, field: str, source: str, reason: str
) -> None:
    name = unique("escape")
    put_template(node, name, SHIPPED_V1)
    variant = {"locale": "en", "title": "Order {{ order }}", field: source}
    response = node.http.put(
        f"/v1/templates/{name}", json={"default_locale": "en", "variants": [variant]}
    )
    problem = assert_problem(response, 422, "invalid-template")
    assert f"variant (*, en) {field} line 1" in problem["detail"], problem
    assert reason in problem["detail"], problem
    # No new version: the newest is still the first, and only it was audited.
    newest = node.http.get(f"/v1/templates/{name}")
    assert newest.status_code == 200, newest.text
    assert newest.json()["version"] == 1
    assert [d["version"] for d in audited(node, "template.saved", f"template:{name}")] == [1]


def test_templates_are_versioned_read_listed_and_previewed(node: Node) -> None:
    name = unique("shipped")
    first = put_template(node, name, SHIPPED_V1)
    assert first["name"] == name
    assert first["version"] == 1
    assert first["variants"] == stored(SHIPPED_V1["variants"])
    second = put_template(node, name, SHIPPED_V2)
    assert second["version"] == 2
    assert second["description"] == "second version"

    newest = node.http.get(f"/v1/templates/{name}")
    assert newest.status_code == 200, newest.text
    assert newest.json()["version"] == 2
    assert newest.json()["variants"] == stored(SHIPPED_V2["variants"])
    old = node.http.get(f"/v1/templates/{name}", params={"version": "1"})
    assert old.status_code == 200, old.text
    assert old.json()["version"] == 1
    assert old.json()["variants"] == stored(SHIPPED_V1["variants"])
    assert_problem(node.http.get(f"/v1/templates/{name}", params={"version": "3"}), 404)

    listed = node.http.get("/v1/templates")
    assert listed.status_code == 200, listed.text
    [mine] = [t for t in listed.json()["templates"] if t["name"] == name]
    assert mine["version"] == 2

    preview = node.http.post(
        f"/v1/templates/{name}:render",
        json={"channel": "webhook", "locale": "en-GB", "variables": {"order": 7, "name": "Ada"}},
    )
    assert preview.status_code == 200, preview.text
    shown = preview.json()
    assert shown["version"] == 2
    assert (shown["channel"], shown["locale"]) == ("*", "en")
    assert (shown["title"], shown["body"], shown["html"]) == (
        "Your order 7 shipped",
        "Hi Ada!",
        None,
    )
    preview = node.http.post(
        f"/v1/templates/{name}:render", json={"version": 1, "variables": {"order": 7, "name": "A"}}
    )
    assert preview.status_code == 200, preview.text
    assert preview.json()["title"] == "Order 7 shipped"
    missing = node.http.post(f"/v1/templates/{name}:render", json={"variables": {"order": 7}})
    assert_problem(missing, 422, "template-render-failed")
    # Found by API fuzzing: a version past the database's integer range was a 500.
    for version in (2**31, 2**70):
        huge = node.http.post(f"/v1/templates/{name}:render", json={"version": version})
        assert_problem(huge, 400)
    huge_ref = {"topic": "t", "template": {"name": name, "version": 2**63}}
    assert_problem(node.http.post("/v1/messages", json=huge_ref), 400)

    # Every spec needs a "*" variant in its default locale.
    lacking = {"default_locale": "en", "variants": [{"locale": "fr", "title": "x"}]}
    problem = assert_problem(node.http.put(f"/v1/templates/{name}", json=lacking), 422)
    assert problem["type"].endswith(":invalid-template")
    assert "default locale" in problem["detail"]

    # Saving needs the admin scope (the demo app may read, not write).
    with node.client(node.demo) as demo:
        assert_problem(demo.put(f"/v1/templates/{name}", json=SHIPPED_V1), 403)
        assert demo.get(f"/v1/templates/{name}").json()["version"] == 2

    saved = audited(node, "template.saved", f"template:{name}")
    assert [d["version"] for d in saved] == [1, 2]


ORDER_TEMPLATE: dict[str, Any] = {
    "default_locale": "en",
    "variants": [
        {"locale": "en", "title": "Order {{ order }} shipped", "body": "Hi {{ name }}, it left."},
        {"channel": "inapp", "locale": "en", "title": "In-app {{ order }}", "body": "Track it"},
        {"locale": "zh-CN", "title": "订单 {{ order }} 已发货", "body": "{{ name }}，已发货。"},
        {
            "channel": "email",
            "locale": "zh-CN",
            "title": "您的订单 {{ order }}",
            "body": "{{ name }}：{{ note }}",
            "html": "<p>{{ name }}：{{ note }}</p>",
        },
    ],
}


def test_templated_message_renders_per_channel_and_reader_locale(
    node: Node, receiver: Receiver, smtp: Smtp
) -> None:
    name = unique("order")
    put_template(node, name, ORDER_TEMPLATE)
    topic = topic_of("tpl")
    # Ada reads e-mail in Chinese (the endpoint's locale); her webhook gets the message's.
    secret = new_secret()
    ada_path = receiver.add(secret)
    ada = unique("ada")
    mail = {"channel": "email", "address": f"{ada}@example.org", "locale": "zh-CN"}
    node.put_recipient(ada, webhook(receiver.url(ada_path), secret), mail)
    # Bo prefers Chinese: his webhook renders in his preference's locale, but his e-mail
    # endpoint says English, and the endpoint's locale comes first.
    secret = new_secret()
    bo_path = receiver.add(secret)
    bo = unique("bo")
    bo_mail = {"channel": "email", "address": f"{bo}@example.org", "locale": "en"}
    node.put_recipient(
        bo, webhook(receiver.url(bo_path), secret), bo_mail, preferences={"locale": "zh-CN"}
    )
    variables = {"order": "A-1", "name": "Ada", "note": "<script>alert(1)</script>"}

    with open_stream(node, ada, topic) as ws:
        message_id = node.publish(
            ada,
            None,
            topic=topic,
            recipients=[ada, bo],
            template={"name": name, "locale": "en", "variables": variables},
        )
        frame = next_frame(ws)

    # The inbox (stream, GET and history) shows the in-app variant in the message's locale.
    assert (frame["id"], frame["title"], frame["body"]) == (message_id, "In-app A-1", "Track it")
    view = node.message(message_id)
    assert (view["title"], view["body"]) == ("In-app A-1", "Track it")
    assert view["template"]["name"] == name
    assert view["template"]["version"] == 1  # pinned at publish
    shown = history_of(node, topic, message_id)
    assert (shown["title"], shown["body"]) == ("In-app A-1", "Track it")

    hook = node.wait_delivery(message_id, "webhook", {"delivered"}, recipient=ada)
    [seen] = receiver.requests(ada_path)
    assert seen.error == ""
    assert seen.headers["webhook-id"] == hook["id"]
    assert seen.payload["id"] == message_id
    assert seen.payload["recipient"] == ada
    assert (seen.payload["title"], seen.payload["body"]) == (
        "Order A-1 shipped",
        "Hi Ada, it left.",
    )

    node.wait_delivery(message_id, "webhook", {"delivered"}, recipient=bo)
    [seen] = receiver.requests(bo_path)
    assert seen.error == ""
    assert (seen.payload["title"], seen.payload["body"]) == ("订单 A-1 已发货", "Ada，已发货。")

    sent = node.wait_delivery(message_id, "email", {"delivered"}, recipient=ada)
    [got] = smtp.mailbox.for_delivery(sent["id"])
    assert got.message["Subject"] == "您的订单 A-1"
    assert got.message["Content-Language"] == "zh-CN"
    text, html = (part.get_content() for part in got.message.iter_parts())
    assert text.strip() == "Ada：<script>alert(1)</script>"  # plain text is not HTML
    assert "<p>Ada：&lt;script&gt;alert(1)&lt;/script&gt;</p>" in html
    assert "<script" not in html

    # No e-mail variant in English: the "*" one of that locale.
    sent = node.wait_delivery(message_id, "email", {"delivered"}, recipient=bo)
    [got] = smtp.mailbox.for_delivery(sent["id"])
    assert got.message["Subject"] == "Order A-1 shipped"
    plain = got.message.get_body(("plain",))
    assert plain is not None
    assert plain.get_content().strip() == "Hi Ada, it left."


def test_templated_publish_refusals_store_nothing(node: Node, receiver: Receiver) -> None:
    name = unique("strict")
    put_template(node, name, ORDER_TEMPLATE)
    recipient, path = hooked(node, receiver)
    messages = node.herald.db_count("messages")
    state = node.herald.state_count()

    unknown = node.publish_request(
        recipient, None, template={"name": unique("nothing"), "variables": {}}
    )
    assert_problem(unknown, 400, "unknown-template")

    # The e-mail variant needs "note": every variant renders at publish, so this fails now.
    private = "private-" + unique("value")
    variables = {"order": private, "name": private}
    missing = node.publish_request(recipient, None, template={"name": name, "variables": variables})
    problem = assert_problem(missing, 422, "template-render-failed")
    assert "'note' is undefined" in problem["detail"]
    assert "email" in problem["detail"]
    assert private not in missing.text

    both = node.publish_request(recipient, "a title", template={"name": name, "variables": {}})
    assert_problem(both, 400)

    assert node.herald.db_count("messages") == messages
    assert node.herald.state_count() == state  # only the refusals were audited
    assert receiver.requests(path) == []


# -- 2. preferences -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "preferences",
    [
        {"timezone": "Mars/Olympus_Mons"},
        {"quiet_hours": {"start": "24:00", "end": "07:00"}},
        {"quiet_hours": {"start": "07:00", "end": "07:00"}},
        {"locale": "not a locale"},
        {"colour": "blue"},
        {"categories": {"Shouting Name": {}}},
        {"categories": {"news": {"cap": {"count": 0, "period": 3600}}}},
        {"fallback": [{"channels": ["webhook"]}, {"channels": ["inapp"], "after": 5}]},
        {"fallback": [{"channels": ["inapp"]}, {"channels": ["webhook"]}]},
        {"fallback": [{"channels": ["email"]}, {"channels": ["email"], "after": 5}]},
    ],
)
def test_invalid_preferences_are_refused_and_change_nothing(
    node: Node, receiver: Receiver, preferences: dict[str, Any]
) -> None:
    recipient, path = hooked(node, receiver, locale="en")
    before = node.recipient(recipient).json()

    response = node.http.put(
        f"/v1/recipients/{recipient}",
        json={"endpoints": [webhook(receiver.url(path), new_secret())], "preferences": preferences},
    )
    assert_problem(response, 400, "invalid-preferences")

    after = node.recipient(recipient)
    assert after.status_code == 200, after.text
    assert after.json() == before
    assert after.json()["preferences"] == {"locale": "en"}


def test_category_opt_out_drops_that_channel_only(
    node: Node, receiver: Receiver, smtp: Smtp
) -> None:
    secret = new_secret()
    path = receiver.add(secret)
    recipient = unique("optout")
    node.put_recipient(
        recipient,
        webhook(receiver.url(path), secret),
        {"channel": "email", "address": f"{recipient}@example.org"},
        preferences={"categories": {"marketing": {"channels": {"email": False}}}},
    )

    promo = node.publish(recipient, "sale", category="marketing")
    bill = node.publish(recipient, "invoice", category="billing")

    assert [d["channel"] for d in node.deliveries(promo)] == ["webhook"]
    assert sorted(d["channel"] for d in node.deliveries(bill)) == ["email", "webhook"]
    node.wait_delivery(promo, "webhook", {"delivered"})
    mailed = node.wait_delivery(bill, "email", {"delivered"})
    assert len(smtp.mailbox.for_delivery(mailed["id"])) == 1
    node.wait_delivery(bill, "webhook", {"delivered"})
    assert sorted(payload_ids(receiver, path)) == sorted([promo, bill])
    # The in-app inbox gets every category.
    assert [d["state"] for d in node.deliveries(promo, inapp=True) if d["channel"] == "inapp"] == [
        "pending"
    ]


# -- 3. fallback --------------------------------------------------------------------------------

INAPP_THEN_WEBHOOK = [{"channels": ["inapp"]}, {"channels": ["webhook"], "after": AFTER}]


def test_unacked_inapp_falls_back_to_the_webhook_after_its_wait(
    node: Node, receiver: Receiver
) -> None:
    recipient, path = hooked(node, receiver)
    message_id = node.publish(recipient, "did you see this?", fallback=INAPP_THEN_WEBHOOK)

    [waiting] = node.deliveries(message_id)
    assert waiting["state"] == "waiting"
    assert waiting["id"] in listed(node, "waiting")
    assert waiting["step"] == 1
    assert waiting["recipient"] == recipient
    assert waiting["message_id"] == message_id
    assert waiting["next_attempt_at"] is not None
    starts = parse_time(waiting["next_attempt_at"]) - parse_time(waiting["created_at"])
    assert starts == timedelta(seconds=AFTER)
    assert payload_ids(receiver, path) == []

    done = node.wait_delivery(message_id, "webhook", {"delivered"})
    assert done["id"] == waiting["id"]
    assert done["attempts"] == 1
    assert payload_ids(receiver, path) == [message_id]


def test_inapp_ack_skips_the_later_steps(node: Node, receiver: Receiver) -> None:
    recipient, path = hooked(node, receiver)
    topic = topic_of("ack")
    with open_stream(node, recipient, topic) as ws:
        message_id = node.publish(recipient, "ack me", topic=topic, fallback=INAPP_THEN_WEBHOOK)
        frame = next_frame(ws)
        assert (frame["type"], frame["id"]) == ("message", message_id)
        ws.send(json.dumps({"type": "ack", "id": message_id}))
        node.wait_delivery(message_id, "inapp", {"delivered"}, recipient=recipient)
        # The ack came before the wait ran out: the webhook step is still waiting.
        [waiting] = node.deliveries(message_id)
        assert waiting["state"] == "waiting"

    skipped = node.wait_delivery(message_id, "webhook", {"skipped"})
    assert skipped["attempts"] == 0
    assert skipped["next_attempt_at"] is None
    assert "delivered" in skipped["last_error"]
    assert receiver.requests(path) == []
    assert skipped["id"] in listed(node, "skipped")
    [entry] = audited(node, "delivery.skipped", f"delivery:{skipped['id']}")
    assert entry["message"] == message_id
    assert entry["channel"] == "webhook"


def test_failed_step_starts_the_next_at_once(node: Node, receiver: Receiver, smtp: Smtp) -> None:
    secret = new_secret()
    path = receiver.add(secret, 410)
    recipient = unique("gone")
    node.put_recipient(
        recipient,
        webhook(receiver.url(path), secret),
        {"channel": "email", "address": f"{recipient}@example.org"},
    )
    plan = [{"channels": ["webhook"]}, {"channels": ["email"]}]
    message_id = node.publish(recipient, "webhook first, then mail", fallback=plan)

    steps = {d["channel"]: d["step"] for d in node.deliveries(message_id)}
    assert steps == {"webhook": 0, "email": 1}
    dead = node.wait_delivery(message_id, "webhook", {"dead"})
    assert "410" in dead["last_error"]
    # No "after": the e-mail step waits for the webhook's failure (at the latest until the
    # message expires, a day from now), so arriving now means the failure started it.
    mailed = node.wait_delivery(message_id, "email", {"delivered"})
    assert mailed["step"] == 1
    [mail] = smtp.mailbox.for_delivery(mailed["id"])
    assert mail.message["Subject"] == "webhook first, then mail"
    assert len(receiver.requests(path)) == 1


def test_recipient_fallback_applies_when_the_message_has_no_plan(
    node: Node, receiver: Receiver
) -> None:
    # The recipient has no web-push endpoint: that step is dropped and its wait carried on.
    plan = [
        {"channels": ["inapp"]},
        {"channels": ["webpush"], "after": 1},
        {"channels": ["webhook"], "after": AFTER - 1},
    ]
    recipient, path = hooked(node, receiver, fallback=plan)
    planless = node.publish(recipient, "uses the recipient's plan")
    direct = node.publish(recipient, "names its channel", channels=["webhook"])

    [waiting] = node.deliveries(planless)
    assert (waiting["state"], waiting["step"]) == ("waiting", 1)
    starts = parse_time(waiting["next_attempt_at"]) - parse_time(waiting["created_at"])
    assert starts == timedelta(seconds=AFTER)
    # A message's own channels replace the recipient's plan: one step, at once.
    first = node.wait_delivery(direct, "webhook", {"delivered"})
    assert first["step"] == 0
    assert node.deliveries(planless)[0]["state"] == "waiting"

    node.wait_delivery(planless, "webhook", {"delivered"})
    assert payload_ids(receiver, path) == [direct, planless]


# -- 4. scheduling ------------------------------------------------------------------------------


def test_scheduled_message_is_published_when_due_and_can_be_cancelled(
    node: Node, receiver: Receiver
) -> None:
    recipient, path = hooked(node, receiver)
    topic = topic_of("later")
    due = datetime.now(UTC) + timedelta(seconds=DUE_IN)
    answer = node.published(recipient, "on time", topic=topic, deliver_at=rfc3339(due))
    later = answer["id"]
    assert answer["scheduled"] is True
    assert abs(parse_time(answer["deliver_at"]) - due) < timedelta(seconds=1)
    assert isinstance(answer["audit"]["index"], int)
    doomed = node.published(recipient, "never", topic=topic, deliver_at=rfc3339(due))["id"]

    cancelled = node.http.post(f"/v1/messages/{doomed}:cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    assert_problem(node.http.post(f"/v1/messages/{doomed}:cancel"), 409)

    view = node.message(later)
    assert (view["state"], view["deliveries"]) == ("scheduled", [])
    assert view["id"] == later
    assert "title" not in view  # the content is sealed until it is published
    assert later not in history_ids(node, topic)

    for when in (timedelta(days=31), -timedelta(hours=1)):
        refused = node.publish_request(
            recipient, "out of range", topic=topic, deliver_at=rfc3339(datetime.now(UTC) + when)
        )
        problem = assert_problem(refused, 400, "invalid-schedule")
        assert "deliver_at" in problem["detail"]
    refused = node.publish_request(recipient, "naive", deliver_at="2030-01-01T08:00:00")
    assert_problem(refused, 400)

    # Up to the replay window in the past means now.
    now = node.published(recipient, "just now", deliver_at=rfc3339(datetime.now(UTC)))
    assert "scheduled" not in now
    assert node.message(now["id"])["title"] == "just now"

    done = node.wait_delivery(later, "webhook", {"delivered"})
    published = node.message(later)
    assert "state" not in published
    assert published["title"] == "on time"
    # Published when due, and the TTL counts from then.
    created = parse_time(published["created_at"])
    assert created >= parse_time(answer["deliver_at"])
    assert parse_time(published["expires_at"]) - created == timedelta(seconds=published["ttl"])
    assert [d["id"] for d in published["deliveries"] if d["channel"] == "webhook"] == [done["id"]]
    assert history_ids(node, topic) == [later]
    node.wait_delivery(now["id"], "webhook", {"delivered"})
    assert sorted(payload_ids(receiver, path)) == sorted([now["id"], later])
    assert_problem(node.http.post(f"/v1/messages/{later}:cancel"), 409)

    # The cancelled one was due at the same moment and never came.
    view = node.message(doomed)
    assert (view["state"], view["deliveries"]) == ("cancelled", [])
    assert "cancelled by" in view["reason"]
    assert doomed not in history_ids(node, topic)

    assert len(audited(node, "message.scheduled", f"message:{later}")) == 1
    assert len(audited(node, "message.scheduled", f"message:{doomed}")) == 1
    # Published as the app that scheduled it.
    [entry] = [e for e in node.audit_entries("message.published") if e.object == f"message:{later}"]
    assert entry.actor == f"app:{node.admin.client_id}"
    assert audited(node, "message.published", f"message:{doomed}") == []
    [cancel] = audited(node, "message.cancelled", f"message:{doomed}")
    assert cancel["topic"] == topic


def test_scheduled_message_survives_a_crash_and_is_published_once(
    pki: Pki, receiver: Receiver, node_factory: NodeFactory
) -> None:
    crashy = Node.create(node_factory, "sched-crash", **channel_settings(pki))
    with running(crashy):
        recipient, path = hooked(crashy, receiver)
        due = datetime.now(UTC) + timedelta(seconds=DUE_IN)
        message_id = crashy.publish(recipient, "after the crash", deliver_at=rfc3339(due))
        crashy.kill()
        time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.5)
        crashy.start()  # same data directory, a new node
        crashy.wait_delivery(message_id, "webhook", {"delivered"})
        # A few more planner ticks: nothing releases it a second time.
        time.sleep(2.5)
        assert payload_ids(receiver, path) == [message_id]
        assert len(audited(crashy, "message.published", f"message:{message_id}")) == 1
        assert crashy.herald.db_count("messages") == 1


# -- 5. quiet hours -----------------------------------------------------------------------------


def quiet_around_now(zone: str) -> tuple[dict[str, Any], datetime]:
    """Preferences with a two-hour quiet window around now in ``zone``, and its UTC end."""
    local = datetime.now(ZoneInfo(zone)).replace(second=0, microsecond=0)
    start, end = local - timedelta(hours=1), local + timedelta(hours=1)
    prefs = {
        "timezone": zone,
        "quiet_hours": {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")},
    }
    return prefs, end.astimezone(UTC)


# Zones without DST: wall-clock arithmetic above is then exact.
@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
def test_quiet_hours_hold_deliveries_except_urgent_ones(
    node: Node, receiver: Receiver, zone: str
) -> None:
    prefs, end = quiet_around_now(zone)
    recipient, path = hooked(node, receiver, **prefs)

    held = node.publish(recipient, "can wait")
    [delivery] = node.deliveries(held)
    assert delivery["state"] == "pending"
    assert parse_time(delivery["next_attempt_at"]) == end

    urgent = node.publish(recipient, "wake up", priority="urgent")
    node.wait_delivery(urgent, "webhook", {"delivered"})

    # A fallback step that starts inside the window is held the same way.
    plan = [{"channels": ["inapp"]}, {"channels": ["webhook"], "after": 1}]
    stepped = node.publish(recipient, "later step", fallback=plan)
    started = node.wait_delivery(stepped, "webhook", {"pending"})
    assert parse_time(started["next_attempt_at"]) == end

    [still] = node.deliveries(held)
    assert (still["state"], still["attempts"]) == ("pending", 0)
    assert parse_time(still["next_attempt_at"]) == end
    assert node.deliveries(stepped)[0]["attempts"] == 0
    assert payload_ids(receiver, path) == [urgent]


# -- 6. frequency caps --------------------------------------------------------------------------


def test_frequency_cap_suppresses_all_but_urgent(node: Node, receiver: Receiver) -> None:
    cap = {"digest": {"cap": {"count": 2, "period": 3600}}}
    recipient, path = hooked(node, receiver, categories=cap)
    topic = topic_of("cap")

    first, second, third = (
        node.published(recipient, f"digest {n}", topic=topic, category="digest") for n in range(3)
    )
    [suppressed] = node.deliveries(third["id"])
    assert suppressed["state"] == "suppressed"
    assert "frequency cap of 2 per 3600 s" in suppressed["last_error"]
    assert "digest" in suppressed["last_error"]
    assert suppressed["id"] in listed(node, "suppressed")
    other = node.publish(recipient, "not capped", category="security")
    urgent = node.publish(recipient, "digest, urgent", category="digest", priority="urgent")

    for message_id in (first["id"], second["id"], other, urgent):
        node.wait_delivery(message_id, "webhook", {"delivered"})
    assert sorted(payload_ids(receiver, path)) == sorted([first["id"], second["id"], other, urgent])
    assert node.deliveries(third["id"])[0]["state"] == "suppressed"
    # The in-app inbox still has it; the audit entry counts the suppressed recipient.
    assert third["id"] in history_ids(node, topic)
    [inbox] = [d for d in node.deliveries(third["id"], inapp=True) if d["channel"] == "inapp"]
    assert inbox["state"] == "pending"
    [entry] = audited(node, "message.published", f"message:{third['id']}")
    assert entry["suppressed"] == 1
    [entry] = audited(node, "message.published", f"message:{first['id']}")
    assert "suppressed" not in entry


# -- 7. de-duplication --------------------------------------------------------------------------


def test_same_content_within_the_window_is_suppressed(node: Node, receiver: Receiver) -> None:
    recipient, path = hooked(node, receiver)
    same = {"body": "Your code is 1234", "dedup_window": 60}
    first = node.publish(recipient, "sign-in code", **same)
    again = node.publish(recipient, "sign-in code", **same)
    changed = node.publish(recipient, "sign-in code", body="Your code is 5678", dedup_window=60)

    [suppressed] = node.deliveries(again)
    assert suppressed["state"] == "suppressed"
    assert f"same content as message {first}" in suppressed["last_error"]
    node.wait_delivery(first, "webhook", {"delivered"})
    node.wait_delivery(changed, "webhook", {"delivered"})
    assert sorted(payload_ids(receiver, path)) == sorted([first, changed])
    assert node.deliveries(again)[0]["state"] == "suppressed"

    [entry] = audited(node, "message.published", f"message:{again}")
    assert entry["suppressed"] == 1
    for message_id in (first, changed):
        [entry] = audited(node, "message.published", f"message:{message_id}")
        assert "suppressed" not in entry
    # Without a window, the same content is delivered again.
    repeat = node.publish(recipient, "sign-in code", body="Your code is 1234")
    node.wait_delivery(repeat, "webhook", {"delivered"})
    assert sorted(payload_ids(receiver, path)) == sorted([first, changed, repeat])


def test_concurrent_publishes_of_the_same_content_notify_once(
    node: Node, receiver: Receiver
) -> None:
    # Concurrent publishes are committed together (group commit): a request routed after
    # another of its group must see that one's notification, not only the committed log.
    recipient, path = hooked(node, receiver)
    message = {
        "topic": "alerts.e2e",
        "recipients": [recipient],
        "title": "sign-in code",
        "body": "Your code is 4321",
        "dedup_window": 60,
    }
    bearer = {"Authorization": f"Bearer {node.herald.token(node.admin)}"}
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)

    async def publish_all() -> list[httpx.Response]:
        async with node.herald.async_client(headers=bearer, limits=limits) as client:
            return await asyncio.gather(
                *(client.post("/v1/messages", json=message) for _ in range(16))
            )

    responses = asyncio.run(publish_all())
    assert [r.status_code for r in responses] == [202] * 16, [r.text for r in responses]
    ids = [r.json()["id"] for r in responses]
    states = {i: node.deliveries(i)[0]["state"] for i in ids}
    assert sorted(states.values()).count("suppressed") == 15, states
    [notified] = [i for i, state in states.items() if state != "suppressed"]
    node.wait_delivery(notified, "webhook", {"delivered"})
    assert payload_ids(receiver, path) == [notified]
