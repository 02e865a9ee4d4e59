"""The ``herald`` command line against a real server: client commands, their errors, serve.

Client commands run as ``python -m herald.cli …`` subprocesses with the session server's
environment, whose ``HERALD_DATA_DIR`` holds the ``cli.json`` profile that ``herald init``
wrote (URL, demo credentials, CA). Errors must be one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from herald.core.ids import parse_message_id
from herald.core.topics import validate_topic
from herald.crypto.tls import create_dev_ca
from herald.errors import BadRequest

HERALD = [sys.executable, "-m", "herald.cli"]


def _api_conftest() -> ModuleType:
    """tests/api/conftest.py (its helpers are plain functions, not fixtures)."""
    path = Path(__file__).with_name("conftest.py")
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) and Path(module.__file__).resolve() == path.resolve():
            return module
    spec = importlib.util.spec_from_file_location("herald_api_conftest", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_helpers = _api_conftest()
run_cli = _helpers.run_cli
start_server = _helpers.start_server
stop_server = _helpers.stop_server
base_env = _helpers.base_env
free_port = _helpers.free_port


def new_prefix() -> str:
    return "t" + uuid.uuid4().hex


def herald(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``herald ARGS`` (never raises on a non-zero exit)."""
    return run_cli(env, *args, check=False)  # type: ignore[no-any-return]


def publish(env: dict[str, str], topic: str, *args: str) -> dict[str, Any]:
    result = herald(env, "publish", topic, *args, "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Non-zero exit, nothing on stdout, one line on stderr containing every needle."""
    assert result.returncode != 0, result.stdout
    assert result.stdout == ""
    text = result.stderr.strip()
    assert "Traceback" not in text, text
    assert len(text.splitlines()) == 1, text
    for needle in needles:
        assert needle in text, text
    return text


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def stream_count(server: Any) -> int:
    """Live stream sessions on the server (``/readyz`` needs no credentials)."""
    response = httpx.get(server.url + "/readyz", verify=server.ssl_context(), timeout=5.0)
    return int(response.json()["streams"])


def wait_for_new_stream(server: Any, before: int, process: subprocess.Popen[str]) -> None:
    """Wait (bounded) until the server holds more streams than ``before``."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return  # exited early: the caller's communicate() shows why
        if stream_count(server) > before:
            return
        time.sleep(0.05)


@pytest.fixture
def subscriber(server: Any) -> Iterator[list[subprocess.Popen[str]]]:
    """Started ``herald subscribe`` processes; any still running at the end is killed."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


def start_subscribe(
    server: Any, processes: list[subprocess.Popen[str]], *args: str
) -> subprocess.Popen[str]:
    before = stream_count(server)
    process = subprocess.Popen(
        [*HERALD, "subscribe", *args],
        env=server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    processes.append(process)
    wait_for_new_stream(server, before, process)
    return process


def narrow_app(server: Any) -> list[str]:
    """Flags that make the CLI act as the ``narrow`` app (credentials and signing key)."""
    app = server.narrow
    return [
        "--client-id",
        app.client_id,
        "--client-secret",
        app.client_secret,
        "--signing-keyid",
        app.signing_keyid,
        "--signing-key-file",
        app.signing_key_file,
    ]


# -- publish / subscribe / token ------------------------------------------------------------


def test_publish_prints_json_with_id(server: Any) -> None:
    result = herald(server.env, "publish", "orders.cli", "--title", "T", "--body", "B", "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    receipt = json.loads(lines[0])
    assert parse_message_id(receipt["id"]) == receipt["id"]
    assert receipt["topic"] == "orders.cli"
    assert isinstance(receipt["audit"]["index"], int)
    assert len(receipt["audit"]["leaf_hash"]) == 64


def test_publish_human_output(server: Any) -> None:
    result = herald(server.env, "publish", "orders.cli", "--title", "T")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("published ")
    assert "orders.cli" in result.stdout


def test_subscribe_prints_live_messages_and_exits_after_count(
    server: Any, subscriber: list[subprocess.Popen[str]]
) -> None:
    p = new_prefix()
    process = start_subscribe(server, subscriber, "--topic", f"{p}.>", "--count", "2", "--json")
    first = publish(server.env, f"{p}.a", "--title", "one")
    second = publish(server.env, f"{p}.b.c", "--title", "two", "--body", "2")
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    frames = json_lines(stdout)
    assert [f["id"] for f in frames] == [first["id"], second["id"]]
    assert [f["topic"] for f in frames] == [f"{p}.a", f"{p}.b.c"]
    assert [f["title"] for f in frames] == ["one", "two"]
    assert frames[1]["body"] == "2"
    assert all(f["type"] == "message" for f in frames)


def test_subscribe_resumes_since_a_message(server: Any) -> None:
    p = new_prefix()
    cursor = publish(server.env, f"{p}.x", "--title", "before")
    missed = publish(
        server.env,
        f"{p}.x",
        "--title",
        "missed",
        "--body",
        "while nobody listened",
        "--data",
        '{"order": 7}',
        "--priority",
        "high",
    )
    result = subprocess.run(
        [
            *HERALD,
            "subscribe",
            "--topic",
            f"{p}.>",
            "--since",
            cursor["id"],
            "--count",
            "1",
            "--json",
        ],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    frames = json_lines(result.stdout)
    assert len(frames) == 1, result.stdout
    assert frames[0]["id"] == missed["id"]
    assert frames[0]["title"] == "missed"
    assert frames[0]["body"] == "while nobody listened"
    assert frames[0]["data"] == {"order": 7}
    assert frames[0]["priority"] == "high"
    assert frames[0]["audit"] == missed["audit"]


def test_subscribe_recipient_sees_only_its_messages(server: Any) -> None:
    p = new_prefix()
    cursor = publish(server.env, f"{p}.x")
    publish(server.env, f"{p}.x", "--title", "for bob", "--recipient", "bob")
    for_alice = publish(server.env, f"{p}.x", "--title", "for alice", "--recipient", "alice")
    result = herald(
        server.env,
        "subscribe",
        "--topic",
        f"{p}.>",
        "--since",
        cursor["id"],
        "--recipient",
        "alice",
        "--count",
        "1",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert [f["id"] for f in json_lines(result.stdout)] == [for_alice["id"]]


def test_token_prints_an_access_token(server: Any) -> None:
    result = herald(server.env, "token", "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    token = body["access_token"]
    assert isinstance(token, str)
    assert token.count(".") == 2  # a JWS in compact serialisation
    assert server.demo.client_secret not in result.stdout


def test_token_subscriber_mints_a_token_and_the_inbox_link(server: Any) -> None:
    topic = f"inbox{uuid.uuid4().hex[:8]}"
    result = herald(server.env, "token", "subscriber", "alice", "--topic", f"{topic}.>", "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["inbox_url"] == f"{server.url}/console/inbox#token={body['token']}"
    # The token works: it gets a stream ticket.
    with server.client(sign=False) as client:
        ticket = client.post(
            "/v1/stream-tickets", headers={"Authorization": f"Bearer {body['token']}"}
        )
    assert ticket.status_code == 201, ticket.text
    refused = herald(server.env, "token", "subscriber", "alice", "--topic", "bad topic!")
    assert_one_line_error(refused, "topic")


# -- errors: one line, non-zero exit ---------------------------------------------------------


def test_publish_with_untrusted_ca_says_how_to_fix_it(server: Any, tmp_path: Path) -> None:
    other_ca, _ = create_dev_ca("Some other CA", now=datetime.now(UTC))
    ca_file = tmp_path / "other-ca.pem"
    ca_file.write_bytes(other_ca)
    result = herald(server.env, "publish", "orders.cli", "--ca", str(ca_file), "--json")
    assert_one_line_error(result, "certificate not trusted", "--ca")


def test_publish_to_closed_port_says_connection_refused(server: Any) -> None:
    url = f"https://127.0.0.1:{free_port()}"
    result = herald(server.env, "publish", "orders.cli", "--url", url, "--json")
    assert_one_line_error(result, "connection refused", url)


@pytest.mark.parametrize(
    ("data", "needle"),
    [("[1]", "JSON object"), ('"text"', "JSON object"), ("{nope", "not valid JSON")],
)
def test_publish_data_must_be_a_json_object(server: Any, data: str, needle: str) -> None:
    result = herald(server.env, "publish", "orders.cli", "--data", data, "--json")
    assert_one_line_error(result, needle)


def test_publish_invalid_topic_shows_the_problem_detail(server: Any) -> None:
    with pytest.raises(BadRequest) as refused:
        validate_topic("orders..cli")
    result = herald(server.env, "publish", "orders..cli", "--json")
    assert_one_line_error(result, refused.value.detail, "invalid-topic")


def test_publish_outside_scope_is_forbidden(server: Any) -> None:
    result = herald(server.env, "publish", "billing.x", *narrow_app(server), "--json")
    assert_one_line_error(result, "forbidden")


def test_wrong_client_secret_is_refused_without_echoing_it(server: Any) -> None:
    secret = "hsec_" + uuid.uuid4().hex
    result = herald(server.env, "publish", "orders.cli", "--client-secret", secret, "--json")
    text = assert_one_line_error(result, "401")
    assert secret not in text


def test_missing_credentials_are_explained(server: Any, tmp_path: Path) -> None:
    env = base_env(tmp_path / "empty", free_port())
    result = herald(env, "publish", "orders.cli", "--url", server.url, "--ca", str(server.ca))
    assert_one_line_error(result, "no client credentials")


def test_subscribe_outside_scope_is_one_line_error(server: Any) -> None:
    result = herald(
        server.env, "subscribe", "--topic", "billing.>", *narrow_app(server), "--count", "1"
    )
    assert_one_line_error(result, "forbidden")


def test_serve_with_invalid_port_names_the_setting(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data", 1)
    env["HERALD_PORT"] = "abc"
    result = herald(env, "serve")
    assert result.returncode == 1
    assert "HERALD_PORT" in result.stderr
    assert "Traceback" not in result.stderr


# -- routing, scheduling and templates -------------------------------------------------------


@pytest.fixture(scope="module")
def admin(server: Any) -> list[str]:
    """Flags that make the CLI act as an app of the demo tenant with the ``admin`` scope."""
    app = server.add_app("cli-admin", "admin", "publish:>", "messages:read")
    return [
        "--client-id",
        app.client_id,
        "--client-secret",
        app.client_secret,
        "--signing-keyid",
        app.signing_keyid,
        "--signing-key-file",
        app.signing_key_file,
    ]


def rfc3339_in(seconds: float) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=seconds)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def get_message(server: Any, message_id: str) -> dict[str, Any]:
    """``GET /v1/messages/{id}`` as the demo app (it has ``messages:read``)."""
    with server.client() as client:
        response = client.get(
            f"/v1/messages/{message_id}", headers={"Authorization": f"Bearer {server.token()}"}
        )
    assert response.status_code == 200, response.text
    return dict(response.json())


SPEC: dict[str, Any] = {
    "default_locale": "en",
    "variants": [
        {"locale": "en", "title": "Order {{ order + 1 }} shipped", "body": "Hi {{ name }}"},
        {"locale": "zh-CN", "title": "订单 {{ order }} 已发货", "body": "{{ name }}，您好"},
    ],
}


def test_publish_with_deliver_at_is_scheduled_and_can_be_cancelled(server: Any) -> None:
    at = rfc3339_in(3600)
    topic = f"{new_prefix()}.later"
    scheduled = publish(server.env, topic, "--title", "later", "--deliver-at", at)
    assert parse_message_id(scheduled["id"]) == scheduled["id"]
    assert scheduled["topic"] == topic
    assert scheduled["scheduled"] is True
    assert datetime.fromisoformat(scheduled["deliver_at"]) == datetime.fromisoformat(at)
    assert isinstance(scheduled["audit"]["index"], int)
    assert get_message(server, scheduled["id"])["state"] == "scheduled"

    cancelled = herald(server.env, "message", "cancel", scheduled["id"], "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    view = json.loads(cancelled.stdout)
    assert (view["id"], view["state"]) == (scheduled["id"], "cancelled")
    assert get_message(server, scheduled["id"])["state"] == "cancelled"
    # Cancelling twice is a conflict, said in one line.
    again = herald(server.env, "message", "cancel", scheduled["id"])
    assert_one_line_error(again, "409", "conflict", "cancelled already")


def test_scheduled_publish_and_cancel_human_output(server: Any) -> None:
    topic = f"{new_prefix()}.later"
    result = herald(server.env, "publish", topic, "--deliver-at", rfc3339_in(600))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("scheduled "), result.stdout
    message_id = result.stdout.split()[1]
    assert parse_message_id(message_id) == message_id
    assert f"herald message cancel {message_id}" in result.stdout
    cancelled = herald(server.env, "message", "cancel", message_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith(f"cancelled {message_id} to {topic}"), cancelled.stdout


def test_cancel_of_a_published_message_is_a_conflict(server: Any) -> None:
    published = publish(server.env, f"{new_prefix()}.now", "--title", "now")
    result = herald(server.env, "message", "cancel", published["id"], "--json")
    assert_one_line_error(result, "409", "published already")


@pytest.mark.parametrize(
    ("value", "needles"),
    [
        ("2030-12-01T08:00:00", ("--deliver-at", "offset")),
        ("tomorrow", ("--deliver-at", "RFC 3339")),
        ("2030-13-01T08:00:00Z", ("--deliver-at", "not a valid date-time")),
    ],
    ids=["naive", "not-a-date", "month-13"],
)
def test_publish_refuses_a_bad_deliver_at(
    server: Any, value: str, needles: tuple[str, ...]
) -> None:
    result = herald(server.env, "publish", "orders.cli", "--deliver-at", value, "--json")
    assert_one_line_error(result, *needles)


def test_publish_too_far_ahead_is_the_servers_one_line_refusal(server: Any) -> None:
    at = rfc3339_in(31 * 86400)
    result = herald(server.env, "publish", "orders.cli", "--deliver-at", at, "--json")
    assert_one_line_error(result, "invalid-schedule", "30 days")


def test_publish_with_channel_category_and_dedup_window(server: Any) -> None:
    topic = f"{new_prefix()}.routed"
    receipt = publish(
        server.env,
        topic,
        "--title",
        "routed",
        "--recipient",
        "alice",
        "--channel",
        "inapp",
        "--category",
        "shipping",
        "--dedup-window",
        "60",
    )
    assert "scheduled" not in receipt
    message = get_message(server, receipt["id"])
    assert message["category"] == "shipping"
    unknown = herald(server.env, "publish", topic, "--channel", "carrier-pigeon", "--json")
    assert_one_line_error(unknown, "400", "carrier-pigeon")


def test_template_put_get_list(server: Any, admin: list[str], tmp_path: Path) -> None:
    name = f"{new_prefix()}-shipped"
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SPEC), encoding="utf-8")
    first = herald(server.env, "template", "put", name, str(spec_file), *admin, "--json")
    assert first.returncode == 0, first.stderr
    stored = json.loads(first.stdout)
    assert (stored["name"], stored["version"]) == (name, 1)
    # FILE "-" reads the spec from standard input; each put is a new version.
    spec_v2 = {**SPEC, "description": "second"}
    second = run_cli(
        server.env, "template", "put", name, "-", *admin, check=False, stdin=json.dumps(spec_v2)
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"stored template {name} version 2"

    old = herald(server.env, "template", "get", name, "--version", "1", "--json")
    assert old.returncode == 0, old.stderr
    old_view = json.loads(old.stdout)
    assert old_view["version"] == 1
    assert [v["title"] for v in old_view["variants"]] == [v["title"] for v in SPEC["variants"]]
    newest = herald(server.env, "template", "get", name)
    assert newest.returncode == 0, newest.stderr
    lines = newest.stdout.splitlines()
    assert lines[0].startswith(f"{name} version 2, created "), newest.stdout
    assert "  second" in lines
    assert "variant channel=* locale=zh-CN" in lines
    assert "  title: Order {{ order + 1 }} shipped" in lines

    listed = herald(server.env, "template", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = [t for t in json.loads(listed.stdout)["templates"] if t["name"] == name]
    assert entry["version"] == 2
    human = herald(server.env, "template", "list")
    assert human.returncode == 0, human.stderr
    assert f"{name}  version 2  created " in human.stdout

    missing = herald(server.env, "template", "get", name, "--version", "9")
    assert_one_line_error(missing, "404")


def test_unsafe_template_is_refused_in_one_line(
    server: Any, admin: list[str], tmp_path: Path
) -> None:
    name = f"{new_prefix()}-escape"
    spec = {
        "default_locale": "en",
        "variants": [{"locale": "en", "title": "{{ ''.__class__.__mro__ }}"}],
    }
    spec_file = tmp_path / "unsafe.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    result = herald(server.env, "template", "put", name, str(spec_file), *admin, "--json")
    assert_one_line_error(result, "422", "invalid-template", "outside the sandbox")
    # Nothing was stored.
    assert_one_line_error(herald(server.env, "template", "get", name), "404")


@pytest.mark.parametrize(
    ("content", "needle"),
    [(None, "cannot read"), ("{nope", "not valid JSON"), ("[1]", "JSON object")],
    ids=["missing-file", "not-json", "not-an-object"],
)
def test_template_put_refuses_a_bad_spec_file(
    server: Any, admin: list[str], tmp_path: Path, content: str | None, needle: str
) -> None:
    spec_file = tmp_path / "spec.json"
    if content is not None:
        spec_file.write_text(content, encoding="utf-8")
    result = herald(server.env, "template", "put", "x", str(spec_file), *admin)
    assert_one_line_error(result, needle)


def test_template_put_needs_the_admin_scope(server: Any, tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SPEC), encoding="utf-8")
    result = herald(server.env, "template", "put", f"{new_prefix()}-t", str(spec_file))
    assert_one_line_error(result, "403", "admin scope")


def test_publish_with_template_and_vars(server: Any, admin: list[str], tmp_path: Path) -> None:
    name = f"{new_prefix()}-shipped"
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SPEC), encoding="utf-8")
    put = herald(server.env, "template", "put", name, str(spec_file), *admin)
    assert put.returncode == 0, put.stderr
    topic = f"{new_prefix()}.templated"
    # "order=122" parses as JSON (a number: the template adds 1), "name=Zoë" does not (text).
    receipt = publish(
        server.env, topic, "--template", name, "--var", "order=122", "--var", "name=Zoë"
    )
    message = get_message(server, receipt["id"])
    assert (message["title"], message["body"]) == ("Order 123 shipped", "Hi Zoë")
    zh = publish(
        server.env,
        topic,
        "--template",
        name,
        "--locale",
        "zh-CN",
        "--var",
        "order=7",
        "--var",
        "name=李雷",
    )
    # Every variant is rendered at publish; the message shows the one of its locale.
    message = get_message(server, zh["id"])
    assert (message["title"], message["body"]) == ("订单 7 已发货", "李雷，您好")
    # A variable the template needs is missing: the server's 422, in one line.
    missing = herald(server.env, "publish", topic, "--template", name, "--var", "order=1")
    assert_one_line_error(missing, "422", "template-render-failed")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--var", "a=1"), "need --template"),
        (("--locale", "en"), "need --template"),
        (("--template", "t", "--var", "novalue"), "KEY=VALUE"),
        (("--template", "t", "--var", "=1"), "KEY=VALUE"),
        (("--template", "t", "--var", "a=1", "--var", "a=2"), "given twice"),
        (("--data", '{"a": NaN}'), "NaN"),
    ],
    ids=["var-alone", "locale-alone", "no-equals", "no-key", "twice", "data-nan"],
)
def test_publish_refuses_bad_template_options(
    server: Any, args: tuple[str, ...], needle: str
) -> None:
    result = herald(server.env, "publish", "orders.cli", *args, "--json")
    assert_one_line_error(result, needle)


# -- a second, plain-HTTP server -------------------------------------------------------------


@pytest.fixture(scope="module")
def second_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A second data dir, initialised by ``herald init`` (no server running on it)."""
    data_dir = tmp_path_factory.mktemp("second") / "data"
    env = base_env(data_dir, free_port())
    init = json.loads(run_cli(env, "init", "--json").stdout)
    return {"data_dir": data_dir, "env": env, "init": init}


def test_init_twice_refuses_and_changes_nothing(second_dir: dict[str, Any]) -> None:
    data_dir: Path = second_dir["data_dir"]
    before = {
        path.relative_to(data_dir): path.read_bytes()
        for path in data_dir.rglob("*")
        if path.is_file() and path.suffix not in {".db", ".db-wal", ".db-shm", ".log"}
    }
    result = herald(second_dir["env"], "init", "--json")
    assert_one_line_error(result, "already initialised")
    assert result.returncode == 1
    after = {
        path.relative_to(data_dir): path.read_bytes()
        for path in data_dir.rglob("*")
        if path.is_file() and path.suffix not in {".db", ".db-wal", ".db-shm", ".log"}
    }
    assert after == before


def test_insecure_http_is_loud(second_dir: dict[str, Any]) -> None:
    data_dir: Path = second_dir["data_dir"]
    port = free_port()
    env = base_env(data_dir, port, HERALD_INSECURE_HTTP="1")
    url = f"http://127.0.0.1:{port}"
    process = start_server(env, url, None)
    try:
        response = httpx.get(url + "/readyz", timeout=5.0)
        assert response.status_code == 200, response.text
        security = response.json()["security"]
        assert security["tls"] is False
        assert security["hsts"] is False
        assert any("TLS" in warning for warning in security["warnings"]), security
        assert "strict-transport-security" not in response.headers
    finally:
        stop_server(process)
    log_lines = (data_dir / "serve.log").read_text(encoding="utf-8").splitlines()
    warnings = []
    for line in log_lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("level") == "warning" and "tls" in json.dumps(record).lower():
            warnings.append(record)
    assert warnings, "\n".join(log_lines)
