"""The Apprise channel against real receivers on loopback: plain HTTP and trustme HTTPS.

Apprise makes its own connections with ``requests``, which cannot be handed an SSL context;
it verifies certificates against ``REQUESTS_CA_BUNDLE`` when that is set, so the HTTPS test
points that variable at the trustme CA — verification stays on, and a test with another CA
shows the delivery is refused.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import trustme
from tests.channels.peers import TlsServer

from herald.channels import apprise as apprise_channel
from herald.channels.apprise import (
    DEFAULT_HOSTED_SCHEMES,
    DEFAULT_SERVICE_SCHEMES,
    AppriseChannel,
)
from herald.channels.base import Channel, Delivered, DeliveryJob, Failed, Retry, redact_endpoint
from herald.channels.egress import EgressPolicy
from herald.errors import BadRequest

pytestmark = pytest.mark.timeout(30)

TOKEN = "9d41c0e7a2b35f68"  # made-up credential, looked for in every error message
UNREACHABLE = Retry("the Apprise target refused or was unreachable")
REFUSED = Failed("destination refused by the SSRF guard")


# -- the receiver ---------------------------------------------------------------------------


@dataclass
class Captured:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A loopback HTTP(S) server answering every POST with ``status`` (after ``delay``)."""

    port: int = 0
    status: int = 200
    answer_headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    release: threading.Event = field(default_factory=threading.Event)
    requests: list[Captured] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: TlsServer

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {key.lower(): value for key, value in self.headers.items()}
        receiver.requests.append(Captured(self.path, headers, body))
        if receiver.delay:
            receiver.release.wait(receiver.delay)
        self.send_response(receiver.status)
        for name, value in receiver.answer_headers.items():
            self.send_header(name, value)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass


def _serve(ctx: ssl.SSLContext | None) -> Iterator[Receiver]:
    state = Receiver()
    server = TlsServer(ctx, state, _Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests reads these; a proxy or a CA bundle from the developer's shell must not leak in.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture
def channel(policy: EgressPolicy) -> AppriseChannel:
    return AppriseChannel(policy, timeout=10.0)


@pytest.fixture
def http_receiver() -> Iterator[Receiver]:
    yield from _serve(None)


@pytest.fixture
def https_receiver(ca: trustme.CA) -> Iterator[Receiver]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(ctx)
    yield from _serve(ctx)


def make_job(endpoint: dict[str, Any], **changes: Any) -> DeliveryJob:
    job = DeliveryJob(
        delivery_id="dlv_01HZX3Q9W7",
        message_id="0190f3c4-1b2a-7c3d-8e4f-5a6b7c8d9e0f",
        tenant_id="acme",
        recipient="user-42",
        topic="orders.shipped",
        attempt=1,
        title="Your order shipped",
        body="Parcel 7 is on its way — ünïcode too",
        html=None,
        data={"order": 7},
        priority="normal",
        created_at="2026-03-01T12:00:00Z",
        ttl=3600,
        endpoint=endpoint,
    )
    return dataclasses.replace(job, **changes)


# -- the plugin interface -------------------------------------------------------------------


def test_channel_declares_the_plugin_interface(channel: AppriseChannel) -> None:
    plugin: Channel = channel
    assert plugin.name == "apprise"
    assert plugin.concurrency == 4
    assert plugin.secret_fields == ("url",)
    endpoint = channel.validate({"url": f"jsons://user:{TOKEN}@push.example.com/hook"})
    assert redact_endpoint(plugin, endpoint) == {"url": "[redacted]"}


def test_exported_names() -> None:
    assert set(apprise_channel.__all__) == {
        "DEFAULT_HOSTED_SCHEMES",
        "DEFAULT_SERVICE_SCHEMES",
        "URL_MAX",
        "AppriseChannel",
    }
    for name in apprise_channel.__all__:
        assert hasattr(apprise_channel, name)


def test_the_default_allow_list(channel: AppriseChannel) -> None:
    assert {"json", "jsons", "xml", "xmls", "form", "forms"} <= DEFAULT_HOSTED_SCHEMES
    assert channel.schemes == DEFAULT_HOSTED_SCHEMES | DEFAULT_SERVICE_SCHEMES
    local = {"file", "windows", "macosx", "dbus", "gnome", "glib", "syslog", "rsyslog"}
    assert not local & channel.schemes
    assert channel.validate({"url": f"discord://1234567890/{TOKEN}"}) == {
        "url": f"discord://1234567890/{TOKEN}"
    }


# -- deliveries -----------------------------------------------------------------------------


async def test_json_delivery_over_http_to_an_allow_listed_receiver(
    channel: AppriseChannel, http_receiver: Receiver
) -> None:
    endpoint = channel.validate({"url": f"json://127.0.0.1:{http_receiver.port}/notify"})

    assert await channel.deliver(make_job(endpoint)) == Delivered("accepted by the Apprise target")

    [request] = http_receiver.requests
    assert request.path == "/notify"
    doc = request.json()
    assert doc["title"] == "Your order shipped"
    assert doc["message"] == "Parcel 7 is on its way — ünïcode too"
    assert doc["type"] == "info"


async def test_jsons_delivery_verifies_the_certificate(
    channel: AppriseChannel,
    https_receiver: Receiver,
    ca_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))  # requests' CA, verification on
    endpoint = channel.validate({"url": f"jsons://localhost:{https_receiver.port}/hook"})

    assert await channel.deliver(make_job(endpoint, body=None)) == Delivered(
        "accepted by the Apprise target"
    )

    [request] = https_receiver.requests
    doc = request.json()
    assert (doc["title"], doc["message"]) == ("", "Your order shipped")


async def test_jsons_with_an_untrusted_certificate_is_not_delivered(
    channel: AppriseChannel,
    https_receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    endpoint = channel.validate({"url": f"jsons://localhost:{https_receiver.port}/hook"})
    assert await channel.deliver(make_job(endpoint)) == UNREACHABLE
    assert https_receiver.requests == []


async def test_a_refusal_is_retried(channel: AppriseChannel, http_receiver: Receiver) -> None:
    http_receiver.status = 503
    endpoint = channel.validate({"url": f"json://127.0.0.1:{http_receiver.port}/"})
    assert await channel.deliver(make_job(endpoint)) == UNREACHABLE


async def test_redirects_are_not_followed_even_when_the_url_asks(
    channel: AppriseChannel, http_receiver: Receiver
) -> None:
    http_receiver.status = 307
    http_receiver.answer_headers = {"location": f"http://127.0.0.1:{http_receiver.port}/moved"}
    url = f"json://127.0.0.1:{http_receiver.port}/hook?redirect=yes"
    assert await channel.deliver(make_job(channel.validate({"url": url}))) == UNREACHABLE
    assert [request.path for request in http_receiver.requests] == ["/hook"]


async def test_a_slow_target_times_out(policy: EgressPolicy, http_receiver: Receiver) -> None:
    http_receiver.delay = 10.0
    channel = AppriseChannel(policy, timeout=0.5)
    endpoint = channel.validate({"url": f"json://127.0.0.1:{http_receiver.port}/"})
    assert await channel.deliver(make_job(endpoint)) == Retry("the Apprise target timed out")


async def test_form_and_xml_receivers(channel: AppriseChannel, http_receiver: Receiver) -> None:
    for scheme in ("form", "xml"):
        endpoint = channel.validate({"url": f"{scheme}://127.0.0.1:{http_receiver.port}/"})
        assert await channel.deliver(make_job(endpoint)) == Delivered(
            "accepted by the Apprise target"
        )
    form, xml = http_receiver.requests
    assert parse_qs(form.body.decode())["message"] == ["Parcel 7 is on its way — ünïcode too"]
    assert b"Your order shipped" in xml.body


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "apprise scheme 'file' is not allowed"),
        ("windows://", "apprise scheme 'windows' is not allowed"),
        ("macosx://", "apprise scheme 'macosx' is not allowed"),
        ("dbus://", "apprise scheme 'dbus' is not allowed"),
        ("syslog://", "apprise scheme 'syslog' is not allowed"),
        (f"mailto://user:{TOKEN}@example.com", "apprise scheme 'mailto' is not allowed"),
        (f"JSON://user:{TOKEN}@push.example.com/?verify=no", "verify=no"),
        (f"json://push.example.com/{TOKEN} json://other.example.com/", "ASCII without spaces"),
        (f"json://push.example.com/{TOKEN},json://other.example.com/", "not a valid Apprise"),
        ("json://", "not a valid Apprise URL"),
        (f"no-scheme-{TOKEN}", "not a valid Apprise URL"),
        (f"https://push.example.com/{TOKEN}", "apprise scheme 'https' is not allowed"),
        (f"jsons://169.254.169.254/{TOKEN}", "not a public address"),
        (f"json://10.1.2.3/{TOKEN}", "not a public address"),
        (f"json://93.184.215.14/{TOKEN}", "only https"),
        (f"jsons://2130706433/{TOKEN}", "ambiguous IP literal"),
        (f"jsons://0x7f.1/{TOKEN}", "not a valid Apprise URL"),
        ("", "apprise url is required"),
    ],
)
def test_validate_refuses_without_echoing_the_url(
    channel: AppriseChannel, url: str, message: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        channel.validate({"url": url})
    assert message in caught.value.detail
    assert TOKEN not in caught.value.detail
    assert TOKEN not in str(caught.value.extra)


def test_validate_refuses_unknown_fields_and_non_objects(channel: AppriseChannel) -> None:
    with pytest.raises(BadRequest, match="unknown apprise endpoint fields: secret"):
        channel.validate({"url": "jsons://push.example.com/", "secret": TOKEN})
    with pytest.raises(BadRequest, match="must be an object"):
        channel.validate("jsons://push.example.com/")  # type: ignore[arg-type]
    with pytest.raises(BadRequest, match="required"):
        channel.validate({"url": 7})


async def test_loopback_without_the_allow_list_is_refused(
    ca_file: Path, http_receiver: Receiver, https_receiver: Receiver
) -> None:
    channel = AppriseChannel(EgressPolicy(ca_file=ca_file))  # nothing allow-listed
    with pytest.raises(BadRequest, match="not a public address"):
        channel.validate({"url": f"json://127.0.0.1:{http_receiver.port}/"})
    # A name is checked when it is resolved, before Apprise connects.
    endpoint = channel.validate({"url": f"jsons://localhost:{https_receiver.port}/"})
    assert await channel.deliver(make_job(endpoint)) == REFUSED
    # A stored endpoint that the policy now refuses fails without a connection.
    stored = {"url": f"json://127.0.0.1:{http_receiver.port}/"}
    outcome = await channel.deliver(make_job(stored))
    assert isinstance(outcome, Failed)
    assert outcome.reason.startswith("invalid apprise endpoint")
    assert http_receiver.requests == https_receiver.requests == []


async def test_refused_scheme_fails_at_delivery(channel: AppriseChannel) -> None:
    outcome = await channel.deliver(make_job({"url": "file:///etc/passwd"}))
    assert outcome == Failed("invalid apprise endpoint: apprise scheme 'file' is not allowed")


async def test_unresolvable_host_is_retried(channel: AppriseChannel) -> None:
    endpoint = channel.validate({"url": "jsons://herald-test.invalid/"})
    assert await channel.deliver(make_job(endpoint)) == Retry(
        "the Apprise target's host does not resolve"
    )


# -- operator-added schemes -----------------------------------------------------------------


async def test_operators_can_add_hosted_schemes(
    policy: EgressPolicy, http_receiver: Receiver
) -> None:
    url = f"ntfy://127.0.0.1:{http_receiver.port}/alerts"
    with pytest.raises(BadRequest, match="'ntfy' is not allowed"):
        AppriseChannel(policy).validate({"url": url})
    channel = AppriseChannel(policy, hosted_schemes=["NTFY"])
    assert "ntfy" in channel.schemes
    assert await channel.deliver(make_job(channel.validate({"url": url}))) == Delivered(
        "accepted by the Apprise target"
    )
    assert http_receiver.requests[0].json()["topic"] == "alerts"
    # Hosted means checked: the same scheme towards a private address is refused.
    with pytest.raises(BadRequest, match="not a public address"):
        channel.validate({"url": "ntfy://10.0.0.8/alerts"})


def test_operators_can_add_service_schemes(policy: EgressPolicy) -> None:
    channel = AppriseChannel(policy, service_schemes=["msteams"])
    assert "msteams" in channel.schemes
    with pytest.raises(ValueError, match="letters and digits"):
        AppriseChannel(policy, hosted_schemes=["js-on"])
    with pytest.raises(ValueError, match="positive"):
        AppriseChannel(policy, timeout=0)
