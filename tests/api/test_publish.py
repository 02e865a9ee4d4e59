"""The publish API through a real ``herald serve`` over HTTPS (docs/api.md, "Messages").

Every test works on its own topic (a random suffix) and compares only before/after counts
taken inside the test, so the tests do not depend on each other or on their order.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from herald.core.ids import default_generator

PROBLEM = "urn:herald:problem:"
HEX64 = re.compile(r"[0-9a-f]{64}")


# -- helpers ----------------------------------------------------------------------------------
def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}.{secrets.token_hex(6)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(
    response: httpx.Response, status: int, slug: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["type"].startswith(PROBLEM)
    if slug is not None:
        assert problem["type"] == PROBLEM + slug, problem
    return problem


def assert_uuid7(text: str) -> None:
    parsed = uuid.UUID(text)
    assert str(parsed) == text  # canonical, lowercase, hyphenated
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def assert_accepted(body: dict[str, Any], topic: str) -> None:
    assert set(body) == {"id", "topic", "audit"}
    assert_uuid7(body["id"])
    assert body["topic"] == topic
    assert isinstance(body["audit"]["index"], int)
    assert not isinstance(body["audit"]["index"], bool)
    assert HEX64.fullmatch(body["audit"]["leaf_hash"])


@pytest.fixture(scope="module")
def demo_token(server) -> str:
    return server.token()


@pytest.fixture(scope="module")
def narrow_token(server) -> str:
    return server.token(server.narrow)


@pytest.fixture(scope="module")
def other_token(server) -> str:
    return server.token(server.other)


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def publish(
    client: httpx.Client, token: str, message: dict[str, Any], **headers: str
) -> httpx.Response:
    return client.post("/v1/messages", json=message, headers={**bearer(token), **headers})


def publish_ok(client: httpx.Client, token: str, message: dict[str, Any]) -> dict[str, Any]:
    response = publish(client, token, message)
    assert response.status_code == 202, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json"
    body: dict[str, Any] = response.json()
    assert_accepted(body, message["topic"])
    return body


def get_message(client: httpx.Client, token: str, message_id: str) -> httpx.Response:
    return client.get(f"/v1/messages/{message_id}", headers=bearer(token))


def history(client: httpx.Client, token: str, topic: str, **params: str | int) -> httpx.Response:
    return client.get(f"/v1/topics/{topic}/messages", params=params, headers=bearer(token))


# -- publish one ------------------------------------------------------------------------------
def test_publish_answers_202_with_uuidv7_and_audit_reference(server, client, demo_token):
    topic = unique_topic("orders")
    before = server.db_count("messages")
    response = publish(client, demo_token, {"topic": topic, "title": "hello"})
    assert response.status_code == 202, response.text
    assert_accepted(response.json(), topic)
    assert "idempotent-replayed" not in response.headers
    assert server.db_count("messages") == before + 1


def test_audit_indexes_increase_across_publishes(client, demo_token):
    topic = unique_topic()
    indexes = [publish_ok(client, demo_token, {"topic": topic})["audit"]["index"] for _ in range(4)]
    assert indexes == sorted(indexes)
    assert len(set(indexes)) == len(indexes)
    hashes = [
        publish_ok(client, demo_token, {"topic": topic})["audit"]["leaf_hash"] for _ in range(3)
    ]
    assert len(set(hashes)) == 3


def test_ids_increase_across_publishes(client, demo_token):
    topic = unique_topic()
    ids = [publish_ok(client, demo_token, {"topic": topic})["id"] for _ in range(5)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5


def test_get_message_returns_content_and_pending_inapp_deliveries(client, demo_token):
    topic = unique_topic("orders")
    message = {
        "topic": topic,
        "title": "Order 123 shipped",
        "body": "Your parcel is on its way — ünïcödé ✓",
        "data": {"order": 123, "items": [1, 2, {"sku": "x"}], "gift": False, "note": None},
        "priority": "high",
        "ttl": 3600,
        "recipients": ["user-42", "user-7", "user-1000"],
    }
    accepted = publish_ok(client, demo_token, message)
    response = get_message(client, demo_token, accepted["id"])
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["id"] == accepted["id"]
    assert view["topic"] == topic
    for field in ("title", "body", "data", "priority", "ttl", "recipients"):
        assert view[field] == message[field], field
    assert view["audit"] == accepted["audit"]
    created = datetime.fromisoformat(view["created_at"])
    expires = datetime.fromisoformat(view["expires_at"])
    assert created.utcoffset() is not None
    assert (expires - created).total_seconds() == 3600

    deliveries = view["deliveries"]
    assert len(deliveries) == 3
    assert {d["endpoint"] for d in deliveries} == set(message["recipients"])
    assert len({d["id"] for d in deliveries}) == 3
    for delivery in deliveries:
        assert delivery["channel"] == "inapp"
        assert delivery["state"] == "pending"
        assert delivery["attempts"] == 0
        assert delivery["last_error"] is None
        assert delivery["created_at"]
        assert delivery["updated_at"]


def test_defaults_priority_normal_ttl_one_day(client, demo_token):
    topic = unique_topic()
    accepted = publish_ok(client, demo_token, {"topic": topic})
    view = get_message(client, demo_token, accepted["id"]).json()
    assert view["priority"] == "normal"
    assert view["ttl"] == 86400
    assert view["title"] is None
    assert view["body"] is None
    assert view["data"] is None
    assert view["recipients"] == []
    assert view["deliveries"] == []
    created = datetime.fromisoformat(view["created_at"])
    expires = datetime.fromisoformat(view["expires_at"])
    assert (expires - created).total_seconds() == 86400


@pytest.mark.parametrize("priority", ["low", "normal", "high", "urgent"])
def test_every_priority_is_accepted(client, demo_token, priority):
    accepted = publish_ok(client, demo_token, {"topic": unique_topic(), "priority": priority})
    assert get_message(client, demo_token, accepted["id"]).json()["priority"] == priority


def test_boundaries_are_accepted(server, client, demo_token):
    topic = unique_topic()
    before = server.db_count("messages")
    publish_ok(client, demo_token, {"topic": topic, "ttl": 1})
    publish_ok(client, demo_token, {"topic": topic, "ttl": 2_592_000})
    publish_ok(client, demo_token, {"topic": topic, "title": "t" * 1024})
    publish_ok(client, demo_token, {"topic": topic, "recipients": [f"r{i}" for i in range(1000)]})
    publish_ok(client, demo_token, {"topic": "a" * 255})
    publish_ok(client, demo_token, {"topic": topic, "body": "b" * (60 * 1024)})
    assert server.db_count("messages") == before + 6


def nested(levels: int, innermost: dict[str, Any]) -> dict[str, Any]:
    """``levels`` JSON objects inside each other, the innermost one being ``innermost``."""
    data = innermost
    for _ in range(levels - 1):
        data = {"n": data}
    return data


@pytest.mark.parametrize(
    "innermost", [{}, {"leaf": 1}, {"leaf": []}], ids=["empty", "scalar", "list"]
)
def test_data_nesting_of_16_objects_is_accepted(client, demo_token, innermost):
    # docs/api.md: "data a JSON object (nesting ≤ 16)". Nesting depth counts containers
    # ({"a": 1} nests 1 deep; a list inside the 16th object would be the 17th level).
    levels = 16 if innermost != {"leaf": []} else 15
    accepted = publish_ok(
        client, demo_token, {"topic": unique_topic(), "data": nested(levels, innermost)}
    )
    view = get_message(client, demo_token, accepted["id"]).json()
    assert view["data"] == nested(levels, innermost)


def test_content_is_encrypted_at_rest(server, client, demo_token):
    marker = "MARKER" + secrets.token_hex(16)
    topic = unique_topic("enc")
    accepted = publish_ok(
        client,
        demo_token,
        {
            "topic": topic,
            "title": f"title {marker}",
            "body": f"body {marker}",
            "data": {"secret": marker, marker: "key"},
        },
    )
    # The content round-trips through the API...
    view = get_message(client, demo_token, accepted["id"]).json()
    assert marker in view["title"]
    assert marker in view["body"]
    assert view["data"] == {"secret": marker, marker: "key"}
    # ...but no database file holds it in plaintext.
    files = [server.data_dir / "herald.db", server.data_dir / "herald.db-wal"]
    raw = b"".join(path.read_bytes() for path in files if path.exists())
    # Positive control: the topic is stored in the clear, so we did read the live data.
    assert topic.encode() in raw
    assert marker.encode() not in raw
    assert marker.encode("utf-16-le") not in raw


# -- history ----------------------------------------------------------------------------------
def test_history_is_oldest_first_with_since_and_limit(client, demo_token):
    topic = unique_topic("hist")
    noise = unique_topic("hist")
    ids = []
    for i in range(5):
        ids.append(publish_ok(client, demo_token, {"topic": topic, "title": f"m{i}"})["id"])
        publish_ok(client, demo_token, {"topic": noise, "title": "noise"})

    response = history(client, demo_token, topic)
    assert response.status_code == 200, response.text
    page = response.json()
    assert [m["id"] for m in page["messages"]] == ids
    assert [m["title"] for m in page["messages"]] == [f"m{i}" for i in range(5)]
    assert all(m["topic"] == topic for m in page["messages"])
    assert all("deliveries" not in m for m in page["messages"])
    assert page["next"] == ids[-1]

    seen: list[str] = []
    since: str | None = None
    for expected in (ids[0:2], ids[2:4], ids[4:5], []):
        params: dict[str, str | int] = {"limit": 2}
        if since is not None:
            params["since"] = since
        response = history(client, demo_token, topic, **params)
        assert response.status_code == 200, response.text
        page = response.json()
        got = [m["id"] for m in page["messages"]]
        assert got == expected
        assert page["next"] == (got[-1] if got else None)
        seen.extend(got)
        since = page["next"] or since
    assert seen == ids

    # Any message of the tenant is a position, even one of another topic.
    noise_ids = [m["id"] for m in history(client, demo_token, noise).json()["messages"]]
    assert len(noise_ids) == 5
    after_third = history(client, demo_token, topic, since=noise_ids[2]).json()
    assert [m["id"] for m in after_third["messages"]] == ids[3:]


def test_history_of_an_empty_topic(client, demo_token):
    page = history(client, demo_token, unique_topic("empty")).json()
    assert page == {"messages": [], "next": None}


def test_history_unknown_cursor_is_invalid_cursor(client, demo_token):
    unknown = default_generator().new_str()
    response = history(client, demo_token, unique_topic(), since=unknown)
    assert_problem(response, 400, "invalid-cursor")


def test_history_cursor_of_another_tenant_is_invalid_cursor(client, demo_token, other_token):
    topic = unique_topic("iso")
    theirs = publish_ok(client, other_token, {"topic": topic})["id"]
    response = history(client, demo_token, topic, since=theirs)
    assert_problem(response, 400, "invalid-cursor")


def test_history_malformed_cursor_is_400(client, demo_token):
    response = history(client, demo_token, unique_topic(), since="not-a-uuid")
    assert_problem(response, 400)


@pytest.mark.parametrize("limit", ["0", "1001", "abc", "-1", "1.5", "", " 5", "²", "१०"])
def test_history_limit_out_of_range_is_400(client, demo_token, limit):
    response = history(client, demo_token, unique_topic(), limit=limit)
    assert_problem(response, 400, "invalid-request")


@pytest.mark.parametrize("limit", ["1", "1000"])
def test_history_limit_bounds_are_accepted(client, demo_token, limit):
    topic = unique_topic()
    publish_ok(client, demo_token, {"topic": topic})
    response = history(client, demo_token, topic, limit=limit)
    assert response.status_code == 200, response.text
    assert len(response.json()["messages"]) == 1


# -- batch ------------------------------------------------------------------------------------
def post_batch(
    client: httpx.Client, token: str, messages: list[Any], **headers: str
) -> httpx.Response:
    return client.post(
        "/v1/messages:batch", json={"messages": messages}, headers={**bearer(token), **headers}
    )


def test_batch_mixed_items_store_only_valid_ones_in_order(server, client, demo_token):
    topic = unique_topic("batch")
    items: list[Any] = [
        {"topic": topic, "title": "first"},
        {"topic": "orders..x"},
        {"topic": topic, "title": "second", "recipients": ["u1"]},
        {"topic": topic, "ttl": "x"},
        {"topic": topic, "recipients": ["dup", "dup"]},
        "not an object",
        {"topic": topic, "title": "third"},
        {"topic": topic, "unknown": 1},
    ]
    before = server.db_count("messages")
    response = post_batch(client, demo_token, items)
    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert len(results) == len(items)
    ok = [0, 2, 6]
    for index, result in enumerate(results):
        if index in ok:
            assert_accepted(result, topic)
        else:
            assert set(result) == {"error"}, result
            problem = result["error"]
            assert problem["type"].startswith(PROBLEM)
            assert problem["status"] == 400
    assert results[1]["error"]["type"] == PROBLEM + "invalid-topic"
    assert results[3]["error"]["type"] == PROBLEM + "invalid-request"
    assert server.db_count("messages") == before + 3

    stored = history(client, demo_token, topic).json()["messages"]
    assert [m["id"] for m in stored] == [results[i]["id"] for i in ok]
    assert [m["title"] for m in stored] == ["first", "second", "third"]
    indexes = [results[i]["audit"]["index"] for i in ok]
    assert indexes == sorted(indexes)
    assert len(set(indexes)) == 3
    view = get_message(client, demo_token, results[2]["id"]).json()
    assert [d["endpoint"] for d in view["deliveries"]] == ["u1"]


def test_batch_forbidden_items_are_refused_per_item(server, client, narrow_token):
    suffix = secrets.token_hex(6)
    items = [{"topic": f"orders.{suffix}"}, {"topic": f"billing.{suffix}"}]
    before = server.db_count("messages")
    response = post_batch(client, narrow_token, items)
    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert_accepted(results[0], f"orders.{suffix}")
    assert results[1]["error"]["type"] == PROBLEM + "forbidden"
    assert results[1]["error"]["status"] == 403
    assert server.db_count("messages") == before + 1


def test_batch_of_only_invalid_items_stores_nothing(server, client, demo_token):
    before = server.db_count("messages")
    response = post_batch(client, demo_token, [{"topic": ".a"}, {"nope": 1}])
    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert [set(r) for r in results] == [{"error"}, {"error"}]
    assert server.db_count("messages") == before


def test_batch_of_1001_is_refused_and_stores_nothing(server, client, demo_token):
    topic = unique_topic("batch")
    before = server.db_count("messages")
    response = post_batch(client, demo_token, [{"topic": topic}] * 1001)
    assert_problem(response, 400, "invalid-request")
    assert server.db_count("messages") == before
    assert history(client, demo_token, topic).json()["messages"] == []


def test_batch_of_1000_is_accepted(server, client, demo_token):
    topic = unique_topic("batch")
    before = server.db_count("messages")
    response = post_batch(client, demo_token, [{"topic": topic}] * 1000)
    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert len(results) == 1000
    assert len({r["id"] for r in results}) == 1000
    assert server.db_count("messages") == before + 1000


def test_empty_batch_is_refused(server, client, demo_token):
    before = server.db_count("messages")
    assert_problem(post_batch(client, demo_token, []), 400, "invalid-request")
    assert server.db_count("messages") == before


@pytest.mark.parametrize(
    "body", [b"[]", b'{"messages": {}}', b'{"messages": [], "x": 1}', b"{}", b'{"messages":']
)
def test_batch_envelope_errors_are_400(server, client, demo_token, body):
    before = server.db_count("messages")
    response = client.post(
        "/v1/messages:batch",
        content=body,
        headers={**bearer(demo_token), "Content-Type": "application/json"},
    )
    assert_problem(response, 400)
    assert server.db_count("messages") == before


def test_batch_idempotency_replays_the_whole_answer(server, client, demo_token):
    topic = unique_topic("batch")
    key = "batch-" + secrets.token_hex(8)
    items = [{"topic": topic}, {"topic": "bad..topic"}, {"topic": topic}]
    before = server.db_count("messages")
    first = post_batch(client, demo_token, items, **{"Idempotency-Key": key})
    second = post_batch(client, demo_token, items, **{"Idempotency-Key": key})
    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert second.headers.get("idempotent-replayed") == "true"
    assert server.db_count("messages") == before + 2


# -- idempotency ------------------------------------------------------------------------------
def test_idempotent_retry_replays_the_first_answer(server, client, demo_token):
    message = {"topic": unique_topic("idem"), "title": "once"}
    key = "k-" + secrets.token_hex(8)
    before = server.db_count("messages")
    first = publish(client, demo_token, message, **{"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    second = publish(client, demo_token, message, **{"Idempotency-Key": key})
    assert second.status_code == 202, second.text
    assert second.headers.get("idempotent-replayed") == "true"
    assert second.json() == first.json()
    assert server.db_count("messages") == before + 1
    page = history(client, demo_token, message["topic"]).json()
    assert [m["id"] for m in page["messages"]] == [first.json()["id"]]


def test_idempotency_key_with_another_body_is_422(server, client, demo_token):
    topic = unique_topic("idem")
    key = "k-" + secrets.token_hex(8)
    first = publish(client, demo_token, {"topic": topic, "title": "a"}, **{"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    messages_before = server.db_count("messages")
    audit_before = server.db_count("audit_entries")
    response = publish(
        client, demo_token, {"topic": topic, "title": "b"}, **{"Idempotency-Key": key}
    )
    assert_problem(response, 422, "idempotency-key-reused")
    assert server.db_count("messages") == messages_before
    # Only the refusal itself is recorded, with its reason and no content.
    added = server.audit_actions(since=audit_before)
    assert [(action, details["reasons"]) for _, action, details in added] == [
        ("message.refused", ["idempotency-key-reused"])
    ]
    # The first answer is still what the key replays.
    again = publish(client, demo_token, {"topic": topic, "title": "a"}, **{"Idempotency-Key": key})
    assert again.status_code == 202
    assert again.json() == first.json()


async def test_concurrent_requests_with_one_key_store_one_message(server, demo_token):
    message = {"topic": unique_topic("idem"), "title": "race"}
    key = "race-" + secrets.token_hex(8)
    before = server.db_count("messages")
    headers = {**bearer(demo_token), "Idempotency-Key": key}
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
    async with server.async_client(limits=limits) as aclient:
        responses = await asyncio.gather(
            *(aclient.post("/v1/messages", json=message, headers=headers) for _ in range(20))
        )
    assert [r.status_code for r in responses] == [202] * 20, [r.text for r in responses]
    bodies = [r.json() for r in responses]
    assert all(body == bodies[0] for body in bodies)
    assert_accepted(bodies[0], message["topic"])
    replayed = [r.headers.get("idempotent-replayed") == "true" for r in responses]
    assert replayed.count(False) == 1
    assert server.db_count("messages") == before + 1


async def test_concurrent_publishes_commit_together_and_a_taken_key_fails_alone(server, demo_token):
    # Group commit: requests arriving while a commit runs share the next transaction; a
    # request whose key another request of its group takes must not fail the others.
    topic = unique_topic("group")
    key = "group-" + secrets.token_hex(8)
    before = server.db_count("messages")

    def request(n: int) -> tuple[dict[str, Any], dict[str, str]]:
        shared = n % 8 == 0
        body = {"topic": topic, "title": "shared" if shared else f"m{n}"}
        return body, {**bearer(demo_token), "Idempotency-Key": key if shared else f"{key}-{n}"}

    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with server.async_client(limits=limits) as aclient:
        requests = [request(n) for n in range(32)]
        responses = await asyncio.gather(
            *(aclient.post("/v1/messages", json=b, headers=h) for b, h in requests)
        )
        metrics = (await aclient.get("/metrics")).text
    assert [r.status_code for r in responses] == [202] * 32, [r.text for r in responses]
    shared = [r for n, r in enumerate(responses) if n % 8 == 0]
    assert all(r.json() == shared[0].json() for r in shared)
    assert [r.headers.get("idempotent-replayed") == "true" for r in shared].count(False) == 1
    indices = {r.json()["audit"]["index"] for r in responses}
    assert len(indices) == 29  # one per stored message
    assert server.db_count("messages") == before + 29
    commits = re.search(r"^herald_publish_commits_total (\S+)$", metrics, re.M)
    committed = re.search(r"^herald_publish_requests_committed_total (\S+)$", metrics, re.M)
    assert commits is not None
    assert committed is not None
    assert 0 < float(commits.group(1)) <= float(committed.group(1))


@pytest.mark.parametrize("key", ["k" * 300, "k" * 256, "", "bad\u00e9key", "tab\there"])
def test_bad_idempotency_key_is_400(server, client, demo_token, key):
    before = server.db_count("messages")
    headers: dict[str, str | bytes] = {**bearer(demo_token), "Idempotency-Key": key.encode()}
    response = client.post("/v1/messages", json={"topic": unique_topic()}, headers=headers)
    assert_problem(response, 400, "invalid-request")
    assert server.db_count("messages") == before


def test_idempotency_key_of_255_chars_is_accepted(client, demo_token):
    key = secrets.token_hex(8) + "k" * 239
    assert len(key) == 255
    message = {"topic": unique_topic()}
    first = publish(client, demo_token, message, **{"Idempotency-Key": key})
    second = publish(client, demo_token, message, **{"Idempotency-Key": key})
    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()


def test_idempotency_keys_are_per_app(server, client, demo_token, narrow_token):
    message = {"topic": unique_topic("orders"), "title": "per app"}
    key = "shared-" + secrets.token_hex(8)
    before = server.db_count("messages")
    mine = publish(client, demo_token, message, **{"Idempotency-Key": key})
    theirs = publish(client, narrow_token, message, **{"Idempotency-Key": key})
    assert mine.status_code == theirs.status_code == 202
    assert "idempotent-replayed" not in theirs.headers
    assert mine.json()["id"] != theirs.json()["id"]
    assert server.db_count("messages") == before + 2
    # Another body under the same key is fine for the other app too.
    third = publish(
        client, narrow_token, {**message, "title": "x"}, **{"Idempotency-Key": "n-" + key}
    )
    assert third.status_code == 202


# -- scopes and tenants -----------------------------------------------------------------------
def test_narrow_app_publishes_only_inside_its_scope(server, client, narrow_token):
    suffix = secrets.token_hex(6)
    before = server.db_count("messages")
    publish_ok(client, narrow_token, {"topic": f"orders.{suffix}"})
    publish_ok(client, narrow_token, {"topic": f"orders.{suffix}.deep"})
    assert server.db_count("messages") == before + 2
    for topic in (f"billing.{suffix}", "orders", f"ordersx.{suffix}"):
        response = publish(client, narrow_token, {"topic": topic})
        assert_problem(response, 403, "forbidden")
    assert server.db_count("messages") == before + 2


def test_reading_needs_a_scope_that_reaches_the_topic(client, demo_token, narrow_token):
    suffix = secrets.token_hex(6)
    billing = publish_ok(client, demo_token, {"topic": f"billing.{suffix}"})["id"]
    orders = publish_ok(client, demo_token, {"topic": f"orders.{suffix}"})["id"]
    assert get_message(client, narrow_token, orders).status_code == 200
    assert_problem(get_message(client, narrow_token, billing), 404, "not-found")


def test_other_tenant_cannot_see_the_message(client, demo_token, other_token):
    topic = unique_topic("iso")
    accepted = publish_ok(client, demo_token, {"topic": topic, "title": "demo only"})
    missing = default_generator().new_str()
    theirs = get_message(client, other_token, accepted["id"])
    nothing = get_message(client, other_token, missing)
    assert_problem(theirs, 404, "not-found")
    assert_problem(nothing, 404, "not-found")
    # Indistinguishable from a missing message, apart from the id echoed in the detail.
    assert theirs.json()["title"] == nothing.json()["title"]
    assert theirs.json()["detail"].replace(accepted["id"], "X") == nothing.json()["detail"].replace(
        missing, "X"
    )

    own = publish_ok(client, other_token, {"topic": topic, "title": "other only"})
    page = history(client, other_token, topic).json()
    assert [m["id"] for m in page["messages"]] == [own["id"]]
    page = history(client, demo_token, topic).json()
    assert [m["id"] for m in page["messages"]] == [accepted["id"]]


def test_publish_without_token_is_401(server, client):
    before = server.db_count("messages")
    response = client.post("/v1/messages", json={"topic": unique_topic()})
    assert_problem(response, 401, "invalid-token")
    response = client.post(
        "/v1/messages", json={"topic": unique_topic()}, headers=bearer("not.a.jwt")
    )
    assert_problem(response, 401, "invalid-token")
    assert server.db_count("messages") == before
