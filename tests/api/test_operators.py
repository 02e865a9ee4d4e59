"""Operators and the admin API against a real ``herald serve`` (issue 7, admin identity).

- ``herald admin create`` stores an Argon2id hash only; sign-in gives a short-lived operator
  token of its own ``typ`` and audience.
- A global operator administers every tenant; a tenant operator only its own, and another
  tenant's apps answer exactly like apps that do not exist.
- App tokens (even ``admin``) do not open the admin API, and operator tokens open no app
  route: each token works only where its audience is.
- Every admin action is an audit event naming the operator; passwords never reach the log.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from contextlib import closing
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
from tests.api.peers import assert_problem

from herald.client import AsyncAdmin, AuthenticationError, ProblemError

if TYPE_CHECKING:  # the conftest's types, for readers and type checkers only
    from tests.api.conftest import Node, NodeFactory

WAIT = 5.0  # seconds: the bound of every poll in this module


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def node(module_node_factory: NodeFactory) -> Node:
    """A node with a second tenant ("other", with an app) and a tenant operator of demo."""
    node = module_node_factory(name="operators", start=False, reuse_tokens=True)
    other = node.cli("tenant", "create", "other")["tenant"]
    node.add_app("other", "publish:>", "messages:read", tenant=other)
    node.add_app("demo-admin", "admin", "publish:>")
    node.add_operator("root")
    node.add_operator("demo-op", tenant=node.demo.tenant)
    node.start()
    return node


def call(node: Node, method: str, path: str, token: str | None, body: Any = None) -> httpx.Response:
    headers = bearer(token) if token else {}
    with node.client(sign=False) as client:
        return client.request(method, path, json=body, headers=headers)


def audit_entries(node: Node, since: int = 0) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(node.data_dir / "herald.db", timeout=10)) as conn:
        rows = conn.execute(
            "SELECT entry FROM audit_entries WHERE idx >= ? ORDER BY idx", (since,)
        ).fetchall()
    return [json.loads(entry) for (entry,) in rows]


def audit_size(node: Node) -> int:
    return node.db_count("audit_entries")


# -- sign-in ------------------------------------------------------------------------------------
def test_create_stores_only_an_argon2id_hash(node: Node) -> None:
    password = node.operators["root"]
    with closing(sqlite3.connect(node.data_dir / "herald.db")) as conn:
        (stored,) = conn.execute(
            "SELECT password_hash FROM operators WHERE name = 'root'"
        ).fetchone()
    assert stored.startswith("$argon2id$v=19$")
    assert password not in stored
    assert len(password) >= 24


def test_sign_in_gives_a_short_lived_operator_token(node: Node) -> None:
    response = node.operator_login("root")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert 0 < body["expires_in"] <= 3600
    assert body["operator"]["role"] == "global"
    header = jwt.get_unverified_header(body["access_token"])
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert header["typ"] == "herald-op+jwt"
    assert header["alg"] == "EdDSA"
    assert claims["aud"] == node.url + "/v1/admin"
    assert "tenant" not in claims  # global
    assert "scope" not in claims
    tenant_claims = jwt.decode(node.operator_token("demo-op"), options={"verify_signature": False})
    assert tenant_claims["tenant"] == node.demo.tenant


def test_wrong_password_unknown_name_and_disabled_look_the_same(node: Node) -> None:
    node.add_operator("to-disable")
    node.run("admin", "disable", "to-disable")
    attempts = {
        "wrong password": node.operator_login("root", "not the password at all"),
        "unknown name": node.operator_login("nobody-here", "not the password at all"),
        "disabled": node.operator_login("to-disable"),
    }
    bodies = {}
    for what, response in attempts.items():
        problem = assert_problem(response, 401, "invalid-credentials")
        problem.pop("instance", None)
        bodies[what] = problem
    assert len({json.dumps(b, sort_keys=True) for b in bodies.values()}) == 1, bodies


def test_malformed_sign_in_is_a_typed_400(node: Node) -> None:
    with node.client(sign=False) as client:
        for body in ({"name": "root"}, {"name": "root", "password": 5}, {"x": 1}):
            assert_problem(client.post("/v1/admin/login", json=body), 400)
        assert_problem(
            client.post(
                "/v1/admin/login", content=b"{", headers={"content-type": "application/json"}
            ),
            400,
            "malformed-json",
        )


def test_repeated_failures_lock_the_name_out(node_factory: NodeFactory) -> None:
    node = node_factory(name="op-lockout", HERALD_LOCKOUT_THRESHOLD="3", HERALD_LOCKOUT_BASE="60")
    node.add_operator("victim")
    for _ in range(3):
        assert_problem(node.operator_login("victim", "wrong password guess"), 401)
    locked = node.operator_login("victim")  # even the right password waits
    assert_problem(locked, 429, "rate-limited")
    assert int(locked.headers["retry-after"]) >= 1
    # Apps are not locked by an operator's failures (separate lockout keys).
    assert node.token_response().status_code == 200


# -- what each kind of token opens --------------------------------------------------------------
def test_app_tokens_do_not_open_the_admin_api(node: Node) -> None:
    for app in (node.demo, node.app("demo-admin")):
        token = node.token(app)
        for method, path in (
            ("GET", "/v1/admin/tenants"),
            ("POST", "/v1/admin/tenants"),
            ("GET", f"/v1/admin/tenants/{node.demo.tenant}/apps"),
            ("POST", f"/v1/admin/apps/{node.demo.client_id}:disable"),
        ):
            response = call(node, method, path, token, {"name": "x"} if method == "POST" else None)
            assert_problem(response, 401, "invalid-token")
    assert probe_app(node, node.demo) == 404  # the demo app was not disabled


def test_operator_tokens_open_no_app_route(node: Node) -> None:
    token = node.operator_token("root")
    for method, path, body in (
        ("POST", "/v1/messages", {"topic": "x", "title": "t"}),
        ("GET", "/v1/topics/x/messages", None),
        ("GET", "/v1/templates", None),
        ("POST", "/v1/subscriber-tokens", {"recipient": "u", "topics": ["x"]}),
        ("POST", "/v1/stream-tickets", None),
        ("GET", "/v1/deliveries", None),
    ):
        assert_problem(call(node, method, path, token, body), 401, "invalid-token")


def test_subscriber_tokens_do_not_open_the_admin_api(node: Node) -> None:
    with node.client() as client:
        minted = client.post(
            "/v1/subscriber-tokens",
            json={"recipient": "u-op", "topics": ["x"]},
            headers=bearer(node.token()),
        )
    assert minted.status_code == 201, minted.text
    response = call(node, "GET", "/v1/admin/tenants", minted.json()["token"])
    assert_problem(response, 401, "invalid-token")


def probe_app(node: Node, app: Any) -> int:
    """``GET /v1/messages/<unknown>`` with a fresh token of ``app``: 404 when usable."""
    response = node.token_response(app)
    if response.status_code != 200:
        return response.status_code
    with node.client() as client:
        return client.get(
            "/v1/messages/01900000-0000-7000-8000-000000000000",
            headers=bearer(response.json()["access_token"]),
        ).status_code


# -- global operator ----------------------------------------------------------------------------
def test_global_operator_manages_tenants_and_apps(node: Node) -> None:
    token = node.operator_token("root")
    start = audit_size(node)
    created = call(node, "POST", "/v1/admin/tenants", token, {"name": "made-by-root"})
    assert created.status_code == 201, created.text
    tenant = created.json()["id"]
    listed = call(node, "GET", "/v1/admin/tenants", token).json()["tenants"]
    assert {t["id"] for t in listed} >= {tenant, node.demo.tenant, node.app("other").tenant}

    app = call(
        node,
        "POST",
        f"/v1/admin/tenants/{tenant}/apps",
        token,
        {"scopes": ["publish:alerts.>"], "name": "alerts"},
    )
    assert app.status_code == 201, app.text
    assert app.headers["cache-control"] == "no-store"
    client_id, secret = app.json()["client_id"], app.json()["client_secret"]
    # The new app has no request-signing key yet, and the token endpoint wants signed
    # requests: its secret passes client authentication (then the signature is missing),
    # a wrong one does not.
    with node.client(sign=False) as client:
        form = {"grant_type": "client_credentials"}
        right = client.post("/oauth/token", data=form, auth=(client_id, secret))
        wrong = client.post("/oauth/token", data=form, auth=(client_id, secret + "x"))
    assert_problem(right, 401, "signature-missing")
    assert_problem(wrong, 401, "invalid-client")
    apps = call(node, "GET", f"/v1/admin/tenants/{tenant}/apps", token).json()["apps"]
    assert [a["client_id"] for a in apps] == [client_id]
    assert "client_secret" not in apps[0]
    assert secret not in json.dumps(apps)

    actor = "operator:" + node.operator_login("root").json()["operator"]["id"]
    entries = audit_entries(node, start)
    actions = {(e["action"], e["actor"]) for e in entries}
    assert ("tenant.created", actor) in actions
    assert ("app.created", actor) in actions
    assert secret not in json.dumps(entries)


def test_a_taken_tenant_name_is_a_conflict_and_changes_nothing(node: Node) -> None:
    # Found by API fuzzing: the duplicate name reached the database's unique index and the
    # storage error was answered 503 "database unavailable".
    token = node.operator_token("root")
    first = call(node, "POST", "/v1/admin/tenants", token, {"name": "twice"})
    assert first.status_code == 201, first.text
    start = audit_size(node)
    again = call(node, "POST", "/v1/admin/tenants", token, {"name": "twice"})
    assert_problem(again, 409, "conflict")
    listed = call(node, "GET", "/v1/admin/tenants", token).json()["tenants"]
    assert [t["id"] for t in listed if t["name"] == "twice"] == [first.json()["id"]]
    assert audit_size(node) == start


def test_disable_enable_and_rotate_an_app(node: Node) -> None:
    token = node.operator_token("root")
    victim = node.add_app("victim", "publish:>", "messages:read")
    live = node.token(victim)
    assert probe_live(node, live) == 404
    disabled = call(node, "POST", f"/v1/admin/apps/{victim.client_id}:disable", token)
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["disabled"] is True
    assert probe_live(node, live) == 401  # this node forgot its cache: at once
    assert node.token_response(victim).status_code == 401
    enabled = call(node, "POST", f"/v1/admin/apps/{victim.client_id}:enable", token)
    assert enabled.json()["disabled"] is False
    assert probe_live(node, live) == 401  # tokens from before the disable stay dead
    rotated = call(node, "POST", f"/v1/admin/apps/{victim.client_id}:rotate-secret", token)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["client_secret"]
    assert new_secret != victim.client_secret
    assert node.token_response(victim).status_code == 401  # the old secret is gone


def probe_live(node: Node, token: str) -> int:
    with node.client() as client:
        return client.get(
            "/v1/messages/01900000-0000-7000-8000-000000000000", headers=bearer(token)
        ).status_code


# -- tenant operator ----------------------------------------------------------------------------
def test_tenant_operator_sees_and_changes_only_its_tenant(node: Node) -> None:
    token = node.operator_token("demo-op")
    other = node.app("other")
    tenants = call(node, "GET", "/v1/admin/tenants", token).json()["tenants"]
    assert [t["id"] for t in tenants] == [node.demo.tenant]
    assert call(node, "GET", f"/v1/admin/tenants/{node.demo.tenant}/apps", token).status_code == 200
    refused = call(node, "POST", "/v1/admin/tenants", token, {"name": "nope"})
    assert_problem(refused, 403, "forbidden")

    def same(
        foreign: httpx.Response, missing: httpx.Response, foreign_id: str, missing_id: str
    ) -> None:
        a, b = foreign.json(), missing.json()
        assert foreign.status_code == missing.status_code == 404
        for body in (a, b):
            body.pop("instance", None)
        assert json.dumps(a).replace(foreign_id, "<id>") == json.dumps(b).replace(
            missing_id, "<id>"
        )

    absent_tenant, absent_app = "tnt_00000000000000000000", "app_00000000000000000000"
    for method in ("GET", "POST"):
        body = {"scopes": ["publish:>"]} if method == "POST" else None
        same(
            call(node, method, f"/v1/admin/tenants/{other.tenant}/apps", token, body),
            call(node, method, f"/v1/admin/tenants/{absent_tenant}/apps", token, body),
            other.tenant,
            absent_tenant,
        )
    for action in (":disable", ":enable", ":rotate-secret"):
        same(
            call(node, "POST", f"/v1/admin/apps/{other.client_id}{action}", token),
            call(node, "POST", f"/v1/admin/apps/{absent_app}{action}", token),
            other.client_id,
            absent_app,
        )
    assert probe_app(node, other) == 404  # untouched


def test_audit_visibility_follows_the_operator_role(node: Node) -> None:
    global_view = call(node, "GET", "/v1/audit/entries?from=0&to=1000", node.operator_token("root"))
    tenant_view = call(
        node, "GET", "/v1/audit/entries?from=0&to=1000", node.operator_token("demo-op")
    )
    tenants_seen = {json.loads(e["entry"])["tenant"] for e in global_view.json()["entries"]}
    assert {None, node.demo.tenant, node.app("other").tenant} <= tenants_seen
    assert {json.loads(e["entry"])["tenant"] for e in tenant_view.json()["entries"]} == {
        node.demo.tenant
    }


# -- session end --------------------------------------------------------------------------------
def test_logout_revokes_the_token(node: Node) -> None:
    token = node.operator_login("root").json()["access_token"]
    assert call(node, "GET", "/v1/admin/tenants", token).status_code == 200
    assert call(node, "POST", "/v1/admin/logout", token).status_code == 200
    assert_problem(call(node, "GET", "/v1/admin/tenants", token), 401, "invalid-token")


def test_new_password_and_disable_kill_live_tokens(node: Node) -> None:
    node.add_operator("rotating")
    token = node.operator_login("rotating").json()["access_token"]
    time.sleep(1.05)  # tokens_not_before has whole seconds: the token predates the change
    new = node.run(
        "admin", "set-password", "rotating", "--password-stdin", stdin="a new long password\n"
    )
    assert "a new long password" not in new.stdout
    assert_problem_eventually(node, token)
    fresh = node.operator_login("rotating", "a new long password")
    assert fresh.status_code == 200, fresh.text
    time.sleep(1.05)
    node.run("admin", "disable", "rotating")
    assert_problem_eventually(node, fresh.json()["access_token"])


def assert_problem_eventually(node: Node, token: str) -> None:
    """A change made by the CLI (another process) is seen within the live-check cache TTL."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        response = call(node, "GET", "/v1/admin/tenants", token)
        if response.status_code == 401:
            assert_problem(response, 401, "invalid-token")
            return
        time.sleep(0.1)
    raise AssertionError("the token was still accepted")


def test_short_passwords_are_refused_by_the_cli(node: Node) -> None:
    result = node.run("admin", "create", "shorty", "--password-stdin", check=False, stdin="short\n")
    assert result.returncode != 0
    assert "password" in result.stderr
    assert "short\n" not in result.stderr
    assert "shorty" not in node.run("admin", "list").stdout


def test_passwords_never_reach_the_server_log(node: Node) -> None:
    node.operator_login("root", "a wrong password that must not be logged")
    log = (node.data_dir / "serve.log").read_text()
    assert "a wrong password that must not be logged" not in log
    for password in node.operators.values():
        assert password not in log


# -- the SDK ------------------------------------------------------------------------------------
def test_sdk_admin_round_trip(node: Node) -> None:
    async def scenario() -> None:
        async with AsyncAdmin(node.url, "root", node.operators["root"], ca=node.ca) as admin:
            tenant = await admin.create_tenant("sdk-tenant")
            app = await admin.create_app(tenant["id"], ["publish:sdk.>"], name="sdk")
            assert app["client_secret"].startswith("hsec_")
            assert [a["client_id"] for a in await admin.apps(tenant["id"])] == [app["client_id"]]
            assert (await admin.disable_app(app["client_id"]))["disabled"] is True
            assert admin.operator["name"] == "root"
            await admin.logout()
            # The next call signs in again.
            assert tenant["id"] in {t["id"] for t in await admin.tenants()}
        async with AsyncAdmin(node.url, "root", "wrong password here", ca=node.ca) as bad:
            with pytest.raises(AuthenticationError):
                await bad.tenants()
        async with AsyncAdmin(node.url, "demo-op", node.operators["demo-op"], ca=node.ca) as op:
            with pytest.raises(ProblemError) as refused:
                await op.create_tenant("not allowed")
            assert refused.value.status == 403

    asyncio.run(scenario())
