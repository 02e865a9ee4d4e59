"""A real Herald server for API tests: ``herald init`` + ``herald serve`` as a subprocess,
TLS on a loopback port, talked to with real HTTP and WebSocket clients.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote_plus

import httpx
import pytest

from herald.client import RequestSigner

HERALD = [sys.executable, "-m", "herald.cli"]


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class App:
    """Credentials of one app, with its request-signing key."""

    tenant: str
    client_id: str
    client_secret: str
    signing_keyid: str = ""
    signing_key_file: str = ""

    @classmethod
    def from_cli(cls, data: dict[str, str], tenant: str | None = None) -> App:
        return cls(
            tenant or data["tenant"],
            data["client_id"],
            data["client_secret"],
            data["signing_keyid"],
            data["signing_key_file"],
        )

    @property
    def signer(self) -> RequestSigner:
        return RequestSigner.from_key_file(self.signing_keyid, self.signing_key_file)


def _client_id_of(request: httpx.Request) -> str | None:
    """The app a request speaks for: Basic credentials or the bearer token's client_id."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    try:
        if scheme.lower() == "basic":
            return unquote_plus(base64.b64decode(value).decode().partition(":")[0])
        if scheme.lower() == "bearer" and value.count(".") == 2:
            payload = value.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            return str(claims.get("client_id"))
    except ValueError:
        return None
    return None


@dataclass
class Server:
    """A running test server and what tests need to talk to it."""

    url: str
    ca: Path
    data_dir: Path
    env: dict[str, str]
    demo: App
    other: App  # an app of a second tenant
    narrow: App  # tenant "demo", scopes publish:orders.> subscribe:orders.> only
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    @property
    def apps(self) -> list[App]:
        return [self.demo, self.other, self.narrow]

    def sign(self, request: httpx.Request) -> None:
        """Sign a state-changing request with the key of the app it speaks for (if ours)."""
        if request.method in {"GET", "HEAD"} or "signature" in request.headers:
            return
        client_id = _client_id_of(request)
        for app in self.apps:
            if app.client_id == client_id:
                app.signer.sign(request)

    def client(self, *, sign: bool = True, **kwargs: object) -> httpx.Client:
        """An HTTPS client trusting the dev CA; signs like the SDK unless ``sign=False``."""
        hooks = {"request": [self.sign]} if sign else {}
        options: dict[str, object] = {"timeout": 10.0, **kwargs}
        return httpx.Client(  # type: ignore[arg-type]
            base_url=self.url, verify=self.ssl_context(), event_hooks=hooks, **options
        )

    def async_client(self, *, sign: bool = True, **kwargs: object) -> httpx.AsyncClient:
        """The async twin of :meth:`client`."""

        async def hook(request: httpx.Request) -> None:
            self.sign(request)

        hooks = {"request": [hook]} if sign else {}
        options: dict[str, object] = {"timeout": 10.0, **kwargs}
        return httpx.AsyncClient(  # type: ignore[arg-type]
            base_url=self.url, verify=self.ssl_context(), event_hooks=hooks, **options
        )

    def token(self, app: App | None = None, scope: str | None = None) -> str:
        app = app or self.demo
        data = {"grant_type": "client_credentials"}
        if scope:
            data["scope"] = scope
        with self.client() as client:
            response = client.post(
                "/oauth/token", data=data, auth=(app.client_id, app.client_secret)
            )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def audit_actions(self, since: int = 0) -> list[tuple[int, str, dict[str, object]]]:
        """``(index, action, details)`` of the audit entries from index ``since``."""
        with sqlite3.connect(self.data_dir / "herald.db") as conn:
            rows = conn.execute(
                "SELECT idx, entry FROM audit_entries WHERE idx >= ? ORDER BY idx", (since,)
            ).fetchall()
        out = []
        for idx, entry in rows:
            parsed = json.loads(entry)
            out.append((int(idx), str(parsed["action"]), dict(parsed["details"])))
        return out

    def state_count(self) -> int:
        """Audit entries other than refusals: refusals are recorded, nothing else may be."""
        return sum(1 for _, action, _ in self.audit_actions() if action != "message.refused")

    def db_count(self, table: str) -> int:
        with sqlite3.connect(self.data_dir / "herald.db") as conn:
            (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
        return int(count)


def run_cli(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``herald ARGS`` with ``env``; returns the completed process."""
    result = subprocess.run(
        [*HERALD, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"herald {' '.join(args)} failed: {result.stderr}")
    return result


def start_server(env: dict[str, str], url: str, ca: Path | None) -> subprocess.Popen[bytes]:
    """Start ``herald serve`` and wait until ``/healthz`` answers."""
    with (Path(env["HERALD_DATA_DIR"]) / "serve.log").open("ab") as log:
        process = subprocess.Popen(
            [*HERALD, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca else False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                "herald serve exited: " + (Path(env["HERALD_DATA_DIR"]) / "serve.log").read_text()
            )
        try:
            if httpx.get(url + "/healthz", verify=verify, timeout=1.0).status_code == 200:
                # Requests signed in the server's first (partial) second are refused by
                # design (its nonce store starts empty); tests start after it.
                time.sleep(1.05)
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("herald serve did not become healthy in 30 s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def base_env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    """A clean environment for a test server (no HERALD_* from the caller)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(
        HERALD_DATA_DIR=str(data_dir),
        HERALD_PORT=str(port),
        HERALD_LOG_LEVEL="info",
        HERALD_HEARTBEAT_INTERVAL="1",
        HERALD_STREAM_QUEUE_SIZE="64",
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One initialised TLS server for the API tests of this session."""
    data_dir = tmp_path_factory.mktemp("herald") / "data"
    port = free_port()
    env = base_env(data_dir, port)
    init = json.loads(run_cli(env, "init", "--json").stdout)
    demo = App.from_cli(init)
    other_tenant = json.loads(run_cli(env, "tenant", "create", "other", "--json").stdout)["tenant"]
    other = json.loads(
        run_cli(
            env,
            "app",
            "create",
            "--tenant",
            other_tenant,
            "--scope",
            "publish:>",
            "--scope",
            "subscribe:>",
            "--scope",
            "messages:read",
            "--json",
        ).stdout
    )
    narrow = json.loads(
        run_cli(
            env,
            "app",
            "create",
            "--tenant",
            demo.tenant,
            "--scope",
            "publish:orders.>",
            "--scope",
            "subscribe:orders.>",
            "--json",
        ).stdout
    )
    url = init["url"]
    process = start_server(env, url, Path(init["ca_cert"]))
    try:
        yield Server(
            url=url,
            ca=Path(init["ca_cert"]),
            data_dir=data_dir,
            env=env,
            demo=demo,
            other=App.from_cli(other, other_tenant),
            narrow=App.from_cli(narrow, demo.tenant),
            process=process,
        )
    finally:
        stop_server(process)
