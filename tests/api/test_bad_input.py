"""Hostile and malformed input to the publish API (docs/api.md "Errors", DESIGN §1.6, §4).

Every refusal must be an RFC 9457 problem with the documented ``type``, and must leave
nothing behind: neither a message nor an audit entry. Tokens are fetched *before* the
counts are taken, because issuing a token appends an audit entry of its own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PROBLEM = "urn:herald:problem:"
PROBLEM_JSON = "application/problem+json"


@pytest.fixture(scope="module")
def token(server) -> str:
    return server.token()


@pytest.fixture(scope="module")
def client(server, token) -> Iterator[httpx.Client]:
    with server.client(headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def counts(server) -> tuple[int, int]:
    # A refused publish is recorded (DESIGN §6: publish refused, with its reason); nothing
    # else may change.
    return server.db_count("messages"), server.state_count()


def media_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip()


def check_problem(response: httpx.Response, status: int, slug: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert media_type(response) == PROBLEM_JSON
    problem = response.json()
    assert problem["status"] == status
    assert problem["type"].startswith(PROBLEM)
    if slug is not None:
        assert problem["type"] == PROBLEM + slug, problem
    assert isinstance(problem["title"], str)
    assert isinstance(problem["detail"], str)
    return problem


def refused(
    server,
    client: httpx.Client,
    *,
    status: int,
    slug: str | None,
    json_body: Any = None,
    content: bytes | Iterator[bytes] | None = None,
    content_type: str | None = "application/json",
    method: str = "POST",
    path: str = "/v1/messages",
) -> dict[str, Any]:
    """Send one request, check the problem, and check that nothing was stored."""
    before = counts(server)
    headers = {"Content-Type": content_type} if content_type is not None else {}
    if json_body is not None:
        content = json.dumps(json_body).encode()
    response = client.request(method, path, content=content, headers=headers)
    problem = check_problem(response, status, slug)
    assert counts(server) == before, "a refused request left something behind"
    return problem


def nested_data(levels: int) -> bytes:
    """A message whose ``data`` is ``levels`` objects deep (built as text: ``json.dumps``
    itself gives up on very deep documents)."""
    return b'{"topic": "a", "data": ' + b'{"n": ' * (levels - 1) + b'{"leaf": 1}' + b"}" * levels


# -- not JSON, not an object ------------------------------------------------------------------
@pytest.mark.parametrize(
    "body", [b'{"topic":', b"", b"{", b"nope", b'{"topic": "a",}', b"\xff\xfe", b'{"topic": "a"} x']
)
def test_malformed_json(server, client, body):
    refused(server, client, status=400, slug="malformed-json", content=body)


@pytest.mark.parametrize(
    "body",
    [[{"topic": "a"}], [], "orders.x", 5, None, True],
    ids=["array", "empty-array", "string", "number", "null", "bool"],
)
def test_json_that_is_not_an_object(server, client, body):
    content = json.dumps(body).encode()
    refused(server, client, status=400, slug="invalid-request", content=content)


@pytest.mark.parametrize(
    "message",
    [
        {"topic": 5},
        {"topic": None},
        {"topic": ["a"]},
        {"topic": "a", "ttl": "x"},
        {"topic": "a", "ttl": 1.5},
        {"topic": "a", "ttl": True},
        {"topic": "a", "data": "str"},
        {"topic": "a", "data": [1, 2]},
        {"topic": "a", "priority": "max"},
        {"topic": "a", "priority": "NORMAL"},
        {"topic": "a", "recipients": "a"},
        {"topic": "a", "recipients": [1]},
        {"topic": "a", "recipients": [""]},
        {"topic": "a", "title": 5},
        {"topic": "a", "body": {"x": 1}},
    ],
)
def test_wrong_types(server, client, message):
    refused(server, client, status=400, slug="invalid-request", json_body=message)


def test_unknown_field(server, client):
    message = {"topic": "a", "colour": "red"}
    refused(server, client, status=400, slug="invalid-request", json_body=message)


def test_missing_topic(server, client):
    refused(server, client, status=400, slug="invalid-request", json_body={"title": "x"})
    refused(server, client, status=400, slug="invalid-request", json_body={})


@pytest.mark.parametrize(
    "topic",
    ["orders..x", "orders.*", "orders.>", ".a", "a.", "a b", "a" * 300, "ü", "a/b", ".", "a\x00"],
    ids=lambda topic: repr(topic) if len(topic) < 20 else f"{len(topic)}-chars",
)
def test_topic_syntax(server, client, topic):
    refused(server, client, status=400, slug="invalid-topic", json_body={"topic": topic})


def test_too_many_recipients(server, client):
    message = {"topic": "a", "recipients": [f"user-{i}" for i in range(1001)]}
    refused(server, client, status=400, slug="too-many-recipients", json_body=message)


def test_duplicate_recipients(server, client):
    message = {"topic": "a", "recipients": ["user-1", "user-2", "user-1"]}
    refused(server, client, status=400, slug="invalid-request", json_body=message)


@pytest.mark.parametrize("levels", [17, 40, 1000, 5000])
def test_data_nested_too_deep(server, client, levels):
    # 1,000 and 5,000 levels are still far under the 64 KiB cap: refused, never a crash.
    refused(server, client, status=400, slug="invalid-request", content=nested_data(levels))


def test_nested_data_builder_is_valid_json():
    assert json.loads(nested_data(3)) == {"topic": "a", "data": {"n": {"n": {"leaf": 1}}}}


def test_deeply_nested_arrays_in_data(server, client):
    # 3,000 levels is ~6 KB, far under the body cap: it must be refused, not crash.
    content = b'{"topic": "a", "data": {"x": ' + b"[" * 3000 + b"]" * 3000 + b"}}"
    refused(server, client, status=400, slug="invalid-request", content=content)


def test_title_too_long(server, client):
    message = {"topic": "a", "title": "t" * 2000}
    refused(server, client, status=400, slug="invalid-request", json_body=message)


@pytest.mark.parametrize("ttl", [0, -1, 2_592_001, 3_000_000, 2**70])
def test_ttl_out_of_range(server, client, ttl):
    refused(
        server, client, status=400, slug="invalid-request", json_body={"topic": "a", "ttl": ttl}
    )


# -- size, media type, encoding ---------------------------------------------------------------
def test_body_over_64_kib(server, client):
    message = {"topic": "a", "body": "b" * (70 * 1024)}
    refused(server, client, status=413, slug="payload-too-large", json_body=message)


def test_chunked_body_over_64_kib_without_content_length(server, client):
    def chunks() -> Iterator[bytes]:
        yield b'{"topic": "a", "body": "'
        for _ in range(70):
            yield b"b" * 1024
        yield b'"}'

    before = counts(server)
    request = client.build_request(
        "POST", "/v1/messages", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in request.headers
    assert request.headers.get("transfer-encoding") == "chunked"
    response = client.send(request)
    check_problem(response, 413, "payload-too-large")
    assert counts(server) == before


def test_chunked_body_under_the_cap_is_accepted(server, client):
    def chunks() -> Iterator[bytes]:
        yield b'{"topic": "chunked.ok", '
        yield b'"body": "fine"}'

    before = server.db_count("messages")
    response = client.post(
        "/v1/messages", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 202, response.text
    assert server.db_count("messages") == before + 1


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", "", None],
)
def test_unsupported_media_type(server, client, content_type):
    refused(
        server, client, status=415, slug="unsupported-media-type",
        content=b'{"topic": "a"}', content_type=content_type,
    )  # fmt: skip


def test_json_with_charset_parameter_is_accepted(server, client):
    before = server.db_count("messages")
    response = client.post(
        "/v1/messages",
        content=b'{"topic": "charset.ok"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 202, response.text
    assert server.db_count("messages") == before + 1


@pytest.mark.parametrize(
    "body",
    [
        b'{"topic": "a", "title": "\xff"}',
        b'{"topic": "a", "body": "caf\xe9"}',
        b'{"topic": "a", "data": {"k\xc3": 1}}',
        b'{"topic": "a", "title": "\xed\xa0\x80"}',  # an encoded surrogate
        b'{"topic": "a", "title": "\\ud800"}',  # a lone surrogate escape
    ],
    ids=["ff", "latin1", "truncated", "cesu-surrogate", "escaped-surrogate"],
)
def test_invalid_utf8(server, client, body):
    problem = refused(server, client, status=400, slug=None, content=body)
    assert problem["type"] in {PROBLEM + "malformed-json", PROBLEM + "invalid-request"}


# -- batch items that cannot be decoded -------------------------------------------------------
@pytest.mark.parametrize(
    "item",
    [
        b'{"topic": "a", "title": "\xff"}',
        b'{"topic": "a", "data": {"x": ' + b"[" * 3000 + b"]" * 3000 + b"}}",
    ],
    ids=["invalid-utf8", "deep-nesting"],
)
def test_batch_with_an_undecodable_item_is_refused_cleanly(server, client, item):
    # Either the whole request is refused (400), or the item gets its own problem (202);
    # never a 500, and nothing stored for the item.
    body = b'{"messages": [' + item + b"]}"
    before = counts(server)
    response = client.post(
        "/v1/messages:batch", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code in {202, 400}, response.text
    if response.status_code == 400:
        check_problem(response, 400, None)
    else:
        (result,) = response.json()["results"]
        assert result["error"]["status"] == 400
        assert result["error"]["type"].startswith(PROBLEM)
    assert counts(server) == before


# -- message ids ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "message_id",
    [
        "not-a-uuid",
        # Fixed values (not uuid4()/uuid1() at collection) so that every collection of the
        # suite, e.g. one per pytest-xdist worker, sees the same test ids.
        "5d3c2b2e-8f0e-4c3b-9a7d-2f1e0d9c8b7a",  # version 4
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8",  # version 1
        "00000000-0000-0000-0000-000000000000",
        "{5d3c2b2e-8f0e-4c3b-9a7d-2f1e0d9c8b7a}",
        "0190a6e4-6b1c-7cc3-8f2a-3c4d5e6f7a8b".replace("-", ""),
        "0190a6e4-6b1c-7cc3-cf2a-3c4d5e6f7a8b",  # version 7 but not the RFC variant
    ],
)
def test_get_with_an_invalid_id(server, client, message_id):
    refused(
        server, client, status=400, slug="invalid-id",
        method="GET", path=f"/v1/messages/{message_id}", content_type=None,
    )  # fmt: skip


# -- fuzzing ----------------------------------------------------------------------------------
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
TOPICS = st.from_regex(r"\A[a-z0-9_-]{1,8}(\.[a-z0-9_-]{1,8}){0,3}\Z") | st.text(max_size=12)
MESSAGE_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "topic": TOPICS | JSON_VALUES,
        "title": st.text(max_size=40) | JSON_VALUES,
        "body": st.text(max_size=40) | JSON_VALUES,
        "data": st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4) | JSON_VALUES,
        "priority": st.sampled_from(["low", "normal", "high", "urgent", "max"]) | JSON_VALUES,
        "ttl": st.integers(min_value=-5, max_value=3_000_000) | JSON_VALUES,
        "recipients": st.lists(st.text(max_size=10), max_size=5) | JSON_VALUES,
        "extra": JSON_VALUES,
    },
)


def _encode(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")


def _spliced(value: Any, junk: bytes, at: int) -> bytes:
    """Valid JSON with random bytes inserted somewhere."""
    raw = _encode(value, ascii_only=False)
    at %= len(raw) + 1
    return raw[:at] + junk + raw[at:]


BODIES = (
    st.builds(_encode, MESSAGE_LIKE, st.booleans())
    | st.builds(_encode, JSON_VALUES, st.booleans())
    | st.binary(max_size=256)
    | st.builds(
        _spliced,
        MESSAGE_LIKE,
        st.binary(min_size=1, max_size=8),
        st.integers(min_value=0, max_value=10_000),
    )
)
CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/plain"]
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=BODIES, content_type=CONTENT_TYPES)
def test_fuzzed_bodies_never_cause_a_server_error(server, client, body, content_type):
    before = counts(server)
    response = client.post("/v1/messages", content=body, headers={"Content-Type": content_type})
    assert response.status_code in {202, 400, 413, 415}, (body, response.text)
    if response.status_code == 202:
        assert media_type(response) == "application/json"
        assert uuid.UUID(response.json()["id"]).version == 7
    else:
        check_problem(response, response.status_code, None)
        assert counts(server) == before
