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
from datetime import UTC, datetime
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
