"""The operator console end to end, in a real Chromium against a real server.

An operator made with ``herald admin create`` signs in, creates an app and gives it an
Ed25519 signing key in the console, the app publishes through the SDK, the recipient's
inbox shows the message live and acknowledges it, the operator sees the delivery turn
``delivered`` and the message's audit inclusion verified, verifies the whole audit log,
and signs out. Plus: CSRF refusals, session expiry, the CSP header, screenshots.

``HERALD_SCREENSHOT_DIR=<dir>`` (``make screenshots``) saves PNGs of every main page at
1280 px, and of the dashboard at 390 px.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.api.conftest import App, Node, NodeFactory
from tests.console.conftest import (
    TIMEOUT_MS,
    Sdk,
    Tab,
    launch,
    new_tab,
    operator_node,
    save_screenshot,
)

from herald.server.console import CONSOLE_CSP

try:
    from playwright.sync_api import expect
except ImportError:  # the `playwright` fixture skips (or fails, in CI) with the reason
    expect = None
else:
    expect.set_options(timeout=TIMEOUT_MS)

#: Checkpoints every second, so that a fresh message is soon provable.
NODE_SETTINGS = {"HERALD_AUDIT_CHECKPOINT_SECONDS": "1"}
EXPIRED_TEXT = "Your session has expired. Sign in again."
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def sign_in(tab: Tab, node: Node, name: str = "root") -> None:
    tab.goto("/console/")
    page = tab.page
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(node.operators[name])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1, name="Dashboard")).to_be_visible()


def choose_tenant(tab: Tab, tenant_id: str) -> None:
    select = tab.page.get_by_label("Tenant")
    if select.is_enabled():
        select.select_option(tenant_id)
    expect(select).to_have_value(tenant_id)


def fetch_in_page(tab: Tab, method: str, path: str, body: Any = None, csrf: bool = False) -> Any:
    """``fetch`` from the page (its cookie), with or without the session's CSRF token."""
    return tab.page.evaluate(
        """async ([method, path, body, csrf]) => {
          const headers = {'Content-Type': 'application/json'};
          if (csrf) {
            const s = await (await fetch('/console/api/session')).json();
            headers['X-CSRF-Token'] = s.csrf_token;
          }
          const r = await fetch(path, {method, headers,
            body: body === null ? undefined : JSON.stringify(body)});
          const text = await r.text();
          let json = null;
          try { json = JSON.parse(text); } catch {}
          return {status: r.status, type: r.headers.get('content-type'), json};
        }""",
        [method, path, body, csrf],
    )


# -- the whole flow ------------------------------------------------------------------------------


def test_operator_flow_end_to_end(tab: Tab, console_node: Node, tmp_path: Path) -> None:
    page = tab.page
    page.set_viewport_size(DESKTOP)
    tenant = console_node.demo.tenant

    # Sign in.
    tab.goto("/console/")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    save_screenshot(page, "login")
    sign_in(tab, console_node)
    choose_tenant(tab, tenant)
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    # Create an app: its client id and secret are shown once.
    page.get_by_role("link", name="Apps & keys").click()
    expect(page.get_by_role("heading", level=1, name="Apps & keys")).to_be_visible()
    app_name = "flow-" + secrets.token_hex(3)
    topic_root = "flow" + secrets.token_hex(3)
    create = page.locator("form").filter(has=page.get_by_role("button", name="Create app"))
    create.get_by_label("Name").fill(app_name)
    create.get_by_label("Scopes").fill(
        f"publish:{topic_root}.>\nsubscribe:{topic_root}.>\nmessages:read"
    )
    page.get_by_role("button", name="Create app").click()
    shown = page.get_by_role("region", name=f"App {app_name} created")
    expect(shown).to_be_visible()
    client_id = (
        shown.locator(".secret-row").filter(has_text="Client ID").locator("code").inner_text()
    )
    client_secret = (
        shown.locator(".secret-row").filter(has_text="Client secret").locator("code").inner_text()
    )
    assert client_id
    assert len(client_secret) >= 32
    # "Copy" puts the value on the clipboard (or selects it where the clipboard is blocked).
    tab.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=tab.base_url)
    shown.locator(".secret-row").filter(has_text="Client ID").get_by_role(
        "button", name="Copy"
    ).click()
    expect(shown).to_contain_text("Client ID copied.")
    assert page.evaluate("navigator.clipboard.readText()") == client_id

    # Its signing key: the public half is pasted into the console, the private half stays here.
    private = Ed25519PrivateKey.generate()
    key_file = tmp_path / "flow-app.pem"
    key_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    keys = page.get_by_role("region", name=f"Keys of {app_name}")
    keys.get_by_label("Ed25519 public key (PEM)").fill(public_pem)
    keys.get_by_role("button", name="Add Ed25519 key").click()
    added = keys.get_by_text(re.compile(r"^Ed25519 key \S+ added\.$"))
    expect(added).to_be_visible()
    keyid = re.fullmatch(r"Ed25519 key (\S+) added\.", added.inner_text().strip()).group(1)  # type: ignore[union-attr]
    save_screenshot(page, "apps")

    # The app publishes through the SDK; the recipient's inbox (another tab) shows it live.
    app = App(tenant, client_id, client_secret, keyid, str(key_file))
    sdk = Sdk(console_node, app)
    try:
        token = sdk.subscriber_token("ops-demo", [f"{topic_root}.>"])
        inbox = tab.context.new_page()
        inbox.goto(f"{tab.base_url}/console/inbox#token={token}")
        expect(inbox.get_by_role("status")).to_have_text("Connected")
        sent = sdk.publish(
            f"{topic_root}.orders",
            title="Flow order shipped",
            body="secret content",
            recipients=["ops-demo"],
        )
        entry = (
            inbox.get_by_role("list", name="Notifications")
            .get_by_role("listitem")
            .filter(has_text="Flow order shipped")
        )
        expect(entry).to_have_count(1)
        entry.get_by_role("button", name="Acknowledge").click()
        expect(entry).to_contain_text("Acknowledged")
        inbox.close()
    finally:
        sdk.close()

    # Messages: metadata only; the delivery turns `delivered`; inclusion verified in the page.
    page.bring_to_front()
    page.get_by_role("link", name="Messages").click()
    search = page.get_by_role("search", name="Search messages")
    search.get_by_label("Topic").fill(f"{topic_root}.orders")
    search.get_by_role("button", name="Search").click()
    row = page.get_by_role("row").filter(has_text=sent.id)
    expect(row).to_be_visible()
    save_screenshot(page, "messages")
    expect(page.get_by_text("secret content")).to_have_count(0)  # operators never see content
    row.get_by_role("link", name=sent.id).click()
    expect(page.get_by_role("heading", level=1, name="Message")).to_be_visible()
    deliveries = page.get_by_role("table", name="Deliveries")
    expect(deliveries.get_by_role("row").filter(has_text="ops-demo")).to_contain_text("delivered")
    verdict = page.get_by_text(
        re.compile(r"^(Inclusion verified|This message is not yet in a signed checkpoint)")
    )
    expect(verdict).to_be_visible()
    if "not yet" in verdict.inner_text():  # checkpoints are signed every second here
        page.get_by_role("button", name="Verify again").click()
    expect(page.get_by_text("Inclusion verified", exact=True)).to_be_visible()
    save_screenshot(page, "message")

    # Dashboard (desktop and phone width).
    page.get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", level=1, name="Dashboard")).to_be_visible()
    by_state = page.get_by_role("table", name="Deliveries by channel and state")
    expect(by_state.get_by_role("columnheader", name="delivered")).to_be_visible()
    inapp = by_state.get_by_role("row").filter(has_text="inapp")
    expect(inapp).to_be_visible()
    headers = [t.strip() for t in by_state.locator("thead th").all_inner_texts()]
    cells = [t.strip() for t in inapp.locator("th, td").all_inner_texts()]
    assert int(cells[headers.index("delivered")]) >= 1, (headers, cells)
    save_screenshot(page, "dashboard")
    page.set_viewport_size(PHONE)
    save_screenshot(page, "dashboard-phone")
    page.set_viewport_size(DESKTOP)

    # Audit: the whole log verified in the browser against the signed checkpoint.
    page.get_by_role("link", name="Audit").click()
    expect(page.get_by_role("heading", level=1, name="Audit log")).to_be_visible()
    page.get_by_role("button", name="Verify now").click()
    expect(
        page.get_by_text(re.compile(r"^Verified: \d+ entries, root matches checkpoint$"))
    ).to_be_visible()
    save_screenshot(page, "audit")

    # Sign out: back to the sign-in form; the session is gone server-side too.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert fetch_in_page(tab, "GET", "/console/api/session")["status"] == 401


# -- security properties ---------------------------------------------------------------------------


def test_state_changing_requests_without_csrf_token_are_refused(
    tab: Tab, console_node: Node
) -> None:
    sign_in(tab, console_node)
    refused = fetch_in_page(tab, "POST", "/v1/admin/tenants", {"name": "no-csrf"})
    assert refused["status"] == 403, refused
    assert refused["type"].startswith("application/problem+json")
    assert refused["json"]["type"].endswith("csrf")
    refused = fetch_in_page(tab, "DELETE", "/console/api/session")
    assert refused["status"] == 403, refused
    # Still signed in; the same requests with the token go through.
    assert fetch_in_page(tab, "GET", "/console/api/session")["status"] == 200
    accepted = fetch_in_page(tab, "POST", "/v1/admin/tenants", {"name": "with-csrf"}, csrf=True)
    assert accepted["status"] == 201, accepted
    assert fetch_in_page(tab, "DELETE", "/console/api/session", csrf=True)["status"] == 204
    assert fetch_in_page(tab, "GET", "/console/api/session")["status"] == 401


def test_session_expiry_sends_the_operator_back_to_sign_in(
    playwright: Any, console_node_factory: NodeFactory
) -> None:
    node = operator_node(console_node_factory, HERALD_OPERATOR_TOKEN_TTL="10")
    browser = launch(playwright, node)
    try:
        tab = new_tab(browser, node.url)
        sign_in(tab, node)
        expires_in = fetch_in_page(tab, "GET", "/console/api/session")["json"]["expires_in"]
        assert 0 < expires_in <= 10
        # The TTL has to pass (a deliberate wait); then any call answers 401 (the dashboard
        # may notice first, with its own refresh; the Messages page asks at once).
        tab.page.wait_for_timeout((expires_in + 1) * 1000)
        tab.page.evaluate("location.hash = '#/messages'")
        expect(tab.page.get_by_role("alert").filter(has_text=EXPIRED_TEXT)).to_be_visible()
        expect(tab.page.get_by_role("button", name="Sign in")).to_be_visible()
        assert tab.violations() == []
    finally:
        browser.close()


@pytest.mark.parametrize("path", ["/console/", "/console/inbox", "/console/console.css"])
def test_console_pages_carry_the_csp(tab: Tab, path: str) -> None:
    response = tab.goto(path)
    assert response is not None
    assert response.status == 200
    assert response.headers["content-security-policy"] == CONSOLE_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
