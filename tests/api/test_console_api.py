"""The web console's server side over real HTTPS (issue 11): the static files and their CSP,
the cookie session and its CSRF protection, and the operator API the pages use — message
metadata without content, dead-letter retries, app keys and scopes, data-key rotation — each
change an audit event naming the operator. Browser tests of the pages are in tests/console.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tests.api.conftest import Node, NodeFactory
from tests.api.peers import Pki, Receiver, assert_problem, new_secret, wait_until, webhook

from herald.client import AsyncAdmin, ProblemError
from herald.server.console import CONSOLE_CSP
from herald.server.session import COOKIE

WAIT = 30.0


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Console:
    """A signed-in console session: an HTTPS client holding the cookie, and its CSRF token."""

    client: httpx.Client
    csrf: str
    body: dict[str, Any]
    set_cookie: str

    def send(self, method: str, path: str, *, csrf: bool = True, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if csrf:
            headers.setdefault("X-CSRF-Token", self.csrf)
        return self.client.request(method, path, headers=headers, **kwargs)


@pytest.fixture(scope="module")
def node(pki: Pki, module_node_factory: NodeFactory) -> Iterator[Node]:
    made = module_node_factory(
        name="console",
        HERALD_EGRESS_CA_FILE=str(pki.ca_file),  # webhooks and push to loopback receivers
        HERALD_EGRESS_ALLOW="127.0.0.0/8",
        HERALD_DELIVERY_MAX_ATTEMPTS="1",
    )
    made.add_operator("root")
    made.add_app("admin", "admin", "publish:>", "subscribe:>", "messages:read")
    return made


def sign_in(node: Node, name: str = "root") -> Console:
    client = node.client(sign=False)
    response = client.post(
        "/console/api/session", json={"name": name, "password": node.operators[name]}
    )
    assert response.status_code == 200, response.text
    return Console(
        client, response.json()["csrf_token"], response.json(), response.headers["set-cookie"]
    )


@pytest.fixture
def console(node: Node) -> Iterator[Console]:
    session = sign_in(node)
    yield session
    session.client.close()


def audited(node: Node, action: str, since: int) -> list[dict[str, object]]:
    return [details for _, name, details in node.audit_actions(since) if name == action]


def entry_actor(node: Node, index: int) -> str:
    with node.db() as conn:
        (entry,) = conn.execute(
            "SELECT entry FROM audit_entries WHERE idx = ?", (index,)
        ).fetchone()
    return str(json.loads(entry)["actor"])


def audit_size(node: Node) -> int:
    entries = node.audit_actions()
    return entries[-1][0] + 1 if entries else 0


# -- static files -----------------------------------------------------------------------------
def test_pages_carry_one_strict_csp_and_hardening_headers(node: Node) -> None:
    with node.client(sign=False) as client:
        for path, media in [
            ("/console/", "text/html"),
            ("/console/inbox", "text/html"),
            ("/console/js/app.js", "text/javascript"),
            ("/console/console.css", "text/css"),
            ("/console/inbox-sw.js", "text/javascript"),
        ]:
            response = client.get(path)
            assert response.status_code == 200, (path, response.text)
            assert response.headers["content-type"].startswith(media)
            # One CSP only: a second header (the API's default-src 'none') would be enforced
            # too and break the page.
            assert response.headers.get_list("content-security-policy") == [CONSOLE_CSP]
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert "strict-transport-security" in response.headers
    for directive in ("script-src 'self'", "require-trusted-types-for 'script'"):
        assert directive in CONSOLE_CSP
    assert "unsafe-inline" not in CONSOLE_CSP
    assert "unsafe-eval" not in CONSOLE_CSP


def test_only_shipped_files_are_served(node: Node) -> None:
    with node.client(sign=False) as client:
        for path in [
            "/console/nope.js",
            "/console/../pyproject.toml",
            "/console/%2e%2e/%2e%2e/config.py",
            "/console/js/../../__init__.py",
            "/console/__init__.py",
        ]:
            response = client.get(path)
            assert response.status_code == 404, path
        bare = client.get("/console", follow_redirects=False)
        assert bare.status_code == 308
        assert bare.headers["location"] == "/console/"


def test_unchanged_files_revalidate_with_their_etag(node: Node) -> None:
    with node.client(sign=False) as client:
        first = client.get("/console/js/app.js")
        again = client.get("/console/js/app.js", headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["content-security-policy"] == CONSOLE_CSP


# -- the session ------------------------------------------------------------------------------
def test_sign_in_sets_a_host_only_httponly_strict_cookie(node: Node, console: Console) -> None:
    cookie = console.set_cookie
    assert cookie.startswith(f"{COOKIE}=")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite", "path", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "path=/" in cookie.lower()
    assert "domain" not in attributes
    body = console.body
    assert f"max-age={body['expires_in']}" in cookie.lower()
    # The token is in the cookie only: a script reading the answer cannot take it.
    assert "access_token" not in body
    assert body["operator"]["name"] == "root"
    assert len(body["csrf_token"]) >= 32
    current = console.client.get("/console/api/session")
    assert current.status_code == 200
    assert current.json()["csrf_token"] == console.csrf
    assert current.headers["cache-control"] == "no-store"


def test_a_wrong_password_sets_no_cookie(node: Node) -> None:
    with node.client(sign=False) as client:
        response = client.post(
            "/console/api/session", json={"name": "root", "password": "not the password at all"}
        )
        assert_problem(response, 401)
        assert "set-cookie" not in response.headers
        assert client.get("/console/api/session").status_code == 401


def test_a_sign_in_from_another_site_is_refused(node: Node) -> None:
    before = audit_size(node)
    with node.client(sign=False) as client:
        for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
            response = client.post(
                "/console/api/session",
                json={"name": "root", "password": node.operators["root"]},
                headers=headers,
            )
            assert_problem(response, 403, "csrf")
            assert "set-cookie" not in response.headers
    assert audited(node, "operator.login", before) == []


def test_state_changes_need_the_csrf_token(node: Node, console: Console) -> None:
    name = "csrf-" + secrets.token_hex(4)
    assert console.send("GET", "/v1/admin/tenants", csrf=False).status_code == 200
    refused = [
        console.send("POST", "/v1/admin/tenants", csrf=False, json={"name": name}),
        console.send(
            "POST", "/v1/admin/tenants", json={"name": name}, headers={"X-CSRF-Token": "x" * 32}
        ),
        console.send(
            "POST",
            "/v1/admin/tenants",
            json={"name": name},
            headers={"Sec-Fetch-Site": "same-site"},
        ),
        console.send(
            "POST", "/v1/admin/tenants", json={"name": name}, headers={"Origin": node.url + ".evil"}
        ),
    ]
    for response in refused:
        assert_problem(response, 403, "csrf")
    tenants = console.send("GET", "/v1/admin/tenants").json()["tenants"]
    assert name not in {t["name"] for t in tenants}
    created = console.send(
        "POST", "/v1/admin/tenants", json={"name": name}, headers={"Origin": node.url}
    )
    assert created.status_code == 201, created.text


def test_a_bearer_operator_token_needs_no_csrf_but_is_no_session(node: Node) -> None:
    token = node.operator_token("root")
    with node.client(sign=False, headers={"Authorization": f"Bearer {token}"}) as client:
        created = client.post("/v1/admin/tenants", json={"name": "bearer-" + secrets.token_hex(4)})
        assert created.status_code == 201, created.text
        assert_problem(client.get("/console/api/session"), 401)


def test_sign_out_revokes_the_session_and_clears_the_cookie(node: Node) -> None:
    session = sign_in(node)
    other = sign_in(node)
    cookie = session.client.cookies.get(COOKIE)
    assert cookie
    before = audit_size(node)
    assert_problem(session.send("DELETE", "/console/api/session", csrf=False), 403, "csrf")
    out = session.send("DELETE", "/console/api/session")
    assert out.status_code == 204
    assert "max-age=0" in out.headers["set-cookie"].lower()
    assert audited(node, "operator.logout", before)
    # The old cookie replayed by hand is dead, everywhere; the other session lives on.
    with node.client(sign=False) as client:
        replay = client.get("/v1/admin/tenants", headers={"Cookie": f"{COOKIE}={cookie}"})
        assert_problem(replay, 401)
    assert other.send("GET", "/v1/admin/tenants").status_code == 200
    session.client.close()
    other.client.close()


# -- monitoring: metadata, deliveries, retries -----------------------------------------------
def test_operators_see_metadata_and_deliveries_never_content(
    node: Node, console: Console, receiver: Receiver
) -> None:
    tenant = node.demo.tenant
    recipient = "console-" + secrets.token_hex(4)
    secret = new_secret()
    # A 500 with one attempt allowed: dead at once, its endpoint still enabled (retryable).
    gone = receiver.add(secret, 500)
    with node.client() as app:
        headers = {"Authorization": f"Bearer {node.token(node.app('admin'))}"}
        put = app.put(
            f"/v1/recipients/{recipient}",
            json={"endpoints": [webhook(receiver.url(gone), secret)]},
            headers=headers,
        )
        assert put.status_code == 200, put.text
        title = "secret-title-" + secrets.token_hex(4)
        published = app.post(
            "/v1/messages",
            json={"topic": "console.watch", "title": title, "recipients": [recipient]},
            headers=headers,
        )
        assert published.status_code == 202, published.text
    message_id = published.json()["id"]

    def dead() -> dict[str, Any] | None:
        page = console.send("GET", f"/v1/admin/tenants/{tenant}/deliveries?state=dead").json()
        found = [d for d in page["deliveries"] if d["message_id"] == message_id]
        return found[0] if found else None

    delivery = wait_until(dead, lambda: "the dead webhook delivery", WAIT)
    assert delivery["attempts"] == 1
    assert "500" in delivery["last_error"]

    search = console.send(
        "GET", f"/v1/admin/tenants/{tenant}/messages", params={"recipient": recipient}
    )
    assert search.status_code == 200, search.text
    [found] = search.json()["messages"]
    assert found["id"] == message_id
    assert found["deliveries"]["dead"] == 1
    detail = console.send("GET", f"/v1/admin/tenants/{tenant}/messages/{message_id}").json()
    assert detail["audit"] == published.json()["audit"]
    assert {d["channel"] for d in detail["deliveries"]} == {"webhook", "inapp"}
    for body in (search.text, str(detail)):
        assert title not in body
    assert "title" not in detail
    assert "body" not in detail

    overview = console.send("GET", f"/v1/admin/tenants/{tenant}/overview?window=600&bucket=60")
    assert overview.status_code == 200, overview.text
    numbers = overview.json()
    assert len(numbers["series"]["published"]) == 10
    assert sum(numbers["series"]["published"]) >= 1
    assert sum(numbers["series"]["failed"]) >= 1
    assert numbers["dead_letters"] >= 1
    assert {"channel": "webhook", "state": "dead", "count": numbers["dead_letters"]} in numbers[
        "deliveries"
    ]

    # The retry is audited under the operator's name and the delivery is due again.
    before = audit_size(node)
    retried = console.send("POST", f"/v1/admin/tenants/{tenant}/deliveries/{delivery['id']}:retry")
    assert retried.status_code == 202, retried.text
    assert retried.json()["state"] in {"retrying", "sending", "dead"}
    [(index, event)] = [
        (i, details)
        for i, name, details in node.audit_actions(before)
        if name == "delivery.retried"
    ]
    assert event["message"] == message_id
    assert entry_actor(node, index) == f"operator:{console.body['operator']['id']}"
    assert_problem(
        console.send("POST", f"/v1/admin/tenants/{tenant}/deliveries/{secrets.token_hex(8)}:retry"),
        404,
    )


def test_bad_search_parameters_are_refused(node: Node, console: Console) -> None:
    base = f"/v1/admin/tenants/{node.demo.tenant}"
    for query in [
        {"since": "yesterday"},
        {"since": "2026-01-01T00:00:00"},  # no offset: ambiguous
        {"since": "0001-01-01T00:00:00+01:00"},  # UTC would be before year 1 (was a 500)
        {"until": "9999-12-31T23:59:59-01:00"},
        {"state": "lost"},
        {"topic": "no spaces allowed"},
        {"limit": "0"},
        {"before": "abc"},
    ]:
        assert_problem(console.send("GET", f"{base}/messages", params=query), 400)
    for query in [{"bucket": "1"}, {"window": "999999999"}]:
        assert_problem(console.send("GET", f"{base}/overview", params=query), 400)
    assert_problem(console.send("GET", f"{base}/messages/not-an-id"), 404)
    assert_problem(console.send("GET", "/v1/admin/tenants/tnt_nobody/overview"), 404)


# -- apps, keys, scopes, data keys ------------------------------------------------------------
def test_keys_and_scopes_of_an_app_are_managed_and_audited(node: Node, console: Console) -> None:
    app = node.add_app("console-app", "publish:console.>")
    base = f"/v1/admin/apps/{app.client_id}"
    before = audit_size(node)
    pem = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    added = console.send("POST", f"{base}/keys", json={"algorithm": "ed25519", "public_key": pem})
    assert added.status_code == 201, added.text
    assert "secret" not in added.json()
    hmac = console.send("POST", f"{base}/keys", json={"algorithm": "hmac-sha256"})
    assert hmac.status_code == 201, hmac.text
    assert len(base64.b64decode(hmac.json()["secret"])) == 32
    assert hmac.headers["cache-control"] == "no-store"
    listed = console.send("GET", f"{base}/keys").json()["keys"]
    assert {added.json()["keyid"], hmac.json()["keyid"]} <= {k["keyid"] for k in listed}
    assert all("secret" not in k for k in listed)
    revoked = console.send("POST", f"{base}/keys/{added.json()['keyid']}:revoke")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    for bad in [
        {"algorithm": "ed25519"},
        {"algorithm": "ed25519", "public_key": "not a pem"},
        {"algorithm": "hmac-sha256", "public_key": pem},
        {"algorithm": "rsa"},
    ]:
        assert_problem(console.send("POST", f"{base}/keys", json=bad), 400)
    assert_problem(console.send("POST", f"{base}/keys/hk_nope:revoke"), 404)

    # Scopes: the old token dies (it carries the old reach), a new one has the new scopes.
    old = node.token(app)
    changed = console.send("PUT", f"{base}/scopes", json={"scopes": ["publish:console.x"]})
    assert changed.status_code == 200, changed.text
    assert changed.json()["scopes"] == "publish:console.x"
    with node.client(sign=False) as client:
        stale = client.get("/v1/templates", headers={"Authorization": f"Bearer {old}"})
        assert_problem(stale, 401)
    assert node.token_response(app).json()["scope"] == "publish:console.x"
    assert_problem(console.send("PUT", f"{base}/scopes", json={"scopes": ["fly:away"]}), 400)
    assert node.token_response(app).json()["scope"] == "publish:console.x"

    actions = [name for _, name, _ in node.audit_actions(before)]
    for action in ("app-key.created", "app-key.revoked", "app.scopes_changed"):
        assert action in actions
    operator = console.body["operator"]["id"]
    for index, name, _ in node.audit_actions(before):
        if name in {"app-key.created", "app-key.revoked", "app.scopes_changed"}:
            assert entry_actor(node, index) == f"operator:{operator}"


def test_a_data_key_rotation_reencrypts_behind_and_reports_progress(
    node: Node, console: Console
) -> None:
    tenant = node.demo.tenant
    with node.client() as app:
        headers = {"Authorization": f"Bearer {node.token(node.app('admin'))}"}
        ids = [
            app.post(
                "/v1/messages", json={"topic": "console.keys", "title": f"t{k}"}, headers=headers
            ).json()["id"]
            for k in range(3)
        ]
    status = console.send("GET", f"/v1/admin/tenants/{tenant}/data-key").json()
    version = status["version"]
    started = console.send("POST", f"/v1/admin/tenants/{tenant}/data-key:rotate")
    assert started.status_code == 202, started.text
    assert started.json()["version"] == version + 1

    def finished() -> dict[str, Any] | None:
        now = console.send("GET", f"/v1/admin/tenants/{tenant}/data-key").json()
        job = now["reencryption"]
        ok = job and job["target"] == version + 1 and job["finished_at"]
        return now if ok else None

    done = wait_until(finished, lambda: "the re-encryption to finish", WAIT)
    job = done["reencryption"]
    assert job["done"] == job["total"] >= 3
    assert [v["version"] for v in done["versions"]][:2] == [version + 1, version]
    with node.client() as app:
        for message_id in ids:
            got = app.get(f"/v1/messages/{message_id}", headers=headers)
            assert got.status_code == 200
            assert got.json()["title"].startswith("t")


# -- Web Push subscriptions of a subscriber -------------------------------------------------
def browser_subscription(host: str) -> dict[str, Any]:
    key = generate_private_key(SECP256R1()).public_key()
    point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return {
        "endpoint": f"https://{host}/push/{secrets.token_hex(8)}",
        "expirationTime": None,
        "keys": {"p256dh": b64u(point), "auth": b64u(secrets.token_bytes(16))},
    }


def test_a_subscriber_registers_web_push_for_itself(node: Node) -> None:
    recipient = "pusher-" + secrets.token_hex(4)
    with node.client() as app:
        headers = {"Authorization": f"Bearer {node.token(node.app('admin'))}"}
        minted = app.post(
            "/v1/subscriber-tokens",
            json={"recipient": recipient, "topics": ["console.>"]},
            headers=headers,
        )
        assert minted.status_code == 201, minted.text
        subscriber = {"Authorization": f"Bearer {minted.json()['token']}"}
        subscription = browser_subscription("127.0.0.1:9")
        first = app.post(
            "/v1/webpush/subscriptions", json={"subscription": subscription}, headers=subscriber
        )
        assert first.status_code == 201, first.text
        again = app.post(
            "/v1/webpush/subscriptions", json={"subscription": subscription}, headers=subscriber
        )
        assert again.status_code == 200
        assert again.json() == first.json()
        stored = app.get(f"/v1/recipients/{recipient}", headers=headers).json()
        assert [e["channel"] for e in stored["endpoints"]] == ["webpush"]
        assert stored["endpoints"][0]["id"] == first.json()["endpoint_id"]

        refused = [
            app.post(
                "/v1/webpush/subscriptions", json={"subscription": subscription}, headers=headers
            ),
            app.post("/v1/webpush/subscriptions", json={"subscription": subscription}),
        ]
        for response in refused:
            assert_problem(response, 401)
        bad = {**subscription, "endpoint": "http://127.0.0.1:9/push"}
        assert_problem(
            app.post("/v1/webpush/subscriptions", json={"subscription": bad}, headers=subscriber),
            400,
        )
        unknown = {"subscription": subscription, "recipient": "someone-else"}
        assert_problem(app.post("/v1/webpush/subscriptions", json=unknown, headers=subscriber), 400)
        stored = app.get(f"/v1/recipients/{recipient}", headers=headers).json()
        assert len(stored["endpoints"]) == 1


# -- the SDK ------------------------------------------------------------------------------
async def test_the_sdk_covers_the_operator_routes_of_the_console(node: Node) -> None:
    tenant = node.demo.tenant
    app = node.add_app("sdk-app", "publish:sdk.>")
    with node.client() as client:
        headers = {"Authorization": f"Bearer {node.token(app)}"}
        sent = client.post("/v1/messages", json={"topic": "sdk.one", "title": "x"}, headers=headers)
        assert sent.status_code == 202, sent.text
    async with AsyncAdmin(node.url, "root", node.operators["root"], ca=node.ca) as admin:
        found = await admin.search_messages(
            tenant, topic="sdk.>", since=datetime(2020, 1, 1, tzinfo=UTC)
        )
        assert [m["id"] for m in found["messages"]] == [sent.json()["id"]]
        one = await admin.message(tenant, sent.json()["id"])
        assert one["topic"] == "sdk.one"
        assert "title" not in one
        overview = await admin.overview(tenant, window=600, bucket=60)
        assert sum(overview["series"]["published"]) >= 1
        assert isinstance((await admin.deliveries(tenant, state="dead"))["deliveries"], list)
        hmac = await admin.add_hmac_key(app.client_id)
        assert hmac["secret"]
        assert (await admin.revoke_key(app.client_id, hmac["keyid"]))["revoked_at"]
        keys = await admin.app_keys(app.client_id)
        assert hmac["keyid"] in {k["keyid"] for k in keys}
        changed = await admin.set_scopes(app.client_id, ["publish:sdk.>", "messages:read"])
        assert changed["scopes"] == "publish:sdk.> messages:read"
        assert (await admin.data_key(tenant))["version"] >= 1
        with pytest.raises(ProblemError) as refused:
            await admin.retry_delivery(tenant, "no-such-delivery")
        assert refused.value.status == 404
