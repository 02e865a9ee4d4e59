"""Browser tests of the web console and the inbox: Debian's Chromium driven by Playwright
against a real Herald server on loopback.

* The browser is never downloaded: Playwright launches the system Chromium
  (``HERALD_CHROMIUM``, else ``/usr/bin/chromium`` or ``chromium-browser``) with
  ``executable_path``. Without Playwright or a Chromium the tests skip with the reason —
  and fail instead under ``HERALD_REQUIRE_SERVICES=1`` (CI), like PostgreSQL and Redis.
* The server's certificate is trusted precisely, not by turning verification off: the
  browser gets ``--ignore-certificate-errors-spki-list=<base64 SHA-256 of the server
  certificate's SubjectPublicKeyInfo>``. Playwright's ``ignore_https_errors`` is not used
  because Chromium then still refuses to register a service worker from such an origin
  ("An unknown error occurred when fetching the script"); with the SPKI pin the origin
  counts as securely authenticated and the inbox's service worker registers.
* One Playwright and one browser per module (Playwright's sync API keeps an event loop
  running in this thread while it is active, so it is started and stopped per module,
  never left running into other modules' asyncio tests); a new browser context per test.
* The Python SDK's blocking clients run their own event loop, which cannot run while
  Playwright's loop is running in this thread: :class:`Sdk` runs them in a worker thread.
* ``HERALD_SCREENSHOT_DIR``: where the tests save PNGs of the pages (``make screenshots``).
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import shutil
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import tests.conftest as root
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tests.api.conftest import App, Node, NodeFactory, _node_factory

from herald.client import Publisher, PublishResult

T = TypeVar("T")

#: Where Chromium is looked for, in this order, after ``HERALD_CHROMIUM``.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
#: Bounded waits (milliseconds for Playwright, seconds for Python).
TIMEOUT_MS = 15_000
WAIT = 15.0
#: Console messages and errors that betray a CSP or Trusted Types problem.
POLICY_WORDS = (
    "content security policy",
    "trusted type",
    "trustedtype",
    "trustedhtml",
    "trustedscript",
    "refused to",
)


def chromium_executable() -> str | None:
    """The Chromium to drive: ``HERALD_CHROMIUM``, Debian's, or one on ``PATH``."""
    configured = os.environ.get("HERALD_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def spki_pin(url: str) -> str:
    """Base64 SHA-256 of the SubjectPublicKeyInfo of the certificate ``url`` presents."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    pem = ssl.get_server_certificate((host, int(port)), timeout=10)
    leaf = x509.load_pem_x509_certificate(pem.encode())
    spki = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def screenshot_dir() -> Path | None:
    """``HERALD_SCREENSHOT_DIR`` (created), or None when screenshots are not wanted."""
    configured = os.environ.get("HERALD_SCREENSHOT_DIR")
    if not configured:
        return None
    path = Path(configured)
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_screenshot(page: Any, name: str, *, full_page: bool = True) -> Path | None:
    """``<HERALD_SCREENSHOT_DIR>/<name>.png`` of ``page``, when screenshots are wanted."""
    directory = screenshot_dir()
    if directory is None:
        return None
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page, animations="disabled")
    return path


# -- the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    """Playwright's sync API, for one module; skips (or fails in CI) without it or Chromium."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        root.service_unavailable(f"Playwright is not installed ({exc}); pip install playwright")
    if chromium_executable() is None:
        configured = os.environ.get("HERALD_CHROMIUM")
        root.service_unavailable(
            f"no Chromium: HERALD_CHROMIUM={configured} is not an executable"
            if configured
            else "no Chromium: apt-get install chromium, or set HERALD_CHROMIUM "
            f"(looked for {', '.join(CHROMIUM_CANDIDATES)} and chromium on PATH)"
        )
    manager = sync_playwright()
    instance = manager.start()
    try:
        yield instance
    finally:
        # Stops the driver and closes Playwright's event loop before other modules run.
        manager.__exit__(None, None, None)


def launch(playwright: Any, *servers: Node) -> Any:
    """Chromium (headless) trusting exactly the certificates of ``servers``."""
    pins = ",".join(spki_pin(server.url) for server in servers)
    return playwright.chromium.launch(
        executable_path=chromium_executable(),
        headless=True,
        timeout=30_000,
        args=[f"--ignore-certificate-errors-spki-list={pins}"],
    )


@dataclass
class Tab:
    """A page of a fresh browser context, with everything it logged."""

    context: Any
    page: Any
    base_url: str
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sockets: list[Any] = field(default_factory=list)  # playwright WebSocket objects
    #: JSON frames each socket received (same index as ``sockets``), recorded from the
    #: moment the socket appears, so that no early frame (a replay) is missed.
    frames: list[list[dict[str, Any]]] = field(default_factory=list)

    def on_websocket(self, socket: Any) -> None:
        received: list[dict[str, Any]] = []
        socket.on("framereceived", lambda payload: received.append(json.loads(payload)))
        self.sockets.append(socket)
        self.frames.append(received)

    def goto(self, path: str) -> Any:
        return self.page.goto(self.base_url + path, wait_until="load")

    def violations(self) -> list[str]:
        """CSP / Trusted Types violations: reported events, console lines, page errors."""
        reported: list[str] = []
        try:
            reported = list(self.page.evaluate("() => globalThis.__policyViolations || []"))
        except Exception:  # the page navigated away or closed: the lines below still count
            reported = []
        logged = [
            line
            for line in self.console + self.errors
            if any(word in line.lower() for word in POLICY_WORDS)
        ]
        return reported + logged

    def pump(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        """Wait (bounded) until ``predicate()`` holds, letting Playwright deliver events.

        For conditions on Python-side event logs (WebSocket frames), which only grow while
        Playwright runs; page conditions use ``expect`` instead.
        """
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"condition not met in {timeout} s; the page logged: {self.console[-20:]}"
                    f" {self.errors[-5:]}"
                )
            self.page.wait_for_timeout(50)


#: Installed before any page script: records securitypolicyviolation events (CSP and
#: Trusted Types both report through it) where the test can read them.
_VIOLATION_RECORDER = """
globalThis.__policyViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  globalThis.__policyViolations.push(`${e.effectiveDirective} blocked ` +
    `${e.blockedURI || '(inline)'} at ${e.sourceFile}:${e.lineNumber}`);
});
"""


def new_tab(browser: Any, base_url: str, **context_options: Any) -> Tab:
    """A new context (own cookies, storage, service workers) and page of ``browser``."""
    context = browser.new_context(**context_options)
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script(_VIOLATION_RECORDER)
    page = context.new_page()
    tab = Tab(context, page, base_url)
    page.on("console", lambda m: tab.console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: tab.errors.append(f"pageerror: {e}"))
    page.on("websocket", tab.on_websocket)
    return tab


# -- the server and the SDK ----------------------------------------------------------------


@dataclass
class Sdk:
    """The blocking SDK (``herald.client.Publisher``) of one app, run in a worker thread.

    Publisher owns an asyncio event loop; Playwright's sync API keeps another one running
    in the test's thread, where a second loop cannot run, so every call is made in a
    thread of its own (the same one each time: a Publisher belongs to one thread).
    """

    node: Node
    app: App
    _pool: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(1, "herald-sdk")
    )
    _publisher: Publisher | None = None

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._pool.submit(fn, *args, **kwargs).result(timeout=60)

    def _open(self) -> Publisher:
        if self._publisher is None:
            self._publisher = Publisher(
                self.node.url,
                self.app.client_id,
                self.app.client_secret,
                ca=self.node.ca,
                signer=self.app.signer,
            )
        return self._publisher

    def publish(self, topic: str, **fields: Any) -> PublishResult:
        return self._call(lambda: self._open().publish(topic, **fields))

    def subscriber_token(self, recipient: str, topics: list[str], ttl: int | None = None) -> str:
        return str(
            self._call(lambda: self._open().subscriber_token(recipient, topics, ttl))["token"]
        )

    def revoke(self, token: str) -> None:
        self._call(lambda: self._open().revoke_token(token))

    def message(self, message_id: str) -> dict[str, Any]:
        return self._call(lambda: self._open().get_message(message_id))

    def recipient(self, recipient: str) -> dict[str, Any]:
        return self._call(lambda: self._open().get_recipient(recipient))

    def close(self) -> None:
        if self._publisher is not None:
            self._call(self._publisher.close)
            self._publisher = None
        self._pool.shutdown(wait=True)


def operator_node(factory: NodeFactory, **settings: str) -> Node:
    """A started server with a global operator ``root`` made by ``herald admin create``
    (its password in ``node.operators["root"]``) and the demo app of ``herald init``."""
    node = factory(name="console", start=False, **settings)
    node.add_operator("root")
    node.start()
    return node


@pytest.fixture(scope="module")
def console_node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    """The module's server (see :func:`operator_node`); a module may set ``NODE_SETTINGS``
    (``HERALD_*`` variables) for it."""
    for factory in _node_factory(tmp_path_factory):
        yield operator_node(factory, **getattr(request.module, "NODE_SETTINGS", {}))


@pytest.fixture
def console_node_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeFactory]:
    """Servers of a test's own (other settings), stopped when the test ends."""
    yield from _node_factory(tmp_path_factory)


@pytest.fixture(scope="module")
def browser(playwright: Any, console_node: Node) -> Iterator[Any]:
    """One headless Chromium per module, trusting the module server's certificate."""
    instance = launch(playwright, console_node)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def tab(browser: Any, console_node: Node) -> Iterator[Tab]:
    """A fresh context and page; fails the test on any CSP / Trusted Types violation."""
    opened = new_tab(browser, console_node.url)
    try:
        yield opened
        assert opened.violations() == [], opened.violations()
    finally:
        opened.context.close()


@pytest.fixture(scope="module")
def sdk(console_node: Node) -> Iterator[Sdk]:
    """The SDK as the demo app (signed requests), for publishing and subscriber tokens."""
    client = Sdk(console_node, console_node.demo)
    try:
        yield client
    finally:
        client.close()
