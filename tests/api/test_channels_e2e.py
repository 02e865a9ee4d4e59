"""Channels end to end: a real ``herald serve`` delivering to real peers on loopback.

Each test talks to Herald over HTTPS as an operator would (signed admin requests) and checks
what a real peer received:

* webhooks: an HTTPS receiver (trustme certificate for ``localhost`` and ``127.0.0.1``) that
  verifies every request with the independent ``standardwebhooks`` package;
* e-mail: an aiosmtpd server that requires STARTTLS, with a trustme certificate.

(Both peers, and the node wrapper, live in tests/api/peers.py.)

Herald trusts the trustme CA (``HERALD_EGRESS_CA_FILE``) and may reach loopback
(``HERALD_EGRESS_ALLOW=127.0.0.0/8``); one test runs a node without that allow-list. Each
node has its own data directory and is always stopped. Every wait is bounded and no
assertion is about timing: the dispatcher's first retry comes up to 2 s after a failure
(full jitter under ``2 s * 2**(attempt - 1)``), so the retry tests take a few seconds each.

The crash test with deliveries *in flight* runs its node with a 4 s delivery lease instead
of the default 60 s, so that the dead node's leases run out quickly.
"""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from tests.api.peers import (
    DELIVERY_WAIT,
    LEASE_WAIT,
    SENDER,
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
    wait_until,
    webhook,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.api.conftest import NodeFactory


@pytest.fixture(scope="module")
def node(pki: Pki, smtp: Smtp, module_node_factory: NodeFactory) -> Iterator[Node]:
    """The shared node: loopback allowed, the trustme CA trusted, e-mail through ``smtp``."""
    settings = channel_settings(pki, smtp=smtp)
    created = Node.create(module_node_factory, "channels", **settings)
    with running(created):
        yield created


@dataclass
class Sent:
    recipient: str
    path: str
    message_id: str
    delivery: dict[str, Any]


def dead_webhook(node: Node, receiver: Receiver, status: int, **hook: Any) -> Sent:
    """A webhook delivery that went dead at its first attempt on ``status``."""
    secret = new_secret()
    path = receiver.add(secret, status, **hook)
    recipient = unique("dead")
    node.put_recipient(recipient, webhook(receiver.url(path), secret))
    message_id = node.publish(recipient, f"refused with {status}")
    delivery = node.wait_delivery(message_id, "webhook", {"dead"})
    return Sent(recipient, path, message_id, delivery)


# -- 1. a verified webhook, contact data sealed -------------------------------------------------


def test_webhook_is_delivered_verified_and_its_endpoint_sealed(
    node: Node, receiver: Receiver
) -> None:
    secret = new_secret()
    path = receiver.add(secret)
    recipient = unique("ada")
    title = unique("Deploy finished")

    saved = node.put_recipient(recipient, webhook(receiver.url(path), secret))
    [endpoint] = saved["endpoints"]
    assert endpoint["channel"] == "webhook"
    assert endpoint["secret"] == "[redacted]"
    assert endpoint["disabled"] is False

    message_id = node.publish(recipient, title, body="all green", data={"build": 42})
    delivery = node.wait_delivery(message_id, "webhook", {"delivered"})
    assert delivery["attempts"] == 1
    assert delivery["last_error"] is None

    [seen] = receiver.requests(path)
    assert seen.error == ""
    assert seen.headers["webhook-id"] == delivery["id"]
    assert seen.headers["content-type"] == "application/json"
    payload = json.loads(seen.body)
    assert payload == seen.payload
    assert payload["title"] == title
    assert payload["body"] == "all green"
    assert payload["data"] == {"build": 42}
    assert payload["id"] == message_id
    assert payload["delivery_id"] == delivery["id"]
    assert payload["recipient"] == recipient

    # The view redacts the secret...
    view = node.recipient(recipient)
    assert view.status_code == 200, view.text
    [shown] = view.json()["endpoints"]
    assert shown["secret"] == "[redacted]"
    assert shown["disabled"] is False
    assert secret not in view.text
    assert secret.removeprefix("whsec_") not in view.text

    # ...and the database holds neither the URL nor the secret in any readable form.
    marker = path.rsplit("/", 1)[1]
    raw_key = base64.b64decode(secret.removeprefix("whsec_"))
    stored = node.db_bytes()
    for needle in (marker.encode(), secret.encode(), secret[6:].encode(), raw_key):
        assert needle not in stored
    log = (node.data_dir / "serve.log").read_bytes()
    assert secret[6:].encode() not in log
    assert marker.encode() not in log


# -- 2. failure paths ---------------------------------------------------------------------------


def test_webhook_5xx_is_retried_and_then_delivered(node: Node, receiver: Receiver) -> None:
    secret = new_secret()
    path = receiver.add(secret, 500, 200)
    recipient = unique("retry")
    node.put_recipient(recipient, webhook(receiver.url(path), secret))
    message_id = node.publish(recipient, "flaky receiver")

    delivery = node.wait_delivery(message_id, "webhook", {"delivered"})
    assert delivery["attempts"] == 2
    seen = receiver.requests(path)
    assert len(seen) == 2
    assert all(s.error == "" for s in seen)
    # The de-duplication key is stable across retries.
    assert {s.headers["webhook-id"] for s in seen} == {delivery["id"]}


def test_webhook_410_kills_the_delivery_and_disables_the_endpoint(
    node: Node, receiver: Receiver
) -> None:
    gone = dead_webhook(node, receiver, 410)
    assert gone.delivery["attempts"] == 1
    assert "410" in gone.delivery["last_error"]
    assert len(receiver.requests(gone.path)) == 1

    view = node.recipient(gone.recipient)
    assert view.status_code == 200, view.text
    [endpoint] = view.json()["endpoints"]
    assert endpoint["disabled"] is True

    # A disabled endpoint gets no delivery at all.
    again = node.publish(gone.recipient, "after the 410")
    assert node.deliveries(again) == []
    assert len(receiver.requests(gone.path)) == 1


def test_webhook_unreachable_receiver_is_retried_without_leaking_the_url(
    node: Node, node_factory: NodeFactory
) -> None:
    port = node_factory.free_port()  # nothing listens here
    marker = unique("marker")
    url = f"https://localhost:{port}/hook/{marker}?token=t0ps3cret"
    recipient = unique("down")
    node.put_recipient(recipient, webhook(url, new_secret()))
    message_id = node.publish(recipient, "nobody home")

    delivery = node.wait_delivery(
        message_id, "webhook", {"retrying"}, until=lambda d: d["attempts"] >= 1
    )
    error = delivery["last_error"]
    assert error
    assert "unreachable" in error
    for leak in (marker, "t0ps3cret", f":{port}", "https://", "/hook"):
        assert leak not in error


@pytest.mark.parametrize(
    ("status", "headers", "reason"),
    [
        (400, {}, "HTTP 400"),
        (302, {"location": "http://169.254.169.254/latest/meta-data/"}, "redirect"),
    ],
)
def test_webhook_refusals_are_dead_letters(
    node: Node, receiver: Receiver, status: int, headers: dict[str, str], reason: str
) -> None:
    dead = dead_webhook(node, receiver, status, headers=headers)
    assert dead.delivery["attempts"] == 1
    assert reason in dead.delivery["last_error"]
    # One request, and (for the redirect) nothing followed.
    assert len(receiver.requests(dead.path)) == 1
    view = node.recipient(dead.recipient)
    assert view.json()["endpoints"][0]["disabled"] is False


# -- 3. dead letters ----------------------------------------------------------------------------


def test_dead_letters_are_listed_and_can_be_retried(node: Node, receiver: Receiver) -> None:
    gone = dead_webhook(node, receiver, 410)
    refused = dead_webhook(node, receiver, 400)

    listed = node.dead_letters()
    for sent in (gone, refused):
        shown = listed[sent.delivery["id"]]
        assert shown["state"] == "dead"
        assert shown["channel"] == "webhook"
        assert shown["attempts"] == 1
        assert shown["last_error"] == sent.delivery["last_error"]
    assert all(d["state"] == "dead" for d in listed.values())

    # The receiver is fixed; an operator retries the dead letter.
    receiver.hooks[refused.path].statuses = [200]
    response = node.http.post(f"/v1/deliveries/{refused.delivery['id']}:retry")
    assert response.status_code == 202, response.text
    assert response.json()["id"] == refused.delivery["id"]
    assert response.json()["state"] in {"retrying", "sending", "delivered"}  # due again
    done = node.wait_delivery(refused.message_id, "webhook", {"delivered"})
    assert done["id"] == refused.delivery["id"]
    assert done["attempts"] == 2
    seen = receiver.requests(refused.path)
    assert [s.headers["webhook-id"] for s in seen] == [done["id"]] * 2
    assert all(s.error == "" for s in seen)
    assert done["id"] not in node.dead_letters()

    # Delivered is not dead: nothing to retry.
    response = node.http.post(f"/v1/deliveries/{done['id']}:retry")
    assert_problem(response, 404)

    # The 410 letter cannot succeed: its endpoint is disabled. Refused (409), nothing sent.
    response = node.http.post(f"/v1/deliveries/{gone.delivery['id']}:retry")
    assert_problem(response, 409)
    assert len(receiver.requests(gone.path)) == 1


def test_dead_letter_retry_needs_admin_and_a_signature(node: Node, receiver: Receiver) -> None:
    dead = dead_webhook(node, receiver, 400)
    retry = f"/v1/deliveries/{dead.delivery['id']}:retry"
    with node.client(node.demo) as not_admin:
        assert_problem(not_admin.post(retry), 403)
    with node.client(sign=False) as unsigned:
        assert_problem(unsigned.post(retry), 401, "signature-missing")
    [still] = node.deliveries(dead.message_id)
    assert still["state"] == "dead"
    assert len(receiver.requests(dead.path)) == 1


# -- 4. e-mail ----------------------------------------------------------------------------------


def test_email_is_delivered_over_starttls(node: Node, smtp: Smtp) -> None:
    recipient = unique("mail")
    address = f"{recipient}@example.org"
    title = unique("Invoice")
    body = "Your invoice is ready.\nAmount: 5 < 7 & more"

    saved = node.put_recipient(recipient, {"channel": "email", "address": address, "name": "Ada"})
    assert saved["endpoints"][0]["address"] == "[redacted]"
    assert address not in node.recipient(recipient).text

    message_id = node.publish(recipient, title, body=body)
    delivery = node.wait_delivery(message_id, "email", {"delivered"})
    assert delivery["attempts"] == 1

    [mail] = smtp.mailbox.for_delivery(delivery["id"])
    assert mail.tls  # STARTTLS was used (the server also requires it)
    assert mail.mail_from == SENDER
    assert mail.rcpt_tos == [address]
    message = mail.message
    assert message["Subject"] == title
    assert message["From"].addresses[0].addr_spec == SENDER
    assert message["To"].addresses[0].addr_spec == address
    assert f"<{delivery['id']}@example.com>" == message["Message-ID"]
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content().replace("\r\n", "\n").strip() == body
    html = parts[1].get_content()
    assert "Amount: 5 &lt; 7 &amp; more" in html
    assert "<script" not in html
    assert address.encode() not in node.db_bytes()
    assert address.encode() not in (node.data_dir / "serve.log").read_bytes()


# -- 5. SSRF ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.1/hook/{marker}",
        "https://169.254.169.254/latest/meta-data/{marker}",
        "https://[::ffff:169.254.169.254]/latest/meta-data/{marker}",
        "https://2852039166/latest/meta-data/{marker}",  # 169.254.169.254 as one integer
        "http://169.254.169.254/latest/meta-data/{marker}",
    ],
)
def test_internal_webhook_destinations_are_refused_when_saved(node: Node, url: str) -> None:
    marker = unique("marker")
    recipient = unique("ssrf")
    response = node.http.put(
        f"/v1/recipients/{recipient}",
        json={"endpoints": [webhook(url.format(marker=marker), new_secret())]},
    )
    assert_problem(response, 400, "egress-refused")
    assert marker not in response.text
    assert_problem(node.recipient(recipient), 404)


def test_loopback_is_refused_without_the_operator_allow_list(
    pki: Pki, receiver: Receiver, node_factory: NodeFactory
) -> None:
    strict = Node.create(node_factory, "strict", **channel_settings(pki, allow=False))
    secret = new_secret()
    path = receiver.add(secret)
    with running(strict):
        # An IP literal is refused when saved...
        response = strict.http.put(
            f"/v1/recipients/{unique('ssrf')}",
            json={"endpoints": [webhook(receiver.url(path, host="127.0.0.1"), secret)]},
        )
        assert_problem(response, 400, "egress-refused")

        # ...a host name is resolved (once) when sending, and refused then: dead, unsent.
        recipient = unique("ssrf")
        strict.put_recipient(recipient, webhook(receiver.url(path), secret))
        message_id = strict.publish(recipient, "to localhost")
        delivery = strict.wait_delivery(message_id, "webhook", {"dead"})
    assert delivery["attempts"] == 1
    assert "SSRF guard" in delivery["last_error"]
    assert receiver.requests(path) == []


# -- 6. crashes ---------------------------------------------------------------------------------


def kill_between_attempts(node: Node, message_ids: list[str]) -> dict[str, str]:
    """SIGKILL ``node`` at an instant when none of these deliveries is leased (in flight).

    The node is frozen with SIGSTOP and the database read: what is committed then is exactly
    what survives the SIGKILL. If a delivery is mid-attempt, the node runs on for a moment.
    """
    last: dict[str, str] = {}

    def probe() -> dict[str, str] | None:
        node.signal(signal.SIGSTOP)
        try:
            last.update(node.delivery_rows(message_ids))
        except sqlite3.OperationalError:
            last.clear()
        if len(last) == len(message_ids) and set(last.values()) == {"retrying"}:
            node.kill()
            return dict(last)
        node.signal(signal.SIGCONT)
        return None

    return wait_until(probe, lambda: f"no delivery in flight: {last}", WAIT)


def test_pending_deliveries_survive_a_crash(pki: Pki, node_factory: NodeFactory) -> None:
    crashy = Node.create(node_factory, "crash", **channel_settings(pki))
    port = node_factory.free_port()  # the receiver is down at first: nothing listens here
    secret = new_secret()
    path = f"/hook/{unique('marker')}"
    recipient = unique("crash")
    late: Receiver | None = None
    try:
        crashy.start()
        crashy.put_recipient(recipient, webhook(f"https://localhost:{port}{path}", secret))
        ids = [crashy.publish(recipient, f"crash {i}") for i in range(5)]
        for message_id in ids:
            crashy.wait_delivery(
                message_id, "webhook", {"retrying"}, until=lambda d: d["attempts"] >= 1
            )
        kill_between_attempts(crashy, ids)
        assert set(crashy.delivery_rows(ids).values()) == {"retrying"}

        late = Receiver(pki.server_context, port=port)
        late.add(secret, path=path)
        late.start()
        crashy.start()  # same data directory, a new node
        done = {m: crashy.wait_delivery(m, "webhook", {"delivered"}) for m in ids}
    finally:
        crashy.stop()
        if late is not None:
            late.stop()
    assert all(d["attempts"] >= 2 for d in done.values())
    seen = late.requests(path)
    assert all(s.error == "" for s in seen)
    # Nothing was in flight at the crash, so each delivery reached the receiver once.
    assert sorted(s.headers["webhook-id"] for s in seen) == sorted(d["id"] for d in done.values())
    assert {s.payload["id"] for s in seen} == set(ids)


def test_in_flight_deliveries_survive_a_crash(pki: Pki, node_factory: NodeFactory) -> None:
    # A short lease so the dead node's in-flight rows are reclaimed in seconds, not 60.
    crashy = Node.create(
        node_factory, "crash-flight", **channel_settings(pki), HERALD_DELIVERY_LEASE="4"
    )
    slow = Receiver(pki.server_context).start()
    secret = new_secret()
    path = slow.add(secret, hold=2.0)
    recipient = unique("flight")
    try:
        crashy.start()
        crashy.put_recipient(recipient, webhook(slow.url(path), secret))
        ids = [crashy.publish(recipient, f"in flight {i}") for i in range(5)]
        wait_until(
            lambda: True if len(slow.requests(path)) >= len(ids) else None,
            lambda: f"{len(ids)} requests held by the receiver",
            DELIVERY_WAIT,
        )
        crashy.kill()  # while the receiver still holds every answer
        assert set(crashy.delivery_rows(ids).values()) == {"sending"}
        crashy.start()
        done = {
            m: crashy.wait_delivery(m, "webhook", {"delivered"}, timeout=LEASE_WAIT) for m in ids
        }
    finally:
        crashy.stop()
        slow.stop()
    seen = slow.requests(path)
    assert all(s.error == "" for s in seen)
    # At least once: the lost attempt, then the retry, under the same de-duplication key.
    for delivery in done.values():
        assert [s.headers["webhook-id"] for s in seen].count(delivery["id"]) >= 2
    assert {s.payload["id"] for s in seen} == set(ids)


# -- 7. channel policy --------------------------------------------------------------------------


def test_channel_policy_selects_the_channels(node: Node, receiver: Receiver, smtp: Smtp) -> None:
    secret = new_secret()
    path = receiver.add(secret)
    recipient = unique("both")
    node.put_recipient(
        recipient,
        webhook(receiver.url(path), secret),
        {"channel": "email", "address": f"{recipient}@example.org"},
    )

    only_email = node.publish(recipient, "email only", channels=["email"])
    [delivery] = node.deliveries(only_email)
    assert delivery["channel"] == "email"
    delivery = node.wait_delivery(only_email, "email", {"delivered"})
    assert len(smtp.mailbox.for_delivery(delivery["id"])) == 1

    everywhere = node.publish(recipient, "every channel")
    assert sorted(d["channel"] for d in node.deliveries(everywhere)) == ["email", "webhook"]
    node.wait_delivery(everywhere, "email", {"delivered"})
    hooked = node.wait_delivery(everywhere, "webhook", {"delivered"})
    # The receiver only ever saw the unrestricted message.
    assert [s.headers["webhook-id"] for s in receiver.requests(path)] == [hooked["id"]]

    response = node.http.post(
        "/v1/messages",
        json={"topic": "alerts.e2e", "title": "x", "recipients": [recipient], "channels": ["nope"]},
    )
    problem = assert_problem(response, 400)
    assert "nope" in problem["detail"]
