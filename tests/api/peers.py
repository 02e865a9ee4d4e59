"""Real peers for the end-to-end API tests: what Herald delivers to, and how it is driven.

* :class:`Pki` — a trustme CA and a server certificate for ``localhost`` and ``127.0.0.1``;
* :class:`Receiver` — a Standard Webhooks receiver over HTTPS that verifies every request
  with the independent ``standardwebhooks`` package;
* :class:`Mailbox` / :func:`smtp_server` — an aiosmtpd server that requires STARTTLS;
* :class:`Node` — a ``node_factory`` node driven as its operator would (signed admin
  requests), with helpers to publish, read deliveries and wait for their states.

The module-scoped fixtures ``pki``, ``receiver`` and ``smtp`` (tests/api/conftest.py) are
built from these. Every wait is bounded (:func:`wait_until`).
"""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import json
import secrets
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import trustme
from aiosmtpd.controller import Controller
from standardwebhooks import Webhook

if TYPE_CHECKING:  # the conftest's types, for readers and type checkers only
    from tests.api.conftest import App, NodeFactory
    from tests.api.conftest import Node as HeraldNode

WAIT = 10.0  # seconds: the bound of every single HTTP request
DELIVERY_WAIT = 30.0  # seconds: the bound of waiting for a delivery to reach a state
LEASE_WAIT = 100.0  # seconds: the bound when a dead node's 60 s leases must run out first
POLL = 0.2
PROBLEM = "urn:herald:problem:"
SENDER = "herald@example.com"

T = TypeVar("T")


def wait_until(probe: Callable[[], T | None], what: Callable[[], str], timeout: float) -> T:
    """Poll ``probe`` until it returns something other than None, at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what()}")
        time.sleep(POLL)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    if slug is not None:
        assert problem["type"] == PROBLEM + slug, problem
    return problem


# -- PKI ----------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca_file: Path
    server_context: ssl.SSLContext


def make_pki(directory: Path) -> Pki:
    """A new CA (its certificate written to ``directory``) and a loopback server context."""
    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return Pki(ca_file, context)


# -- the webhook receiver -----------------------------------------------------------------------


@dataclass
class Hook:
    """What the receiver does for one path: statuses in turn (the last one repeats)."""

    secret: str
    statuses: list[int]
    headers: dict[str, str] = field(default_factory=dict)
    hold: float = 0.0  # seconds each answer is held back


@dataclass(frozen=True)
class Seen:
    """One request as received; ``payload`` is what standardwebhooks verified, else None."""

    path: str
    headers: dict[str, str]
    body: bytes
    payload: Any
    error: str


#: What :attr:`Receiver.cut` records: a request whose body never fully arrived.
INCOMPLETE = "incomplete body"


class _Handler(BaseHTTPRequestHandler):
    server: _HttpsServer

    def do_POST(self) -> None:
        receiver = self.server.receiver
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(min(length, 1 << 20))
        headers = {key.lower(): value for key, value in self.headers.items()}
        hook = receiver.hooks.get(self.path)
        payload, error = None, "no such hook"
        if len(body) < min(length, 1 << 20):
            # The sender hung up (or was SIGKILLed) mid-body: no request was made, so there
            # is nothing to verify or answer (a real receiver never sees it either).
            with receiver.lock:
                receiver.cut.append(Seen(self.path, headers, body, None, INCOMPLETE))
            return
        if hook is not None:
            try:
                payload, error = Webhook(hook.secret).verify(body, headers), ""
            except Exception as exc:  # recorded; the answer is a 401
                error = f"{type(exc).__name__}: {exc}"
        with receiver.lock:
            earlier = sum(1 for seen in receiver.seen if seen.path == self.path)
            receiver.seen.append(Seen(self.path, headers, body, payload, error))
        if hook is None:
            status, extra = 404, {}
        elif error:
            status, extra = 401, {}
        else:
            status, extra = hook.statuses[min(earlier, len(hook.statuses) - 1)], hook.headers
            if hook.hold:
                receiver.release.wait(hook.hold)
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass


class _HttpsServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads

    def __init__(self, port: int, context: ssl.SSLContext, receiver: Receiver) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.context = context
        self.receiver = receiver

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(WAIT)
        with self.context.wrap_socket(request, server_side=True) as tls:
            self.RequestHandlerClass(tls, client_address, self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up (or is SIGKILLed) mid-request is part of the tests


class Receiver:
    """A Standard Webhooks receiver over HTTPS on 127.0.0.1 (``port`` 0: any free port)."""

    def __init__(self, context: ssl.SSLContext, port: int = 0) -> None:
        self.hooks: dict[str, Hook] = {}
        self.seen: list[Seen] = []
        #: Requests cut off mid-body by their sender (not requests: never answered).
        self.cut: list[Seen] = []
        self.lock = threading.Lock()
        self.release = threading.Event()  # set when stopping: held answers go out at once
        self._server = _HttpsServer(port, context, self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(WAIT)
        self._server.server_close()

    def add(
        self,
        secret: str,
        *statuses: int,
        path: str | None = None,
        headers: dict[str, str] | None = None,
        hold: float = 0.0,
    ) -> str:
        """Serve a hook (204 unless ``statuses`` say otherwise); returns its path."""
        path = path or f"/hook/{unique('marker')}"
        self.hooks[path] = Hook(secret, list(statuses or (204,)), headers or {}, hold)
        return path

    def url(self, path: str, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{path}"

    def requests(self, path: str) -> list[Seen]:
        with self.lock:
            return [seen for seen in self.seen if seen.path == path]


def webhook(url: str, secret: str) -> dict[str, str]:
    return {"channel": "webhook", "url": url, "secret": secret}


# -- the SMTP server ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool


class Mailbox:
    """An aiosmtpd handler keeping every accepted message."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mails: list[Mail] = []

    async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.mails.append(
                Mail(envelope.mail_from, list(envelope.rcpt_tos), message, session.ssl is not None)
            )
        return "250 2.0.0 accepted"

    def for_delivery(self, delivery_id: str) -> list[Mail]:
        with self.lock:
            return [m for m in self.mails if delivery_id in str(m.message["Message-ID"])]


@dataclass
class Smtp:
    port: int
    mailbox: Mailbox


@contextlib.contextmanager
def smtp_server(pki: Pki, port: int) -> Iterator[Smtp]:
    """An SMTP server on 127.0.0.1:``port`` that requires STARTTLS, for the block."""
    mailbox = Mailbox()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        server_hostname="mx.test",
        tls_context=pki.server_context,
        require_starttls=True,
    )
    controller.start()
    try:
        yield Smtp(port, mailbox)
    finally:
        controller.stop()


# -- Herald nodes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEntry:
    """One audit entry as stored (canonical JSON), with its log index."""

    index: int
    actor: str
    action: str
    object: str
    details: dict[str, Any]

    @classmethod
    def parse(cls, index: int, entry: str | bytes) -> AuditEntry:
        parsed = json.loads(entry)
        return cls(
            index, parsed["actor"], parsed["action"], parsed["object"], dict(parsed["details"])
        )


@dataclass
class Node:
    """A ``node_factory`` node driven as its operator would: with an admin app and its client."""

    herald: HeraldNode  # its apps: "demo" (publish, subscribe, messages:read) and "admin"
    _http: httpx.Client | None = field(default=None, repr=False)

    @classmethod
    def create(cls, nodes: NodeFactory, name: str, **settings: str) -> Node:
        node = nodes(name=name, start=False, reuse_tokens=True, **settings)
        node.add_app("admin", "admin", "publish:>", "messages:read")
        return cls(node)

    @property
    def demo(self) -> App:
        return self.herald.demo

    @property
    def admin(self) -> App:
        return self.herald.app("admin")

    @property
    def data_dir(self) -> Path:
        return self.herald.data_dir

    # -- process ----------------------------------------------------------------------------
    def start(self) -> None:
        self.herald.start()

    def stop(self) -> None:
        self._close_http()
        self.herald.stop()

    def kill(self) -> None:
        """SIGKILL: no lifespan shutdown, no lease release — a crash."""
        self._close_http()
        self.herald.kill()

    def signal(self, signum: int) -> None:
        assert self.herald.process is not None
        self.herald.process.send_signal(signum)

    # -- HTTP -------------------------------------------------------------------------------
    def client(self, app: App | None = None, *, sign: bool = True) -> httpx.Client:
        """A client speaking for ``app`` (admin by default), signing like the SDK."""
        bearer = {"Authorization": f"Bearer {self.herald.token(app or self.admin)}"}
        return self.herald.client(sign=sign, headers=bearer)

    @property
    def http(self) -> httpx.Client:
        """The admin client (reconnects after a restart)."""
        if self._http is None:
            self._http = self.client()
        return self._http

    def _close_http(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- API helpers ------------------------------------------------------------------------
    def put_recipient(
        self,
        recipient: str,
        *endpoints: dict[str, str],
        preferences: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        response = self.http.put(
            f"/v1/recipients/{recipient}",
            json={"endpoints": list(endpoints), "preferences": preferences or {}},
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def recipient(self, recipient: str) -> httpx.Response:
        return self.http.get(f"/v1/recipients/{recipient}")

    def publish_request(self, recipient: str, title: str | None, **extra: Any) -> httpx.Response:
        """``POST /v1/messages`` to ``recipient`` (topic ``alerts.e2e`` unless given)."""
        topic = extra.pop("topic", "alerts.e2e")
        message = {"topic": topic, "recipients": [recipient], **extra}
        if title is not None:
            message["title"] = title
        return self.http.post("/v1/messages", json=message)

    def published(self, recipient: str, title: str | None, **extra: Any) -> dict[str, Any]:
        """The 202 answer to a publish (id, audit reference, schedule)."""
        response = self.publish_request(recipient, title, **extra)
        assert response.status_code == 202, response.text
        return dict(response.json())

    def publish(self, recipient: str, title: str | None, **extra: Any) -> str:
        return str(self.published(recipient, title, **extra)["id"])

    def message(self, message_id: str) -> dict[str, Any]:
        """``GET /v1/messages/{id}``: the message (or its schedule) with its deliveries."""
        response = self.http.get(f"/v1/messages/{message_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def deliveries(self, message_id: str, *, inapp: bool = False) -> list[dict[str, Any]]:
        """The message's deliveries; the in-app one (the streams, one per recipient) only
        when asked for: channel policies do not govern it."""
        response = self.http.get(f"/v1/messages/{message_id}")
        assert response.status_code == 200, response.text
        found = response.json()["deliveries"]
        return [d for d in found if inapp or d["channel"] != "inapp"]

    def wait_delivery(
        self,
        message_id: str,
        channel: str,
        states: set[str],
        *,
        until: Callable[[dict[str, Any]], bool] = lambda _: True,
        timeout: float = DELIVERY_WAIT,
        recipient: str | None = None,
    ) -> dict[str, Any]:
        """The message's one delivery on ``channel`` (to ``recipient``, when the message
        has several), once it is in one of ``states``."""
        last: list[list[dict[str, Any]]] = [[]]

        def probe() -> dict[str, Any] | None:
            last[0] = self.deliveries(message_id, inapp=channel == "inapp")
            found = [
                d
                for d in last[0]
                if d["channel"] == channel and recipient in {None, d["recipient"]}
            ]
            assert len(found) <= 1, found
            if found and found[0]["state"] in states and until(found[0]):
                return found[0]
            return None

        return wait_until(
            probe, lambda: f"a {channel} delivery in {sorted(states)}: {last[0]}", timeout
        )

    def dead_letters(self) -> dict[str, dict[str, Any]]:
        """Every dead delivery of the admin's tenant, by id, following ``next``."""
        found: dict[str, dict[str, Any]] = {}
        params = {"state": "dead", "limit": "100"}
        while True:
            response = self.http.get("/v1/deliveries", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            found.update((d["id"], d) for d in page["deliveries"])
            if not page["next"]:
                return found
            params["after"] = page["next"]

    # -- the database -----------------------------------------------------------------------
    def audit_entries(self, action: str | None = None) -> list[AuditEntry]:
        """The node's audit entries (of ``action`` only, when given), oldest first."""
        with self.herald.db() as db:
            rows = db.execute("SELECT idx, entry FROM audit_entries ORDER BY idx").fetchall()
        entries = [AuditEntry.parse(int(idx), entry) for idx, entry in rows]
        return [e for e in entries if action in {None, e.action}]

    def db_bytes(self) -> bytes:
        """The raw SQLite database, WAL included."""
        return b"".join(p.read_bytes() for p in sorted(self.data_dir.glob("herald.db*")))

    def delivery_rows(self, message_ids: list[str]) -> dict[str, str]:
        """``{message id: state}`` of these messages' deliveries, read from SQLite."""
        marks = ",".join("?" * len(message_ids))
        query = f"SELECT message_id, state FROM deliveries WHERE message_id IN ({marks})"  # noqa: S608
        with contextlib.closing(sqlite3.connect(self.data_dir / "herald.db", timeout=1.0)) as db:
            return {str(m): str(s) for m, s in db.execute(query, message_ids).fetchall()}


def channel_settings(pki: Pki, *, allow: bool = True, smtp: Smtp | None = None) -> dict[str, str]:
    settings = {"HERALD_EGRESS_CA_FILE": str(pki.ca_file)}
    if allow:
        settings["HERALD_EGRESS_ALLOW"] = "127.0.0.0/8"
    if smtp is not None:
        settings["HERALD_SMTP_URL"] = f"smtp://127.0.0.1:{smtp.port}"
        settings["HERALD_SMTP_FROM"] = SENDER
    return settings


@contextlib.contextmanager
def running(node: Node) -> Iterator[Node]:
    node.start()
    try:
        yield node
    finally:
        node.stop()
