"""IM robot channels against real HTTPS receivers on loopback, with trustme certificates.

Each receiver plays the service: the DingTalk and Feishu ones verify the signature the way
those services document it (their own code below, not Herald's: the expected ``sign`` is
computed from the shared secret and the *received* timestamp, and a timestamp more than an
hour off is refused) and answer with the service's JSON result codes; the WeCom and Slack
ones check the body's shape. Channels are built with ``allow_any_host=True`` to reach them.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme
from tests.channels.peers import LOOPBACK, TlsServer

from herald.channels import robots
from herald.channels.base import Channel, Delivered, DeliveryJob, Failed, Retry, redact_endpoint
from herald.channels.egress import EgressPolicy
from herald.channels.robots import (
    DINGTALK_TEXT_MAX_BYTES,
    FEISHU_REQUEST_MAX_BYTES,
    RATE_LIMIT_RETRY_AFTER,
    SLACK_TEXT_MAX,
    USER_AGENT,
    WECOM_MARKDOWN_MAX_BYTES,
    DingTalkChannel,
    FeishuChannel,
    RobotChannel,
    SlackChannel,
    WeComChannel,
    dingtalk_sign,
    feishu_sign,
    slack_escape,
)
from herald.errors import BadRequest

pytestmark = pytest.mark.timeout(30)

TOKEN = "3f9c2e7a41b0d6c58e1f"  # made-up robot token, looked for in every error message
DING_SECRET = "SEC" + "5a0c9e1b7d3f" * 5 + "0a1b"
FEISHU_SECRET = "qvLRfKHxOHgh3vSoBq1kCe"
HOUR = 3600
DING = f"https://oapi.dingtalk.com/robot/send?access_token={TOKEN}"
FEISHU = f"https://open.feishu.cn/open-apis/bot/v2/hook/{TOKEN}"
WECOM = f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={TOKEN}"
SLACK = f"https://hooks.slack.com/services/T000/B000/{TOKEN}"
EVIL = ".evil.example"


# -- the receiver ---------------------------------------------------------------------------


@dataclass
class Captured:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Reply = tuple[int, dict[str, str], bytes]


def answer(doc: Any, status: int = 200, **headers: str) -> Reply:
    return status, {"content-type": "application/json", **headers}, json.dumps(doc).encode()


@dataclass
class Receiver:
    """A loopback HTTPS server; ``service`` plays the robot API and decides each answer."""

    port: int = 0
    service: Callable[[Captured], Reply] = lambda _: answer({"errcode": 0})
    requests: list[Captured] = field(default_factory=list)

    def url(self, path: str = "/robot/send", query: str = f"access_token={TOKEN}") -> str:
        return f"https://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")


class _Handler(BaseHTTPRequestHandler):
    server: TlsServer

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        parts = urlsplit(self.path)
        captured = Captured(
            parts.path,
            parse_qs(parts.query, keep_blank_values=True),
            {key.lower(): value for key, value in self.headers.items()},
            body,
        )
        receiver.requests.append(captured)
        status, headers, content = receiver.service(captured)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass


@pytest.fixture
def receiver(ca: trustme.CA) -> Iterator[Receiver]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    state = Receiver()
    server = TlsServer(ctx, state, _Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


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


# -- the services, as their documentation describes them ------------------------------------


def dingtalk_service(secret: str | None) -> Callable[[Captured], Reply]:
    """DingTalk custom robot: token in the query; with 加签, timestamp (ms) and sign too."""

    def serve(request: Captured) -> Reply:
        if request.query.get("access_token") != [TOKEN]:
            return answer({"errcode": 300001, "errmsg": "token is not exist"})
        if secret is not None:
            # parse_qs has already url-decoded sign, as DingTalk does ("+" would be a space).
            stamp = request.query.get("timestamp", ["0"])[0]
            sign = request.query.get("sign", [""])[0]
            mac = hmac.new(secret.encode(), f"{stamp}\n{secret}".encode(), hashlib.sha256)
            expected = base64.b64encode(mac.digest()).decode()
            fresh = abs(time.time() * 1000 - int(stamp)) <= HOUR * 1000
            if not (fresh and hmac.compare_digest(sign, expected)):
                return answer({"errcode": 310000, "errmsg": "sign not match"})
        doc = request.json()
        markdown = doc.get("markdown", {})
        if doc.get("msgtype") != "markdown" or not markdown.get("title") or not markdown["text"]:
            return answer({"errcode": 40035, "errmsg": "缺少参数 json"})
        return answer({"errcode": 0, "errmsg": "ok"})

    return serve


def feishu_service(secret: str | None, ok: Any = None) -> Callable[[Captured], Reply]:
    """Feishu custom bot: with signature verification, timestamp (s) and sign in the body."""

    def serve(request: Captured) -> Reply:
        doc = request.json()
        if secret is not None:
            stamp = str(doc.get("timestamp", "0"))
            # Feishu signs the empty string, keyed with "timestamp\nsecret".
            mac = hmac.new(f"{stamp}\n{secret}".encode(), b"", hashlib.sha256)
            expected = base64.b64encode(mac.digest()).decode()
            fresh = abs(time.time() - int(stamp)) <= HOUR
            if not (fresh and hmac.compare_digest(str(doc.get("sign", "")), expected)):
                return answer(
                    {"code": 19021, "msg": "sign match fail or timestamp is not within one hour"}
                )
        if doc.get("msg_type") != "text" or not isinstance(doc["content"].get("text"), str):
            return answer({"code": 9499, "msg": "Bad Request"}, status=400)
        return answer(ok if ok is not None else {"code": 0, "data": {}, "msg": "success"})

    return serve


def wecom_service(request: Captured) -> Reply:
    if request.query.get("key") != [TOKEN]:
        return answer({"errcode": 93000, "errmsg": "invalid webhook url"})
    doc = request.json()
    if set(doc) != {"msgtype", "markdown"} or set(doc["markdown"]) != {"content"}:
        return answer({"errcode": 40008, "errmsg": "invalid message type"})
    return answer({"errcode": 0, "errmsg": "ok"})


def slack_service(request: Captured) -> Reply:
    doc = request.json()
    if set(doc) != {"text"} or not isinstance(doc["text"], str):
        return 400, {"content-type": "text/plain"}, b"invalid_payload"
    return 200, {"content-type": "text/plain"}, b"ok"


def fixed(status: int, body: bytes, **headers: str) -> Callable[[Captured], Reply]:
    return lambda _: (status, {"content-type": "text/plain", **headers}, body)


# -- the plugin interface -------------------------------------------------------------------


ROBOTS: list[type[RobotChannel]] = [DingTalkChannel, FeishuChannel, WeComChannel, SlackChannel]


@pytest.mark.parametrize("kind", ROBOTS)
def test_robots_declare_the_plugin_interface(
    kind: type[RobotChannel], policy: EgressPolicy
) -> None:
    plugin: Channel = kind(policy)
    assert plugin.concurrency == 16
    assert plugin.secret_fields == ("webhook", "secret")
    webhook = {DingTalkChannel: DING, FeishuChannel: FEISHU, WeComChannel: WECOM}.get(kind, SLACK)
    endpoint = plugin.validate({"webhook": webhook})
    assert endpoint == {"webhook": webhook}
    assert redact_endpoint(plugin, endpoint) == {"webhook": "[redacted]"}


def test_exported_names() -> None:
    assert set(robots.__all__) == {
        "DINGTALK_TEXT_MAX_BYTES", "FEISHU_REQUEST_MAX_BYTES", "RATE_LIMIT_RETRY_AFTER",
        "SLACK_TEXT_MAX", "USER_AGENT", "WECOM_MARKDOWN_MAX_BYTES", "DingTalkChannel",
        "FeishuChannel", "RobotChannel", "SlackChannel", "WeComChannel", "dingtalk_sign",
        "feishu_sign", "slack_escape",
    }  # fmt: skip
    for name in robots.__all__:
        assert hasattr(robots, name)


def test_robot_names() -> None:
    assert [kind.name for kind in ROBOTS] == ["dingtalk", "feishu", "wecom", "slack"]


def test_lark_host_is_a_feishu_host(policy: EgressPolicy) -> None:
    url = f"https://open.larksuite.com/open-apis/bot/v2/hook/{TOKEN}"
    endpoint = FeishuChannel(policy).validate({"webhook": url, "secret": FEISHU_SECRET})
    assert endpoint == {"webhook": url, "secret": FEISHU_SECRET}
    assert redact_endpoint(FeishuChannel(policy), endpoint)["secret"] == "[redacted]"


# -- validation refusals --------------------------------------------------------------------


REFUSED: list[tuple[type[RobotChannel], dict[str, Any], str]] = [
    (DingTalkChannel, {"webhook": DING.replace("oapi.dingtalk.com", "evil.example")},
     "must start with https://oapi.dingtalk.com/"),
    (DingTalkChannel, {"webhook": DING.replace("https:", "http:")}, "https"),
    (DingTalkChannel, {"webhook": DING.replace(".com/", ".com:8443/")}, "must start with"),
    (DingTalkChannel, {"webhook": DING.replace(".com/", f".com{EVIL}/")}, "must start with"),
    (DingTalkChannel, {"webhook": DING.replace("https://", f"https://{TOKEN}@")}, "credentials"),
    (DingTalkChannel, {"webhook": "https://oapi.dingtalk.com/robot/send"}, "no access_token"),
    (DingTalkChannel, {"webhook": DING + "&sign=x"}, "set secret"),
    (DingTalkChannel, {"webhook": DING, "secret": "not-a-sec-" + TOKEN}, "'SEC…'"),
    (DingTalkChannel, {"webhook": DING, "secret": 12}, "must be a string"),
    (DingTalkChannel, {"webhook": DING, "token": TOKEN}, "unknown DingTalk endpoint fields: token"),
    (DingTalkChannel, {"webhook": DING + "#frag"}, "fragment"),
    (DingTalkChannel, {"webhook": DING + " x"}, "ASCII"),
    (DingTalkChannel, {}, "required"),
    (FeishuChannel, {"webhook": FEISHU.replace(".cn/", f".cn{EVIL}/")},
     "open.feishu.cn/ or https://open.larksuite.com/"),
    (FeishuChannel, {"webhook": FEISHU, "secret": f"{TOKEN}!"}, "letters-and-digits"),
    (FeishuChannel, {"webhook": "https://open.feishu.cn/"}, "no robot token"),
    (WeComChannel, {"webhook": WECOM, "secret": TOKEN}, "unknown WeCom endpoint fields: secret"),
    (WeComChannel, {"webhook": WECOM.removesuffix(TOKEN)}, "no key"),
    (WeComChannel, {"webhook": WECOM.replace(".com/", f".com{EVIL}/")},
     "must start with https://qyapi.weixin.qq.com/"),
    (SlackChannel, {"webhook": SLACK.replace(".com/", f".com{EVIL}/")},
     "must start with https://hooks.slack.com/"),
    (SlackChannel, {"webhook": SLACK.replace("https:", "ftp:")}, "https"),
    (SlackChannel, {"webhook": SLACK, "secret": "abcdefgh1"},
     "unknown Slack endpoint fields: secret"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "endpoint", "message"), REFUSED)
def test_validate_refuses_without_echoing_the_token(
    kind: type[RobotChannel], endpoint: dict[str, Any], message: str, policy: EgressPolicy
) -> None:
    with pytest.raises(BadRequest) as caught:
        kind(policy).validate(endpoint)
    assert message in caught.value.detail
    assert TOKEN not in caught.value.detail
    assert TOKEN not in str(caught.value.extra)


def test_validate_refuses_a_non_object(policy: EgressPolicy) -> None:
    with pytest.raises(BadRequest, match="must be an object"):
        SlackChannel(policy).validate(["https://hooks.slack.com/services/x"])  # type: ignore[arg-type]


def test_allow_any_host_still_applies_the_egress_policy(ca_file: Path) -> None:
    strict = EgressPolicy(ca_file=ca_file)  # nothing allow-listed
    channel = SlackChannel(strict, allow_any_host=True)
    assert channel.validate({"webhook": "https://relay.example/hook/x"}) == {
        "webhook": "https://relay.example/hook/x"
    }
    for url in ("https://127.0.0.1/hook/x", "https://169.254.169.254/hook/x"):
        with pytest.raises(BadRequest, match="not a public address"):
            channel.validate({"webhook": url})
    with pytest.raises(BadRequest, match="refused"):
        channel.validate({"webhook": "http://10.0.0.1/hook"})


# -- signing known answers ------------------------------------------------------------------


def test_dingtalk_sign_matches_the_documented_recipe() -> None:
    # DingTalk's Python sample: quote_plus(b64encode(hmac(secret, f"{ts}\n{secret}")))
    mac = hmac.new(b"this is secret", b"1577262236757\nthis is secret", hashlib.sha256).digest()
    expected = base64.b64encode(mac).decode().replace("+", "%2B").replace("/", "%2F")
    assert dingtalk_sign("this is secret", 1577262236757) == expected.replace("=", "%3D")


def test_feishu_sign_keys_the_hmac_with_timestamp_and_secret() -> None:
    mac = hmac.new(b"1599360473\ndemo", b"", hashlib.sha256).digest()
    assert feishu_sign("demo", 1599360473) == base64.b64encode(mac).decode()
    reversed_order = hmac.new(b"demo", b"1599360473\ndemo", hashlib.sha256).digest()
    assert feishu_sign("demo", 1599360473) != base64.b64encode(reversed_order).decode()


def test_slack_escape() -> None:
    assert slack_escape("a & b <@U123> > c \"'*") == "a &amp; b &lt;@U123&gt; &gt; c \"'*"


# -- DingTalk -------------------------------------------------------------------------------


async def test_dingtalk_signed_delivery(policy: EgressPolicy, receiver: Receiver) -> None:
    receiver.service = dingtalk_service(DING_SECRET)
    channel = DingTalkChannel(policy, allow_any_host=True)
    endpoint = channel.validate({"webhook": receiver.url(), "secret": DING_SECRET})

    assert await channel.deliver(make_job(endpoint)) == Delivered("HTTP 200")

    [request] = receiver.requests
    assert request.path == "/robot/send"
    assert abs(int(request.query["timestamp"][0]) - time.time() * 1000) < 60_000
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert request.headers["user-agent"] == USER_AGENT
    assert request.json() == {
        "msgtype": "markdown",
        "markdown": {
            "title": "Your order shipped",
            "text": "### Your order shipped\n\nParcel 7 is on its way — ünïcode too",
        },
    }


async def test_dingtalk_sign_is_url_encoded(policy: EgressPolicy, receiver: Receiver) -> None:
    # A timestamp whose signature holds "+", "/" and "=": sent raw, the receiver would read
    # "+" as a space and refuse it.
    now = int(time.time() * 1000)
    stamp = next(t for t in range(now, now + 100_000) if "%2B" in dingtalk_sign(DING_SECRET, t))
    receiver.service = dingtalk_service(DING_SECRET)
    channel = DingTalkChannel(policy, clock=lambda: stamp / 1000, allow_any_host=True)
    endpoint = channel.validate({"webhook": receiver.url(), "secret": DING_SECRET})
    assert await channel.deliver(make_job(endpoint)) == Delivered("HTTP 200")
    assert "+" in receiver.requests[0].query["sign"][0]
    assert receiver.requests[0].query["timestamp"] == [str(stamp)]


async def test_dingtalk_wrong_secret_is_refused(policy: EgressPolicy, receiver: Receiver) -> None:
    receiver.service = dingtalk_service(DING_SECRET)
    channel = DingTalkChannel(policy, allow_any_host=True)
    endpoint = channel.validate({"webhook": receiver.url(), "secret": "SEC" + "0" * 64})
    outcome = await channel.deliver(make_job(endpoint))
    assert outcome == Failed("DingTalk refused the message (code 310000)")


async def test_dingtalk_stale_timestamp_is_refused(
    policy: EgressPolicy, receiver: Receiver
) -> None:
    receiver.service = dingtalk_service(DING_SECRET)
    late = DingTalkChannel(policy, clock=lambda: time.time() - 2 * HOUR, allow_any_host=True)
    endpoint = late.validate({"webhook": receiver.url(), "secret": DING_SECRET})
    assert await late.deliver(make_job(endpoint)) == Failed(
        "DingTalk refused the message (code 310000)"
    )


async def test_dingtalk_unsigned(policy: EgressPolicy, receiver: Receiver) -> None:
    receiver.service = dingtalk_service(None)
    channel = DingTalkChannel(policy, allow_any_host=True)
    endpoint = channel.validate({"webhook": receiver.url()})
    assert await channel.deliver(make_job(endpoint, title=None)) == Delivered("HTTP 200")
    [request] = receiver.requests
    assert set(request.query) == {"access_token"}
    # Without a title the preview falls back to the topic and the text is the body alone.
    assert request.json()["markdown"] == {
        "title": "orders.shipped",
        "text": "Parcel 7 is on its way — ünïcode too",
    }


async def test_dingtalk_rate_limit_is_retried(policy: EgressPolicy, receiver: Receiver) -> None:
    receiver.service = lambda _: answer({"errcode": 130101, "errmsg": "send too fast"})
    channel = DingTalkChannel(policy, allow_any_host=True)
    endpoint = channel.validate({"webhook": receiver.url()})
    outcome = await channel.deliver(make_job(endpoint))
    assert outcome == Retry("DingTalk rate limit (code 130101)", after=RATE_LIMIT_RETRY_AFTER)
    assert RATE_LIMIT_RETRY_AFTER == 60


async def test_dingtalk_text_is_capped(policy: EgressPolicy, receiver: Receiver) -> None:
    channel = DingTalkChannel(policy, allow_any_host=True)
    endpoint = channel.validate({"webhook": receiver.url()})
    assert await channel.deliver(make_job(endpoint, body="漢" * 10_000)) == Delivered("HTTP 200")
    text = receiver.requests[0].json()["markdown"]["text"]
    assert len(text.encode()) <= DINGTALK_TEXT_MAX_BYTES
    assert len(text.encode()) > DINGTALK_TEXT_MAX_BYTES - 8
    assert text.startswith("### Your order shipped\n\n漢")
    assert text.endswith("漢…")


# -- Feishu ---------------------------------------------------------------------------------


async def test_feishu_signed_delivery(policy: EgressPolicy, receiver: Receiver) -> None:
    receiver.service = feishu_service(FEISHU_SECRET)
    channel = FeishuChannel(policy, allow_any_host=True)
    url = receiver.url(f"/open-apis/bot/v2/hook/{TOKEN}", query="")
    endpoint = channel.validate({"webhook": url, "secret": FEISHU_SECRET})

    assert await channel.deliver(make_job(endpoint)) == Delivered("HTTP 200")

    [request] = receiver.requests
    doc = request.json()
    assert request.path == f"/open-apis/bot/v2/hook/{TOKEN}"
    assert doc["msg_type"] == "text"
    assert doc["content"] == {"text": "Your order shipped\nParcel 7 is on its way — ünïcode too"}
    assert isinstance(doc["timestamp"], str)
    assert abs(int(doc["timestamp"]) - time.time()) < 60


async def test_feishu_wrong_secret_is_refused(policy: EgressPolicy, receiver: Receiver) -> None:
    receiver.service = feishu_service(FEISHU_SECRET)
    channel = FeishuChannel(policy, allow_any_host=True)
    url = receiver.url(f"/open-apis/bot/v2/hook/{TOKEN}", query="")
    endpoint = channel.validate({"webhook": url, "secret": "WrongSecret0123456789"})
    assert await channel.deliver(make_job(endpoint)) == Failed(
        "Feishu refused the message (code 19021)"
    )


async def test_feishu_unsigned_and_the_older_answer(
    policy: EgressPolicy, receiver: Receiver
) -> None:
    older = {"Extra": None, "StatusCode": 0, "StatusMessage": "success"}
    receiver.service = feishu_service(None, ok=older)
    channel = FeishuChannel(policy, allow_any_host=True)
    endpoint = channel.validate({"webhook": receiver.url(f"/hook/{TOKEN}", query="")})
    assert await channel.deliver(make_job(endpoint, body=None)) == Delivered("HTTP 200")
    doc = receiver.requests[0].json()
    assert doc == {"msg_type": "text", "content": {"text": "Your order shipped"}}


@pytest.mark.parametrize("code", [9499, 11232])
async def test_feishu_rate_limits_are_retried(
    code: int, policy: EgressPolicy, receiver: Receiver
) -> None:
    receiver.service = lambda _: answer({"code": code, "msg": "too many request"})
    channel = FeishuChannel(policy, allow_any_host=True)
    endpoint = channel.validate({"webhook": receiver.url(f"/hook/{TOKEN}", query="")})
    outcome = await channel.deliver(make_job(endpoint))
    assert outcome == Retry(f"Feishu rate limit (code {code})", after=60.0)


async def test_feishu_request_is_capped(policy: EgressPolicy, receiver: Receiver) -> None:
    receiver.service = feishu_service(FEISHU_SECRET)
    channel = FeishuChannel(policy, allow_any_host=True)
    url = receiver.url(f"/hook/{TOKEN}", query="")
    endpoint = channel.validate({"webhook": url, "secret": FEISHU_SECRET})
    body = 'quote " and newline\n and ü — ' * 2_000  # escapes and multi-byte characters
    assert await channel.deliver(make_job(endpoint, body=body)) == Delivered("HTTP 200")
    [request] = receiver.requests
    assert FEISHU_REQUEST_MAX_BYTES - 16 < len(request.body) <= FEISHU_REQUEST_MAX_BYTES
    assert request.json()["content"]["text"].endswith("…")


# -- WeCom ----------------------------------------------------------------------------------


async def test_wecom_delivery(policy: EgressPolicy, receiver: Receiver) -> None:
    receiver.service = wecom_service
    channel = WeComChannel(policy, allow_any_host=True)
    url = receiver.url("/cgi-bin/webhook/send", query=f"key={TOKEN}")
    endpoint = channel.validate({"webhook": url})
    assert await channel.deliver(make_job(endpoint)) == Delivered("HTTP 200")
    assert receiver.requests[0].json() == {
        "msgtype": "markdown",
        "markdown": {"content": "**Your order shipped**\nParcel 7 is on its way — ünïcode too"},
    }


async def test_wecom_markdown_is_capped(policy: EgressPolicy, receiver: Receiver) -> None:
    receiver.service = wecom_service
    channel = WeComChannel(policy, allow_any_host=True)
    endpoint = channel.validate({"webhook": receiver.url("/send", query=f"key={TOKEN}")})
    assert await channel.deliver(make_job(endpoint, body="ü" * 5_000)) == Delivered("HTTP 200")
    content = receiver.requests[0].json()["markdown"]["content"]
    assert WECOM_MARKDOWN_MAX_BYTES - 4 < len(content.encode()) <= WECOM_MARKDOWN_MAX_BYTES
    assert content.startswith("**Your order shipped**\nü")
    assert content.endswith("ü…")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ({"errcode": 45009}, Retry("WeCom rate limit (code 45009)", after=60.0)),
        ({"errcode": 93000}, Failed("WeCom refused the message (code 93000)")),
        ({"errmsg": "ok"}, Failed("WeCom answered without a result code")),
        ({"errcode": True}, Failed("WeCom answered without a result code")),
    ],
)  # fmt: skip
async def test_wecom_answers(
    reply: dict[str, Any], expected: Any, policy: EgressPolicy, receiver: Receiver
) -> None:
    receiver.service = lambda _: answer(reply)
    channel = WeComChannel(policy, allow_any_host=True)
    endpoint = channel.validate({"webhook": receiver.url("/send", query=f"key={TOKEN}")})
    assert await channel.deliver(make_job(endpoint)) == expected


async def test_wecom_wrong_key_is_refused_by_the_receiver(
    policy: EgressPolicy, receiver: Receiver
) -> None:
    receiver.service = wecom_service
    channel = WeComChannel(policy, allow_any_host=True)
    endpoint = channel.validate({"webhook": receiver.url("/send", query="key=other")})
    assert await channel.deliver(make_job(endpoint)) == Failed(
        "WeCom refused the message (code 93000)"
    )


# -- Slack ----------------------------------------------------------------------------------


def slack_url(receiver: Receiver) -> str:
    return receiver.url(f"/services/T000/B000/{TOKEN}", query="")


async def test_slack_delivery_escapes_control_characters(
    policy: EgressPolicy, receiver: Receiver
) -> None:
    receiver.service = slack_service
    channel = SlackChannel(policy, allow_any_host=True)
    endpoint = channel.validate({"webhook": slack_url(receiver)})
    job = make_job(endpoint, title="R&D <alerts>", body="<!channel> a > b & <https://x|y>")
    assert await channel.deliver(job) == Delivered("HTTP 200")
    assert receiver.requests[0].json() == {
        "text": "*R&amp;D &lt;alerts&gt;*\n&lt;!channel&gt; a &gt; b &amp; &lt;https://x|y&gt;"
    }


async def test_slack_text_is_capped_without_splitting_an_entity(
    policy: EgressPolicy, receiver: Receiver
) -> None:
    receiver.service = slack_service
    channel = SlackChannel(policy, allow_any_host=True)
    endpoint = channel.validate({"webhook": slack_url(receiver)})
    assert await channel.deliver(make_job(endpoint, body="a&" * 3_000)) == Delivered("HTTP 200")
    text = receiver.requests[0].json()["text"]
    assert SLACK_TEXT_MAX - 6 < len(text) <= SLACK_TEXT_MAX
    assert text.startswith("*Your order shipped*\na&amp;")
    assert text.endswith(("a…", "&amp;…"))


def gone(detail: str) -> Failed:
    return Failed(f"Slack says the webhook is gone ({detail})", disable_endpoint=True)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (fixed(404, b"no_service"), gone("HTTP 404, no_service")),
        (fixed(404, b"channel_not_found"), gone("HTTP 404, channel_not_found")),
        (fixed(410, b"channel_is_archived"), gone("HTTP 410, channel_is_archived")),
        (fixed(403, b"action_prohibited"),
         Failed("Slack refused the message (HTTP 403, action_prohibited)")),
        (fixed(400, b"<html>no</html>"), Failed("Slack refused the message (HTTP 400)")),
        (fixed(429, b"rate_limited", **{"retry-after": "30"}),
         Retry("Slack answered HTTP 429", after=30.0)),
        (fixed(429, b"rate_limited", **{"retry-after": "99999999999"}),
         Retry("Slack answered HTTP 429")),
        (fixed(503, b""), Retry("Slack answered HTTP 503")),
        (fixed(302, b"", location="https://169.254.169.254/"),
         Failed("redirects are not followed")),
        (fixed(200, b"not ok"), Failed("Slack answered without 'ok'")),
    ],
)  # fmt: skip
async def test_slack_answers(
    reply: Callable[[Captured], Reply], expected: Any, policy: EgressPolicy, receiver: Receiver
) -> None:
    receiver.service = reply
    channel = SlackChannel(policy, allow_any_host=True)
    endpoint = channel.validate({"webhook": slack_url(receiver)})
    assert await channel.deliver(make_job(endpoint)) == expected


# -- shared behaviour -----------------------------------------------------------------------


async def test_server_errors_and_non_json_answers(policy: EgressPolicy, receiver: Receiver) -> None:
    channel = DingTalkChannel(policy, allow_any_host=True)
    endpoint = channel.validate({"webhook": receiver.url()})
    receiver.service = fixed(502, b"bad gateway", **{"retry-after": "5"})
    assert await channel.deliver(make_job(endpoint)) == Retry("DingTalk answered HTTP 502", 5.0)
    receiver.service = fixed(200, b"<html>captive portal</html>")
    assert await channel.deliver(make_job(endpoint)) == Failed(
        "DingTalk answered without a result code"
    )
    receiver.service = fixed(401, b"")
    assert await channel.deliver(make_job(endpoint)) == Failed(
        "DingTalk refused the message (HTTP 401)"
    )


async def test_unreachable_receiver_is_retried(policy: EgressPolicy) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    channel = WeComChannel(policy, allow_any_host=True)
    endpoint = channel.validate({"webhook": f"https://127.0.0.1:{port}/send?key={TOKEN}"})
    assert await channel.deliver(make_job(endpoint)) == Retry("WeCom unreachable or too slow")


async def test_untrusted_certificate_is_retried_not_ignored(
    receiver: Receiver, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    channel = SlackChannel(EgressPolicy(allow=LOOPBACK, ca_file=other), allow_any_host=True)
    endpoint = channel.validate({"webhook": slack_url(receiver)})
    assert await channel.deliver(make_job(endpoint)) == Retry("Slack unreachable or too slow")
    assert receiver.requests == []


async def test_ssrf_guard_refuses_at_delivery(ca_file: Path, receiver: Receiver) -> None:
    strict = EgressPolicy(ca_file=ca_file)  # loopback not allow-listed
    channel = FeishuChannel(strict, allow_any_host=True)
    # A name that resolves to loopback passes offline validation, not the send-time check.
    endpoint = channel.validate({"webhook": f"https://localhost:{receiver.port}/hook/{TOKEN}"})
    assert await channel.deliver(make_job(endpoint)) == Failed(
        "destination refused by the SSRF guard"
    )
    # A stored endpoint that no longer validates (the policy changed) fails without a send.
    stored = {"webhook": f"https://127.0.0.1:{receiver.port}/hook/{TOKEN}"}
    outcome = await channel.deliver(make_job(stored))
    assert isinstance(outcome, Failed)
    assert outcome.reason.startswith("invalid feishu endpoint")
    assert TOKEN not in outcome.reason
    assert receiver.requests == []


async def test_documented_host_is_required_at_delivery_too(
    policy: EgressPolicy, receiver: Receiver
) -> None:
    strict = SlackChannel(policy)  # allow_any_host=False
    outcome = await strict.deliver(make_job({"webhook": slack_url(receiver)}))
    assert outcome == Failed(
        "invalid slack endpoint: Slack webhook URL must start with https://hooks.slack.com/"
    )
    assert receiver.requests == []
