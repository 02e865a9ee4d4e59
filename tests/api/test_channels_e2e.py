"""Channels end to end: a real ``herald serve`` delivering to real peers on loopback.

Each test talks to Herald over HTTPS as an operator would (signed admin requests) and checks
what a real peer received:

* webhooks: an HTTPS receiver (trustme certificate for ``localhost`` and ``127.0.0.1``) that
  verifies every request with the independent ``standardwebhooks`` package;
* e-mail: an aiosmtpd server that requires STARTTLS, with a trustme certificate.

Herald trusts the trustme CA (``HERALD_EGRESS_CA_FILE``) and may reach loopback
(``HERALD_EGRESS_ALLOW=127.0.0.0/8``); one test runs a node without that allow-list. Each
node has its own data directory and is always stopped. Every wait is bounded and no
assertion is about timing: the dispatcher's first retry comes up to 2 s after a failure
(full jitter under ``2 s * 2**(attempt - 1)``), so the retry tests take a few seconds each.

The crash test with deliveries *in flight* runs its node with a 4 s delivery lease instead
of the default 60 s, so that the dead node's leases run out quickly.
"""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import json
import secrets
import signal
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
import pytest
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


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = trustme.CA()
    ca_file = tmp_path_factory.mktemp("pki") / "ca.pem"
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


class _Handler(BaseHTTPRequestHandler):
    server: _HttpsServer

    def do_POST(self) -> None:
        receiver = self.server.receiver
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(min(length, 1 << 20))
        headers = {key.lower(): value for key, value in self.headers.items()}
        hook = receiver.hooks.get(self.path)
        payload, error = None, "no such hook"
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


@pytest.fixture(scope="module")
def receiver(pki: Pki) -> Iterator[Receiver]:
    running = Receiver(pki.server_context).start()
    try:
        yield running
    finally:
        running.stop()


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


@pytest.fixture(scope="module")
def smtp(pki: Pki, module_node_factory: NodeFactory) -> Iterator[Smtp]:
    mailbox = Mailbox()
    port = module_node_factory.free_port()
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
    def put_recipient(self, recipient: str, *endpoints: dict[str, str]) -> dict[str, Any]:
        response = self.http.put(
            f"/v1/recipients/{recipient}", json={"endpoints": list(endpoints), "preferences": {}}
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def recipient(self, recipient: str) -> httpx.Response:
        return self.http.get(f"/v1/recipients/{recipient}")

    def publish(self, recipient: str, title: str, **extra: Any) -> str:
        topic = extra.pop("topic", "alerts.e2e")
        message = {"topic": topic, "title": title, "recipients": [recipient], **extra}
        response = self.http.post("/v1/messages", json=message)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

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
    ) -> dict[str, Any]:
        """The message's one delivery on ``channel``, once it is in one of ``states``."""
        last: list[list[dict[str, Any]]] = [[]]

        def probe() -> dict[str, Any] | None:
            last[0] = self.deliveries(message_id)
            found = [d for d in last[0] if d["channel"] == channel]
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


@pytest.fixture(scope="module")
def node(pki: Pki, smtp: Smtp, module_node_factory: NodeFactory) -> Iterator[Node]:
    """The shared node: loopback allowed, the trustme CA trusted, e-mail through ``smtp``."""
    settings = channel_settings(pki, smtp=smtp)
    created = Node.create(module_node_factory, "channels", **settings)
    with running(created):
        yield created


@dataclass
class Sent:
    recipient: str
    path: str
    message_id: str
    delivery: dict[str, Any]


def dead_webhook(node: Node, receiver: Receiver, status: int, **hook: Any) -> Sent:
    """A webhook delivery that went dead at its first attempt on ``status``."""
    secret = new_secret()
    path = receiver.add(secret, status, **hook)
    recipient = unique("dead")
    node.put_recipient(recipient, webhook(receiver.url(path), secret))
    message_id = node.publish(recipient, f"refused with {status}")
    delivery = node.wait_delivery(message_id, "webhook", {"dead"})
    return Sent(recipient, path, message_id, delivery)


# -- 1. a verified webhook, contact data sealed -------------------------------------------------


def test_webhook_is_delivered_verified_and_its_endpoint_sealed(
    node: Node, receiver: Receiver
) -> None:
    secret = new_secret()
    path = receiver.add(secret)
    recipient = unique("ada")
    title = unique("Deploy finished")

    saved = node.put_recipient(recipient, webhook(receiver.url(path), secret))
    [endpoint] = saved["endpoints"]
    assert endpoint["channel"] == "webhook"
    assert endpoint["secret"] == "[redacted]"
    assert endpoint["disabled"] is False

    message_id = node.publish(recipient, title, body="all green", data={"build": 42})
    delivery = node.wait_delivery(message_id, "webhook", {"delivered"})
    assert delivery["attempts"] == 1
    assert delivery["last_error"] is None

    [seen] = receiver.requests(path)
    assert seen.error == ""
    assert seen.headers["webhook-id"] == delivery["id"]
    assert seen.headers["content-type"] == "application/json"
    payload = json.loads(seen.body)
    assert payload == seen.payload
    assert payload["title"] == title
    assert payload["body"] == "all green"
    assert payload["data"] == {"build": 42}
    assert payload["id"] == message_id
    assert payload["delivery_id"] == delivery["id"]
    assert payload["recipient"] == recipient

    # The view redacts the secret...
    view = node.recipient(recipient)
    assert view.status_code == 200, view.text
    [shown] = view.json()["endpoints"]
    assert shown["secret"] == "[redacted]"
    assert shown["disabled"] is False
    assert secret not in view.text
    assert secret.removeprefix("whsec_") not in view.text

    # ...and the database holds neither the URL nor the secret in any readable form.
    marker = path.rsplit("/", 1)[1]
    raw_key = base64.b64decode(secret.removeprefix("whsec_"))
    stored = node.db_bytes()
    for needle in (marker.encode(), secret.encode(), secret[6:].encode(), raw_key):
        assert needle not in stored
    log = (node.data_dir / "serve.log").read_bytes()
    assert secret[6:].encode() not in log
    assert marker.encode() not in log


# -- 2. failure paths ---------------------------------------------------------------------------


def test_webhook_5xx_is_retried_and_then_delivered(node: Node, receiver: Receiver) -> None:
    secret = new_secret()
    path = receiver.add(secret, 500, 200)
    recipient = unique("retry")
    node.put_recipient(recipient, webhook(receiver.url(path), secret))
    message_id = node.publish(recipient, "flaky receiver")

    delivery = node.wait_delivery(message_id, "webhook", {"delivered"})
    assert delivery["attempts"] == 2
    seen = receiver.requests(path)
    assert len(seen) == 2
    assert all(s.error == "" for s in seen)
    # The de-duplication key is stable across retries.
    assert {s.headers["webhook-id"] for s in seen} == {delivery["id"]}


def test_webhook_410_kills_the_delivery_and_disables_the_endpoint(
    node: Node, receiver: Receiver
) -> None:
    gone = dead_webhook(node, receiver, 410)
    assert gone.delivery["attempts"] == 1
    assert "410" in gone.delivery["last_error"]
    assert len(receiver.requests(gone.path)) == 1

    view = node.recipient(gone.recipient)
    assert view.status_code == 200, view.text
    [endpoint] = view.json()["endpoints"]
    assert endpoint["disabled"] is True

    # A disabled endpoint gets no delivery at all.
    again = node.publish(gone.recipient, "after the 410")
    assert node.deliveries(again) == []
    assert len(receiver.requests(gone.path)) == 1


def test_webhook_unreachable_receiver_is_retried_without_leaking_the_url(
    node: Node, node_factory: NodeFactory
) -> None:
    port = node_factory.free_port()  # nothing listens here
    marker = unique("marker")
    url = f"https://localhost:{port}/hook/{marker}?token=t0ps3cret"
    recipient = unique("down")
    node.put_recipient(recipient, webhook(url, new_secret()))
    message_id = node.publish(recipient, "nobody home")

    delivery = node.wait_delivery(
        message_id, "webhook", {"retrying"}, until=lambda d: d["attempts"] >= 1
    )
    error = delivery["last_error"]
    assert error
    assert "unreachable" in error
    for leak in (marker, "t0ps3cret", f":{port}", "https://", "/hook"):
        assert leak not in error


@pytest.mark.parametrize(
    ("status", "headers", "reason"),
    [
        (400, {}, "HTTP 400"),
        (302, {"location": "http://169.254.169.254/latest/meta-data/"}, "redirect"),
    ],
)
def test_webhook_refusals_are_dead_letters(
    node: Node, receiver: Receiver, status: int, headers: dict[str, str], reason: str
) -> None:
    dead = dead_webhook(node, receiver, status, headers=headers)
    assert dead.delivery["attempts"] == 1
    assert reason in dead.delivery["last_error"]
    # One request, and (for the redirect) nothing followed.
    assert len(receiver.requests(dead.path)) == 1
    view = node.recipient(dead.recipient)
    assert view.json()["endpoints"][0]["disabled"] is False


# -- 3. dead letters ----------------------------------------------------------------------------


def test_dead_letters_are_listed_and_can_be_retried(node: Node, receiver: Receiver) -> None:
    gone = dead_webhook(node, receiver, 410)
    refused = dead_webhook(node, receiver, 400)

    listed = node.dead_letters()
    for sent in (gone, refused):
        shown = listed[sent.delivery["id"]]
        assert shown["state"] == "dead"
        assert shown["channel"] == "webhook"
        assert shown["attempts"] == 1
        assert shown["last_error"] == sent.delivery["last_error"]
    assert all(d["state"] == "dead" for d in listed.values())

    # The receiver is fixed; an operator retries the dead letter.
    receiver.hooks[refused.path].statuses = [200]
    response = node.http.post(f"/v1/deliveries/{refused.delivery['id']}:retry")
    assert response.status_code == 202, response.text
    assert response.json()["id"] == refused.delivery["id"]
    assert response.json()["state"] in {"retrying", "sending", "delivered"}  # due again
    done = node.wait_delivery(refused.message_id, "webhook", {"delivered"})
    assert done["id"] == refused.delivery["id"]
    assert done["attempts"] == 2
    seen = receiver.requests(refused.path)
    assert [s.headers["webhook-id"] for s in seen] == [done["id"]] * 2
    assert all(s.error == "" for s in seen)
    assert done["id"] not in node.dead_letters()

    # Delivered is not dead: nothing to retry.
    response = node.http.post(f"/v1/deliveries/{done['id']}:retry")
    assert_problem(response, 404)

    # The 410 letter cannot succeed: its endpoint is disabled. Refused (409), nothing sent.
    response = node.http.post(f"/v1/deliveries/{gone.delivery['id']}:retry")
    assert_problem(response, 409)
    assert len(receiver.requests(gone.path)) == 1


def test_dead_letter_retry_needs_admin_and_a_signature(node: Node, receiver: Receiver) -> None:
    dead = dead_webhook(node, receiver, 400)
    retry = f"/v1/deliveries/{dead.delivery['id']}:retry"
    with node.client(node.demo) as not_admin:
        assert_problem(not_admin.post(retry), 403)
    with node.client(sign=False) as unsigned:
        assert_problem(unsigned.post(retry), 401, "signature-missing")
    [still] = node.deliveries(dead.message_id)
    assert still["state"] == "dead"
    assert len(receiver.requests(dead.path)) == 1


# -- 4. e-mail ----------------------------------------------------------------------------------


def test_email_is_delivered_over_starttls(node: Node, smtp: Smtp) -> None:
    recipient = unique("mail")
    address = f"{recipient}@example.org"
    title = unique("Invoice")
    body = "Your invoice is ready.\nAmount: 5 < 7 & more"

    saved = node.put_recipient(recipient, {"channel": "email", "address": address, "name": "Ada"})
    assert saved["endpoints"][0]["address"] == "[redacted]"
    assert address not in node.recipient(recipient).text

    message_id = node.publish(recipient, title, body=body)
    delivery = node.wait_delivery(message_id, "email", {"delivered"})
    assert delivery["attempts"] == 1

    [mail] = smtp.mailbox.for_delivery(delivery["id"])
    assert mail.tls  # STARTTLS was used (the server also requires it)
    assert mail.mail_from == SENDER
    assert mail.rcpt_tos == [address]
    message = mail.message
    assert message["Subject"] == title
    assert message["From"].addresses[0].addr_spec == SENDER
    assert message["To"].addresses[0].addr_spec == address
    assert f"<{delivery['id']}@example.com>" == message["Message-ID"]
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content().replace("\r\n", "\n").strip() == body
    html = parts[1].get_content()
    assert "Amount: 5 &lt; 7 &amp; more" in html
    assert "<script" not in html
    assert address.encode() not in node.db_bytes()
    assert address.encode() not in (node.data_dir / "serve.log").read_bytes()


# -- 5. SSRF ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.1/hook/{marker}",
        "https://169.254.169.254/latest/meta-data/{marker}",
        "https://[::ffff:169.254.169.254]/latest/meta-data/{marker}",
        "https://2852039166/latest/meta-data/{marker}",  # 169.254.169.254 as one integer
        "http://169.254.169.254/latest/meta-data/{marker}",
    ],
)
def test_internal_webhook_destinations_are_refused_when_saved(node: Node, url: str) -> None:
    marker = unique("marker")
    recipient = unique("ssrf")
    response = node.http.put(
        f"/v1/recipients/{recipient}",
        json={"endpoints": [webhook(url.format(marker=marker), new_secret())]},
    )
    assert_problem(response, 400, "egress-refused")
    assert marker not in response.text
    assert_problem(node.recipient(recipient), 404)


def test_loopback_is_refused_without_the_operator_allow_list(
    pki: Pki, receiver: Receiver, node_factory: NodeFactory
) -> None:
    strict = Node.create(node_factory, "strict", **channel_settings(pki, allow=False))
    secret = new_secret()
    path = receiver.add(secret)
    with running(strict):
        # An IP literal is refused when saved...
        response = strict.http.put(
            f"/v1/recipients/{unique('ssrf')}",
            json={"endpoints": [webhook(receiver.url(path, host="127.0.0.1"), secret)]},
        )
        assert_problem(response, 400, "egress-refused")

        # ...a host name is resolved (once) when sending, and refused then: dead, unsent.
        recipient = unique("ssrf")
        strict.put_recipient(recipient, webhook(receiver.url(path), secret))
        message_id = strict.publish(recipient, "to localhost")
        delivery = strict.wait_delivery(message_id, "webhook", {"dead"})
    assert delivery["attempts"] == 1
    assert "SSRF guard" in delivery["last_error"]
    assert receiver.requests(path) == []


# -- 6. crashes ---------------------------------------------------------------------------------


def kill_between_attempts(node: Node, message_ids: list[str]) -> dict[str, str]:
    """SIGKILL ``node`` at an instant when none of these deliveries is leased (in flight).

    The node is frozen with SIGSTOP and the database read: what is committed then is exactly
    what survives the SIGKILL. If a delivery is mid-attempt, the node runs on for a moment.
    """
    last: dict[str, str] = {}

    def probe() -> dict[str, str] | None:
        node.signal(signal.SIGSTOP)
        try:
            last.update(node.delivery_rows(message_ids))
        except sqlite3.OperationalError:
            last.clear()
        if len(last) == len(message_ids) and set(last.values()) == {"retrying"}:
            node.kill()
            return dict(last)
        node.signal(signal.SIGCONT)
        return None

    return wait_until(probe, lambda: f"no delivery in flight: {last}", WAIT)


def test_pending_deliveries_survive_a_crash(pki: Pki, node_factory: NodeFactory) -> None:
    crashy = Node.create(node_factory, "crash", **channel_settings(pki))
    port = node_factory.free_port()  # the receiver is down at first: nothing listens here
    secret = new_secret()
    path = f"/hook/{unique('marker')}"
    recipient = unique("crash")
    late: Receiver | None = None
    try:
        crashy.start()
        crashy.put_recipient(recipient, webhook(f"https://localhost:{port}{path}", secret))
        ids = [crashy.publish(recipient, f"crash {i}") for i in range(5)]
        for message_id in ids:
            crashy.wait_delivery(
                message_id, "webhook", {"retrying"}, until=lambda d: d["attempts"] >= 1
            )
        kill_between_attempts(crashy, ids)
        assert set(crashy.delivery_rows(ids).values()) == {"retrying"}

        late = Receiver(pki.server_context, port=port)
        late.add(secret, path=path)
        late.start()
        crashy.start()  # same data directory, a new node
        done = {m: crashy.wait_delivery(m, "webhook", {"delivered"}) for m in ids}
    finally:
        crashy.stop()
        if late is not None:
            late.stop()
    assert all(d["attempts"] >= 2 for d in done.values())
    seen = late.requests(path)
    assert all(s.error == "" for s in seen)
    # Nothing was in flight at the crash, so each delivery reached the receiver once.
    assert sorted(s.headers["webhook-id"] for s in seen) == sorted(d["id"] for d in done.values())
    assert {s.payload["id"] for s in seen} == set(ids)


def test_in_flight_deliveries_survive_a_crash(pki: Pki, node_factory: NodeFactory) -> None:
    # A short lease so the dead node's in-flight rows are reclaimed in seconds, not 60.
    crashy = Node.create(
        node_factory, "crash-flight", **channel_settings(pki), HERALD_DELIVERY_LEASE="4"
    )
    slow = Receiver(pki.server_context).start()
    secret = new_secret()
    path = slow.add(secret, hold=2.0)
    recipient = unique("flight")
    try:
        crashy.start()
        crashy.put_recipient(recipient, webhook(slow.url(path), secret))
        ids = [crashy.publish(recipient, f"in flight {i}") for i in range(5)]
        wait_until(
            lambda: True if len(slow.requests(path)) >= len(ids) else None,
            lambda: f"{len(ids)} requests held by the receiver",
            DELIVERY_WAIT,
        )
        crashy.kill()  # while the receiver still holds every answer
        assert set(crashy.delivery_rows(ids).values()) == {"sending"}
        crashy.start()
        done = {
            m: crashy.wait_delivery(m, "webhook", {"delivered"}, timeout=LEASE_WAIT) for m in ids
        }
    finally:
        crashy.stop()
        slow.stop()
    seen = slow.requests(path)
    assert all(s.error == "" for s in seen)
    # At least once: the lost attempt, then the retry, under the same de-duplication key.
    for delivery in done.values():
        assert [s.headers["webhook-id"] for s in seen].count(delivery["id"]) >= 2
    assert {s.payload["id"] for s in seen} == set(ids)


# -- 7. channel policy --------------------------------------------------------------------------


def test_channel_policy_selects_the_channels(node: Node, receiver: Receiver, smtp: Smtp) -> None:
    secret = new_secret()
    path = receiver.add(secret)
    recipient = unique("both")
    node.put_recipient(
        recipient,
        webhook(receiver.url(path), secret),
        {"channel": "email", "address": f"{recipient}@example.org"},
    )

    only_email = node.publish(recipient, "email only", channels=["email"])
    [delivery] = node.deliveries(only_email)
    assert delivery["channel"] == "email"
    delivery = node.wait_delivery(only_email, "email", {"delivered"})
    assert len(smtp.mailbox.for_delivery(delivery["id"])) == 1

    everywhere = node.publish(recipient, "every channel")
    assert sorted(d["channel"] for d in node.deliveries(everywhere)) == ["email", "webhook"]
    node.wait_delivery(everywhere, "email", {"delivered"})
    hooked = node.wait_delivery(everywhere, "webhook", {"delivered"})
    # The receiver only ever saw the unrestricted message.
    assert [s.headers["webhook-id"] for s in receiver.requests(path)] == [hooked["id"]]

    response = node.http.post(
        "/v1/messages",
        json={"topic": "alerts.e2e", "title": "x", "recipients": [recipient], "channels": ["nope"]},
    )
    problem = assert_problem(response, 400)
    assert "nope" in problem["detail"]
