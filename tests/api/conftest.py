"""Real Herald servers for API tests: ``herald init`` + ``herald serve`` as a subprocess,
TLS on a loopback port, talked to with real HTTP and WebSocket clients.

``server`` is the session's shared server; a test (or module) that needs a server of its own
(own data dir, own settings, restarts, crashes) gets one from ``node_factory`` (or
``module_node_factory``), which stops it at the end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import httpx
import pytest
from tests.api.peers import Pki, Receiver, Smtp, make_pki, smtp_server

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
class Node:
    """A Herald server of a test's own: a data dir made by ``herald init`` and, while started,
    its ``herald serve`` process on a loopback TLS port.

    Made by :class:`NodeFactory` (the ``node_factory`` fixtures), which stops every node it
    made when its scope ends. ``with node:`` stops the node at the end of the block.
    """

    url: str
    ca: Path
    data_dir: Path
    env: dict[str, str]
    init: dict[str, Any]  # what ``herald init --json`` printed
    demo: App  # the app ``herald init`` created
    apps: dict[str, App] = field(default_factory=dict)  # by name, "demo" included
    reuse_tokens: bool = False  # token() gets one token per app and scope, then reuses it
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _tokens: dict[tuple[str, str | None], str] = field(default_factory=dict, repr=False)
    operators: dict[str, str] = field(default_factory=dict, repr=False)  # name -> password

    def __post_init__(self) -> None:
        self.apps.setdefault("demo", self.demo)

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the process --------------------------------------------------------------------------
    def start(self) -> None:
        """``herald serve``, once ``/healthz`` answers."""
        self.process = start_server(self.env, self.url, self.ca)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 10 s); nothing when not running."""
        if self.process is not None:
            stop_server(self.process)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no flush, no lifespan — a crash."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        assert self.process.returncode == -signal.SIGKILL
        self.process = None

    # -- the CLI ------------------------------------------------------------------------------
    def run(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``herald ARGS`` against this data dir."""
        return run_cli(self.env, *args, check=check, stdin=stdin)

    def cli(self, *args: str) -> Any:
        """``herald ARGS --json`` against this data dir; the parsed output."""
        return json.loads(self.run(*args, "--json").stdout)

    def add_app(self, name: str, *scopes: str, tenant: str | None = None) -> App:
        """``herald app create`` (in the demo tenant unless ``tenant``); signed for by name."""
        tenant = tenant or self.demo.tenant
        options = [item for scope in scopes for item in ("--scope", scope)]
        app = App.from_cli(self.cli("app", "create", "--tenant", tenant, *options), tenant)
        self.apps[name] = app
        return app

    def app(self, name: str) -> App:
        return self.apps[name]

    def add_operator(self, name: str, *, tenant: str | None = None) -> dict[str, Any]:
        """``herald admin create`` (global unless ``tenant``); keeps the generated password."""
        options = ["--tenant", tenant] if tenant else []
        created: dict[str, Any] = self.cli("admin", "create", name, *options)
        self.operators[name] = str(created["password"])
        return created

    def operator_login(self, name: str = "root", password: str | None = None) -> httpx.Response:
        """``POST /v1/admin/login`` for ``name`` (a global operator made on first use)."""
        if name not in self.operators and password is None:
            self.add_operator(name)
        body = {"name": name, "password": password or self.operators[name]}
        with self.client(sign=False) as client:
            return client.post("/v1/admin/login", json=body)

    def operator_token(self, name: str = "root") -> str:
        """An operator token of ``name`` (a global operator made on first use)."""
        key = ("operator:" + name, None)
        if not self.reuse_tokens or key not in self._tokens:
            response = self.operator_login(name)
            assert response.status_code == 200, response.text
            self._tokens[key] = str(response.json()["access_token"])
        return self._tokens[key]

    # -- HTTP ---------------------------------------------------------------------------------
    def ssl_context(self, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        """Trusting the dev CA; presenting the client certificate ``(cert, key)`` if given."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if cert is not None:
            context.load_cert_chain(*cert)
        return context

    def sign(self, request: httpx.Request) -> None:
        """Sign a state-changing request with the key of the app it speaks for (if ours)."""
        if request.method in {"GET", "HEAD"} or "signature" in request.headers:
            return
        client_id = _client_id_of(request)
        for app in self.apps.values():
            if app.client_id == client_id:
                app.signer.sign(request)

    def client(
        self, *, sign: bool = True, cert: tuple[Path, Path] | None = None, **kwargs: object
    ) -> httpx.Client:
        """An HTTPS client trusting the dev CA; signs like the SDK unless ``sign=False``;
        presents the client certificate ``cert`` (``(cert_file, key_file)``) if given."""
        hooks = {"request": [self.sign]} if sign else {}
        options: dict[str, object] = {"timeout": 10.0, **kwargs}
        return httpx.Client(  # type: ignore[arg-type]
            base_url=self.url, verify=self.ssl_context(cert), event_hooks=hooks, **options
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

    def token_response(
        self,
        app: App | None = None,
        scope: str | None = None,
        *,
        cert: tuple[Path, Path] | None = None,
    ) -> httpx.Response:
        """The answer to a client-credentials grant for ``app`` (default: demo), over a
        connection presenting the client certificate ``cert`` if given."""
        app = app or self.demo
        data = {"grant_type": "client_credentials"}
        if scope:
            data["scope"] = scope
        with self.client(cert=cert) as client:
            return client.post("/oauth/token", data=data, auth=(app.client_id, app.client_secret))

    def token(self, app: App | None = None, scope: str | None = None) -> str:
        """An access token of ``app`` (default: demo); a new one unless ``reuse_tokens``."""
        key = ((app or self.demo).client_id, scope)
        if not self.reuse_tokens or key not in self._tokens:
            response = self.token_response(app, scope)
            assert response.status_code == 200, response.text
            self._tokens[key] = str(response.json()["access_token"])
        return self._tokens[key]

    # -- storage (SQLite) ---------------------------------------------------------------------
    def db(self) -> closing[sqlite3.Connection]:
        return closing(sqlite3.connect(self.data_dir / "herald.db", timeout=10))

    def db_count(self, table: str) -> int:
        with self.db() as conn:
            (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
        return int(count)

    def audit_actions(self, since: int = 0) -> list[tuple[int, str, dict[str, object]]]:
        """``(index, action, details)`` of the audit entries from index ``since``."""
        with self.db() as conn:
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

    @property
    def witness_dir(self) -> Path:
        """Where the node's witness keeps its copies of the checkpoints (the default)."""
        return self.data_dir.parent / (self.data_dir.name + "-witness")


class Server(Node):
    """The session's server: a node with the apps ``other`` and ``narrow``."""

    @property
    def other(self) -> App:
        """An app of a second tenant."""
        return self.apps["other"]

    @property
    def narrow(self) -> App:
        """Tenant "demo", scopes publish:orders.> subscribe:orders.> only."""
        return self.apps["narrow"]


class NodeFactory:
    """Makes nodes, each with a data dir and a port of its own, and stops them all at the end."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp_path_factory = tmp_path_factory
        self.nodes: list[Node] = []

    def __call__(
        self,
        *,
        name: str = "node",
        start: bool = True,
        port: int | None = None,
        reuse_tokens: bool = False,
        cls: type[Node] = Node,
        **settings: str,
    ) -> Node:
        """``herald init`` with ``settings`` (``HERALD_*`` variables); started unless told."""
        data_dir = self._tmp_path_factory.mktemp(name) / "data"
        env = base_env(data_dir, port or free_port(), **settings)
        init = json.loads(run_cli(env, "init", "--json").stdout)
        node = cls(
            url=init["url"],
            ca=Path(init["ca_cert"]),
            data_dir=data_dir,
            env=env,
            init=init,
            demo=App.from_cli(init),
            reuse_tokens=reuse_tokens,
        )
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def peer(self, node: Node, **settings: str) -> Node:
        """Another, started, ``herald serve`` of ``node``'s data dir on a port of its own
        (with a shared database and Redis: a second cluster node)."""
        port = free_port()
        peer = type(node)(
            url=f"https://127.0.0.1:{port}",
            ca=node.ca,
            data_dir=node.data_dir,
            env={**node.env, "HERALD_PORT": str(port), **settings},
            init=node.init,
            demo=node.demo,
            apps=dict(node.apps),
            reuse_tokens=node.reuse_tokens,
        )
        self.nodes.append(peer)
        peer.start()
        return peer

    @staticmethod
    def free_port() -> int:
        """A free loopback port: for a peer service of a test, or for nothing to listen on."""
        return free_port()

    def stop_all(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


def run_cli(
    env: dict[str, str], *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``herald ARGS`` with ``env`` (and ``stdin`` as its input); the completed process."""
    result = subprocess.run(
        [*HERALD, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
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
        # Every test client comes from 127.0.0.1, tests reconnect one recipient many
        # times and refuse credentials on purpose: rate limits and lockout are tested on
        # nodes of their own (test_rate_limits.py).
        HERALD_LOCKOUT_THRESHOLD="1000",
        HERALD_LOCKOUT_ADDRESS_THRESHOLD="1000000",
        HERALD_RATE_LIMIT_SUBSCRIBER_RATE="100000",
        HERALD_RATE_LIMIT_SUBSCRIBER_BURST="1000000",
        HERALD_RATE_LIMIT_APP_RATE="100000",
        HERALD_RATE_LIMIT_APP_BURST="1000000",
    )
    env.update(extra)
    return env


def _node_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeFactory]:
    factory = NodeFactory(tmp_path_factory)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def node_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeFactory]:
    """Servers of a test's own (``node_factory(**settings)``), stopped when the test ends."""
    yield from _node_factory(tmp_path_factory)


@pytest.fixture(scope="module")
def module_node_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeFactory]:
    """Servers of a module's own, stopped when the module's tests are done."""
    yield from _node_factory(tmp_path_factory)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One initialised TLS server for the API tests of this session."""
    nodes = NodeFactory(tmp_path_factory)
    try:
        node = nodes(name="herald", start=False, cls=Server)
        assert isinstance(node, Server)
        other_tenant = node.cli("tenant", "create", "other")["tenant"]
        node.add_app("other", "publish:>", "subscribe:>", "messages:read", tenant=other_tenant)
        node.add_app("narrow", "publish:orders.>", "subscribe:orders.>")
        node.start()
        yield node
    finally:
        nodes.stop_all()


# -- real peers (tests/api/peers.py) -------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A trustme CA (for ``HERALD_EGRESS_CA_FILE``) and a loopback server certificate."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def receiver(pki: Pki) -> Iterator[Receiver]:
    """A Standard Webhooks receiver over HTTPS on 127.0.0.1, shared by a module's tests."""
    running = Receiver(pki.server_context).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def smtp(pki: Pki) -> Iterator[Smtp]:
    """An SMTP server on 127.0.0.1 that requires STARTTLS, shared by a module's tests."""
    with smtp_server(pki, free_port()) as running:
        yield running


# -- Redis ------------------------------------------------------------------------------------
REDIS_URL = os.environ.get("HERALD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_url() -> str:
    """The test Redis (cluster tests); skips, or fails under HERALD_REQUIRE_SERVICES, without it."""
    import redis
    import tests.conftest as root

    try:
        with redis.Redis.from_url(
            REDIS_URL, socket_timeout=2.0, socket_connect_timeout=2.0
        ) as client:
            client.ping()
    except (redis.RedisError, OSError) as exc:
        root.service_unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


def forget_redis_keys(url: str, tenant: str, client_ids: Iterable[str]) -> None:
    """Delete what test nodes wrote to Redis for one tenant and its apps.

    Nonces (``herald:nonce:<tenant>:…``), rate-limit buckets of the apps and of the tenant's
    subscribers, and the apps' lockout counts; never anything of another test run.
    """
    import redis

    from herald.state.ratelimit import bucket_key

    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in tenant)
    with redis.Redis.from_url(url, socket_timeout=5.0) as r:
        keys: list[str] = []
        for client_id in client_ids:
            keys.append(f"herald:rl:{bucket_key('app', client_id)}")
            digest = hashlib.sha256(client_id.encode()).hexdigest()[:32]
            keys.append(f"herald:lock:client:{digest}")
        for pattern in (f"herald:nonce:{escaped}:*", f"herald:rl:subscriber:k:{escaped}/*"):
            keys += [k.decode() for k in r.scan_iter(match=pattern, count=1000)]
        if keys:
            r.delete(*keys)
