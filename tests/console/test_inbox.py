"""The inbox page (/console/inbox) in a real Chromium against a real server.

Publishes with the SDK (the demo app, signed), watches the page receive over WebSocket,
acknowledge, resume after network drops and silent connections, refuse dead tokens, and
walk the Web Push set-up up to the browser's (expected, headless) refusal. Every test also
fails on any CSP or Trusted Types violation the page causes (the ``tab`` fixture).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import secrets
import signal
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests.api.conftest import Node
from tests.console.conftest import TIMEOUT_MS, Sdk, Tab, save_screenshot

from herald.server.console import CONSOLE_CSP

try:
    from playwright.sync_api import expect
except ImportError:  # the `playwright` fixture skips (or fails, in CI) with the reason
    expect = None
else:
    expect.set_options(timeout=TIMEOUT_MS)

STATUS_CONNECTED = "Connected"
STATUS_RECONNECTING = "Reconnecting…"
STATUS_DISCONNECTED = "Disconnected"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def prefix() -> str:
    return "inbox" + secrets.token_hex(3)


def open_inbox(tab: Tab, token: str) -> None:
    """Open the inbox with the token in the fragment; wait until the stream is ready."""
    tab.goto(f"/console/inbox#token={token}")
    expect(tab.page.get_by_role("status")).to_have_text(STATUS_CONNECTED)


def notifications(tab: Tab) -> Any:
    return tab.page.get_by_role("list", name="Notifications").get_by_role("listitem")


def item(tab: Tab, title: str) -> Any:
    return notifications(tab).filter(has_text=title)


def delivery_state(sdk: Sdk, message_id: str, recipient: str) -> str | None:
    message = sdk.message(message_id)
    for delivery in message["deliveries"]:
        if delivery["channel"] == "inapp" and delivery["recipient"] == recipient:
            return str(delivery["state"])
    return None


# -- headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/console/", "/console/inbox", "/console/js/inbox.js"])
def test_console_responses_carry_the_csp(tab: Tab, path: str) -> None:
    # Through the browser itself (page.request would be Playwright's own HTTP client, which
    # does not know the certificate pin).
    response = tab.goto(path)
    assert response is not None
    assert response.status == 200, path
    csp = response.headers["content-security-policy"]
    assert csp == CONSOLE_CSP
    assert "require-trusted-types-for 'script'" in csp
    assert "trusted-types herald-sw" in csp
    assert "'unsafe-inline'" not in csp
    assert "'unsafe-eval'" not in csp


# -- live messages and acks ------------------------------------------------------------------


def test_inbox_shows_a_live_message_and_records_its_ack(tab: Tab, sdk: Sdk) -> None:
    p, recipient = prefix(), "alice"
    token = sdk.subscriber_token(recipient, [f"{p}.>"])
    open_inbox(tab, token)
    # The token came in the fragment and is gone from the address bar (and history).
    assert "token" not in tab.page.url
    assert tab.page.evaluate("sessionStorage.getItem('herald-inbox-token')") == token

    sent = sdk.publish(
        f"{p}.orders",
        title="Order 17 shipped",
        body="Two parcels <b>not bold</b>",
        data={"order": 17},
        recipients=[recipient],
    )
    entry = item(tab, "Order 17 shipped")
    expect(entry).to_have_count(1)
    # Text, not markup: the tags arrive as characters.
    expect(entry).to_contain_text("Two parcels <b>not bold</b>")
    expect(entry).to_contain_text(f"{p}.orders")
    expect(entry.locator("time")).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))

    acks: list[str] = []
    tab.sockets[0].on("framesent", lambda payload: acks.append(payload))  # noqa: PLW0108
    entry.get_by_role("button", name="Acknowledge").click()
    expect(entry).to_contain_text("Acknowledged")
    expect(entry.get_by_role("button", name="Acknowledge")).to_have_count(0)
    assert [json.loads(a) for a in acks] == [{"type": "ack", "id": sent.id}]

    # Server side: the recipient's in-app delivery is now `delivered`.
    deadline = time.monotonic() + 10
    while (state := delivery_state(sdk, sent.id, recipient)) != "delivered":
        assert time.monotonic() < deadline, f"delivery still {state}"
        time.sleep(0.1)


def test_newest_first_and_not_for_other_recipients(tab: Tab, sdk: Sdk) -> None:
    p = prefix()
    open_inbox(tab, sdk.subscriber_token("bob", [f"{p}.>"]))
    sdk.publish(f"{p}.a", title="first", recipients=["bob"])
    sdk.publish(f"{p}.a", title="for carol only", recipients=["carol"])
    sdk.publish(f"{p}.a", title="second", recipients=["bob"])
    expect(notifications(tab)).to_have_count(2)
    expect(notifications(tab).locator("h3")).to_have_text(["second", "first"])


# -- resuming ----------------------------------------------------------------------------------


def test_inbox_resumes_after_a_network_drop_without_loss_or_duplicates(tab: Tab, sdk: Sdk) -> None:
    """Playwright's offline emulation (CDP Network.emulateNetworkConditions) does not close
    an open WebSocket in this Chromium: the socket stays OPEN but no frame gets through, and
    the page gets an `offline` event. The page gives the socket up on that event and
    reconnects on `online` with a fresh ticket and since=<last id>; the message published
    while offline must come back as a replayed frame and be shown exactly once."""
    p, recipient = prefix(), "dave"
    open_inbox(tab, sdk.subscriber_token(recipient, [f"{p}.>"]))
    first = sdk.publish(f"{p}.x", title="before the drop", recipients=[recipient])
    expect(item(tab, "before the drop")).to_have_count(1)
    assert len(tab.sockets) == 1

    tab.context.set_offline(True)
    expect(tab.page.get_by_role("status")).to_have_text(STATUS_RECONNECTING)
    missed = sdk.publish(f"{p}.x", title="while offline", recipients=[recipient])
    expect(item(tab, "while offline")).to_have_count(0)

    tab.context.set_offline(False)
    expect(tab.page.get_by_role("status")).to_have_text(STATUS_CONNECTED)
    expect(tab.page.get_by_text("Resumed 1 missed")).to_be_visible()
    expect(item(tab, "while offline")).to_have_count(1)

    # The second connection: a new ticket and since=<the last message received>.
    assert len(tab.sockets) == 2
    query = [parse_qs(urlsplit(s.url).query) for s in tab.sockets]
    assert query[1]["since"] == [first.id]
    assert "since" not in query[0]
    assert query[0]["ticket"] != query[1]["ticket"]
    # The missed message came as a replay, before "ready" counted it.
    replay = tab.frames[1]
    tab.pump(lambda: any(f["type"] == "ready" for f in replay))
    kinds = [(f["type"], f.get("id"), f.get("resumed")) for f in replay if f["type"] != "heartbeat"]
    assert kinds[:2] == [("message", missed.id, None), ("ready", None, 1)]

    after = sdk.publish(f"{p}.x", title="after the drop", recipients=[recipient])
    expect(item(tab, "after the drop")).to_have_count(1)
    expect(notifications(tab).locator("h3")).to_have_text(
        ["after the drop", "while offline", "before the drop"]
    )
    assert after.id > missed.id > first.id


def test_reconnects_back_off_exponentially_with_jitter(tab: Tab, sdk: Sdk) -> None:
    """While the server answers ticket requests with 503, the page retries after 0.25-0.5 s,
    0.5-1 s, 1-2 s, … (half fixed, half random; capped at 10 s), then resumes with since=<last
    id> once tickets work again."""
    p, recipient = prefix(), "olga"
    open_inbox(tab, sdk.subscriber_token(recipient, [f"{p}.>"]))
    last = sdk.publish(f"{p}.x", title="before the outage", recipients=[recipient])
    expect(item(tab, "before the outage")).to_have_count(1)

    refused: list[float] = []

    def unavailable(route: Any) -> None:
        refused.append(time.monotonic())
        route.fulfill(
            status=503,
            content_type="application/problem+json",
            body=json.dumps(
                {
                    "type": "urn:herald:problem:unavailable",
                    "title": "Unavailable",
                    "status": 503,
                    "detail": "test outage",
                }
            ),
        )

    tab.page.route("**/v1/stream-tickets", unavailable)
    tab.context.set_offline(True)  # a drop; `online` then retries at once, into the outage
    expect(tab.page.get_by_role("status")).to_have_text(STATUS_RECONNECTING)
    tab.context.set_offline(False)
    tab.pump(lambda: len(refused) >= 4, timeout=20)
    expect(tab.page.get_by_text(re.compile(r"test outage — next attempt in \d+ s"))).to_be_visible()
    gaps = [b - a for a, b in itertools.pairwise(refused)][:3]
    for attempt, gap in enumerate(gaps):
        delay = 0.5 * 2**attempt  # BACKOFF_BASE_MS * 2^attempt, before the 10 s cap
        # Never sooner than half the delay (timers do not fire early; 0.1 s for event
        # dispatch), not much later than the whole delay (generous: busy CI machines).
        assert delay / 2 - 0.1 <= gap <= delay + 1.5, (attempt, gaps)
    assert len({round(g / (0.5 * 2**i), 2) for i, g in enumerate(gaps)}) > 1, gaps  # jitter

    tab.page.unroute("**/v1/stream-tickets")
    expect(tab.page.get_by_role("status")).to_have_text(STATUS_CONNECTED, timeout=20_000)
    assert parse_qs(urlsplit(tab.sockets[-1].url).query)["since"] == [last.id]
    assert len(tab.sockets) == 2  # no socket was opened without a ticket


def test_inbox_reconnects_when_heartbeats_stop(tab: Tab, sdk: Sdk, console_node: Node) -> None:
    """A half-open connection: the server process is frozen (SIGSTOP), so the socket stays
    open but silent: a frozen server sends no close frame and the kernel keeps the TCP
    connection up, so only the page's own watchdog can notice. The page learns the heartbeat
    interval (1 s on test servers) and gives the socket up after three silent intervals (at
    least 5 s), then reconnects with since=<last id> once the server answers again
    (SIGCONT)."""
    assert console_node.process is not None
    p, recipient = prefix(), "erin"
    open_inbox(tab, sdk.subscriber_token(recipient, [f"{p}.>"]))
    received = tab.frames[0]
    last = sdk.publish(f"{p}.x", title="last before the silence", recipients=[recipient])
    expect(item(tab, "last before the silence")).to_have_count(1)
    tab.pump(lambda: sum(f["type"] == "heartbeat" for f in received) >= 2)

    pid = console_node.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        expect(tab.page.get_by_role("status")).to_have_text(STATUS_RECONNECTING, timeout=10_000)
        assert len(tab.sockets) == 1  # the ticket request is pending: no second socket yet
    finally:
        os.kill(pid, signal.SIGCONT)
    expect(tab.page.get_by_role("status")).to_have_text(STATUS_CONNECTED)
    tab.pump(lambda: len(tab.sockets) == 2)
    assert parse_qs(urlsplit(tab.sockets[1].url).query)["since"] == [last.id]
    expect(tab.page.get_by_text("Resumed 0 missed")).to_be_visible()
    expect(item(tab, "last before the silence")).to_have_count(1)


# -- dead tokens ---------------------------------------------------------------------------------


def test_a_malformed_token_is_refused_without_retrying(tab: Tab) -> None:
    tickets: list[str] = []
    tab.page.on("request", lambda r: tickets.append(r.url) if "stream-tickets" in r.url else None)
    tab.goto("/console/inbox")
    tab.page.get_by_label("Subscriber token").fill("not-a-token")
    tab.page.get_by_role("button", name="Connect", exact=True).click()
    expect(tab.page.get_by_role("alert").filter(has_text="expired or was revoked")).to_be_visible()
    expect(tab.page.get_by_role("status")).to_have_text(STATUS_DISCONNECTED)
    expect(tab.page.get_by_label("Subscriber token")).to_be_focused()
    expect(tab.page.get_by_label("Subscriber token")).to_have_value("")
    tab.page.wait_for_timeout(1000)  # a negative check: no retry comes after the refusal
    assert len(tickets) == 1
    assert tab.page.evaluate("sessionStorage.getItem('herald-inbox-token')") is None


def test_a_revoked_token_stops_the_reconnects(tab: Tab, sdk: Sdk, console_node: Node) -> None:
    p = prefix()
    token = sdk.subscriber_token("frank", [f"{p}.>"])
    open_inbox(tab, token)
    sdk.revoke(token)
    # Revocation reaches every node within a second (credential cache): wait for it here.
    with console_node.client(sign=False) as client:
        deadline = time.monotonic() + 10
        while (
            client.post(
                "/v1/stream-tickets", headers={"Authorization": f"Bearer {token}"}
            ).status_code
            != 401
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)

    tickets: list[str] = []
    tab.page.on("request", lambda r: tickets.append(r.url) if "stream-tickets" in r.url else None)
    tab.context.set_offline(True)  # a drop, so that the page reconnects
    expect(tab.page.get_by_role("status")).to_have_text(STATUS_RECONNECTING)
    tab.context.set_offline(False)
    expect(tab.page.get_by_role("alert").filter(has_text="expired or was revoked")).to_be_visible()
    expect(tab.page.get_by_role("status")).to_have_text(STATUS_DISCONNECTED)
    tab.page.wait_for_timeout(1000)  # a negative check: no retry comes after the refusal
    assert len(tickets) == 1


# -- Web Push ------------------------------------------------------------------------------------


def test_web_push_registers_the_worker_and_reports_the_browsers_refusal(tab: Tab, sdk: Sdk) -> None:
    """Headless Chromium (and every private context, which Playwright's are) has no push
    service: the last browser step fails, and the page must say so with the browser's
    own message. Everything before it really happens."""
    open_inbox(tab, sdk.subscriber_token("gina", [f"{prefix()}.>"]))
    with tab.page.expect_response("**/v1/webpush/vapid-key") as vapid:
        tab.page.get_by_role("button", name="Enable Web Push").click()
    assert vapid.value.status == 200
    assert len(vapid.value.json()["public_key"]) == 87  # base64url of a 65-byte P-256 point

    steps = tab.page.get_by_role("list", name="Web Push steps").get_by_role("listitem")
    expect(steps).to_contain_text(
        [
            "Service worker: registered (scope /console/)",
            "VAPID key: fetched",
            "Push subscription: refused by the browser",
        ]
    )
    alert = tab.page.get_by_role("alert").filter(has_text="push service refused")
    expect(alert).to_contain_text(
        re.compile(r"refused the subscription: (AbortError|NotAllowedError|NotSupportedError): \S")
    )

    registration = tab.page.evaluate(
        """async () => {
          const r = await navigator.serviceWorker.getRegistration('/console/');
          return r && {scope: r.scope, script: r.active && r.active.scriptURL};
        }"""
    )
    assert registration == {
        "scope": tab.base_url + "/console/",
        "script": tab.base_url + "/console/inbox-sw.js",
    }
    assert [w.url for w in tab.context.service_workers] == [tab.base_url + "/console/inbox-sw.js"]


def test_web_push_set_up_completes_with_a_push_service(tab: Tab, sdk: Sdk) -> None:
    """The last step, against the real server: where the browser has a push service, the
    page hands Herald the subscription. Headless Chromium has none, so this one test
    replaces PushManager.prototype.subscribe (before the page loads) with a stand-in that
    returns what a push service would: an https endpoint and real P-256/auth keys."""
    recipient = "pia"
    device = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = device.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    subscription = {
        "endpoint": "https://push.example.com/v1/" + secrets.token_urlsafe(16),
        "expirationTime": None,
        "keys": {"p256dh": b64url(point), "auth": b64url(secrets.token_bytes(16))},
    }
    stub = """
        PushManager.prototype.subscribe = async function (options) {
          globalThis.__subscribeOptions = {
            userVisibleOnly: options.userVisibleOnly,
            keyBytes: new Uint8Array(options.applicationServerKey).length,
          };
          const json = SUBSCRIPTION;
          return {endpoint: json.endpoint, toJSON: () => json};
        };
    """
    tab.context.add_init_script(stub.replace("SUBSCRIPTION", json.dumps(subscription)))
    open_inbox(tab, sdk.subscriber_token(recipient, [f"{prefix()}.>"]))
    tab.page.get_by_role("button", name="Enable Web Push").click()
    steps = tab.page.get_by_role("list", name="Web Push steps").get_by_role("listitem")
    expect(steps).to_contain_text(
        [
            "Service worker: registered (scope /console/)",
            "VAPID key: fetched",
            "Push subscription: created by the browser",
            re.compile(r"Herald: subscription registered \(endpoint ep_\w+\)"),
        ]
    )
    expect(tab.page.locator("#push-error")).to_be_empty()
    # The page asked for user-visible pushes with the server's 65-byte P-256 key as bytes.
    assert tab.page.evaluate("globalThis.__subscribeOptions") == {
        "userVisibleOnly": True,
        "keyBytes": 65,
    }
    endpoint_id = re.search(r"ep_\w+", steps.nth(3).inner_text()).group(0)  # type: ignore[union-attr]
    endpoints = sdk.recipient(recipient)["endpoints"]
    assert [(e["id"], e["channel"]) for e in endpoints] == [(endpoint_id, "webpush")]


def test_the_service_worker_shows_a_pushed_message(tab: Tab, sdk: Sdk) -> None:
    """inbox-sw.js on a push: what Herald's Web Push channel sends (DeliveryJob.payload),
    delivered to the worker through DevTools (ServiceWorker.deliverPushMessage), becomes a
    notification titled and tagged from the payload."""
    origin = tab.base_url
    tab.context.grant_permissions(["notifications"], origin=origin)
    open_inbox(tab, sdk.subscriber_token("hal", [f"{prefix()}.>"]))
    cdp = tab.context.new_cdp_session(tab.page)
    registrations: list[dict[str, Any]] = []
    cdp.on(
        "ServiceWorker.workerRegistrationUpdated",
        lambda e: registrations.extend(e["registrations"]),
    )
    cdp.send("ServiceWorker.enable")
    tab.page.get_by_role("button", name="Enable Web Push").click()
    expect(tab.page.get_by_role("list", name="Web Push steps")).to_contain_text(
        "VAPID key: fetched"
    )

    def ours() -> list[str]:
        return [
            r["registrationId"]
            for r in registrations
            if r["scopeURL"] == origin + "/console/" and not r["isDeleted"]
        ]

    tab.pump(lambda: bool(ours()))
    registration_id = ours()[-1]

    payload = {
        "type": "message",
        "id": "0190aaaa-bbbb-7ccc-8ddd-eeeeffff0001",
        "delivery_id": "d1",
        "topic": "orders.shipped",
        "recipient": "hal",
        "title": "Pushed title",
        "body": "Pushed body",
        "data": {"order": 5},
        "priority": "normal",
        "created_at": "2026-01-01T00:00:00Z",
    }
    cdp.send(
        "ServiceWorker.deliverPushMessage",
        {"origin": origin, "registrationId": registration_id, "data": json.dumps(payload)},
    )
    shown: list[dict[str, Any]] = []

    def notifications_shown() -> bool:
        shown[:] = tab.page.evaluate(
            """async () => {
              const r = await navigator.serviceWorker.getRegistration('/console/');
              return (await r.getNotifications()).map(
                (n) => ({title: n.title, body: n.body, tag: n.tag, data: n.data}));
            }"""
        )
        return bool(shown)

    tab.pump(notifications_shown)
    assert shown == [
        {
            "title": "Pushed title",
            "body": "Pushed body",
            "tag": payload["id"],
            "data": {
                "id": payload["id"],
                "topic": "orders.shipped",
                "created_at": "2026-01-01T00:00:00Z",
                "data": {"order": 5},
            },
        }
    ]
    cdp.detach()


# -- layout ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "name"), [(1280, "inbox"), (390, "inbox-phone")])
def test_inbox_layout_and_screenshots(tab: Tab, sdk: Sdk, width: int, name: str) -> None:
    tab.page.set_viewport_size({"width": width, "height": 844 if width < 600 else 800})
    p, recipient = prefix(), "ivy"
    open_inbox(tab, sdk.subscriber_token(recipient, [f"{p}.>"]))
    sdk.publish(
        f"{p}.orders.shipped",
        title="Order 1042 shipped",
        body="Your parcel left the warehouse and arrives tomorrow between 9 and 12.",
        data={"order": 1042, "carrier": "DHL"},
        recipients=[recipient],
    )
    sdk.publish(
        f"{p}.billing",
        title="Invoice ready",
        body="March invoice: 42.00 EUR",
        recipients=[recipient],
    )
    sdk.publish(
        f"{p}.security",
        title="New sign-in",
        body="A new sign-in from Firefox on Linux.",
        recipients=[recipient],
    )
    expect(notifications(tab)).to_have_count(3)
    item(tab, "Invoice ready").get_by_role("button", name="Acknowledge").click()
    expect(item(tab, "Invoice ready")).to_contain_text("Acknowledged")

    # Usable at this width: nothing wider than the viewport, every control visible.
    assert tab.page.evaluate("document.documentElement.scrollWidth") <= width
    for control in ("Connect", "Disconnect", "Enable Web Push"):
        expect(tab.page.get_by_role("button", name=control, exact=True)).to_be_visible()
    expect(tab.page.get_by_label("Subscriber token")).to_be_visible()
    save_screenshot(tab.page, name)
