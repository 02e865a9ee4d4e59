"""IM robots out: DingTalk, Feishu/Lark, WeCom and Slack incoming webhooks (DESIGN §7).

Each service gives a group chat a *webhook URL* whose path or query carries the robot's
token, so the whole URL is a secret (redacted in every view, never in a reason or an error).
An endpoint is ``{"webhook": "https://…"}``, plus ``"secret"`` for the two services that sign
requests (DingTalk and Feishu "signature verification" security settings).

All four share :class:`RobotChannel`: the endpoint is validated offline (https, the
service's documented host, no unknown fields, the secret's format), the message is built and
capped to the service's documented size, and one ``POST`` goes out through the SSRF-guarded
:mod:`~herald.channels.egress` client. Outcomes:

- 2xx *and* the service's own success answer (``{"errcode": 0}``, ``{"code": 0}``, ``ok``)
  → :class:`~herald.channels.base.Delivered`. The Chinese services answer HTTP 200 with an
  error code in the body for every failure: their documented rate-limit codes →
  ``Retry(after=60)``, any other code → ``Failed`` naming the code;
- 408, 429 and 5xx → ``Retry`` honouring ``Retry-After``; 3xx → ``Failed`` (redirects are never
  followed); other 4xx → ``Failed``; Slack's 404/410 (``channel_not_found``,
  ``no_service``, ``channel_is_archived``) → ``Failed(disable_endpoint=True)``;
- unreachable or slow → ``Retry``; a destination the SSRF guard refuses → ``Failed``.

``allow_any_host=True`` lifts the documented-host check (the URL must still pass the egress
policy: https, public or allow-listed addresses). Operators set it to run a relay or a mock
of these services, and the tests use it to reach receivers on loopback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final
from urllib.parse import SplitResult, parse_qs, quote, urlsplit

import msgspec

from herald.channels import _http, egress
from herald.channels.base import Delivered, DeliveryJob, Failed, Outcome, Retry
from herald.errors import BadRequest

__all__ = [
    "DINGTALK_TEXT_MAX_BYTES",
    "FEISHU_REQUEST_MAX_BYTES",
    "RATE_LIMIT_RETRY_AFTER",
    "SLACK_TEXT_MAX",
    "USER_AGENT",
    "WECOM_MARKDOWN_MAX_BYTES",
    "DingTalkChannel",
    "FeishuChannel",
    "RobotChannel",
    "SlackChannel",
    "WeComChannel",
    "dingtalk_sign",
    "feishu_sign",
    "slack_escape",
]

#: DingTalk custom robots: message content up to 20,000 bytes (UTF-8).
DINGTALK_TEXT_MAX_BYTES: Final = 20_000
#: Feishu/Lark custom bots: the whole request body must stay within 20 K.
FEISHU_REQUEST_MAX_BYTES: Final = 20_000
#: WeCom group robots: ``markdown.content`` up to 4,096 bytes (UTF-8).
WECOM_MARKDOWN_MAX_BYTES: Final = 4_096
#: Slack: ``text`` is best kept within 4,000 characters (Slack truncates past 40,000).
SLACK_TEXT_MAX: Final = 4_000
#: Seconds to wait after a rate-limit answer: the services count messages per minute
#: (DingTalk 20/min, WeCom 20/min, Feishu 100/min and 5/s).
RATE_LIMIT_RETRY_AFTER: Final = 60.0
#: Longest webhook URL accepted.
URL_MAX: Final = 2048
USER_AGENT: Final = "Herald-Robots/1"

ELLIPSIS: Final = "…"
_HEADERS: Final = {"content-type": "application/json; charset=utf-8", "user-agent": USER_AGENT}
_SLACK_ERROR: Final = re.compile(rb"[a-z_]{1,64}")
_ENCODER = msgspec.json.Encoder()


# -- signing --------------------------------------------------------------------------------


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    r"""DingTalk's ``sign``: ``urlencode(base64(HMAC-SHA256(secret, f"{ts}\n{secret}")))``.

    The timestamp is in milliseconds; DingTalk refuses one more than an hour off.
    """
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return quote(base64.b64encode(mac.digest()).decode("ascii"), safe="")


def feishu_sign(secret: str, timestamp: int) -> str:
    r"""Feishu's ``sign``: ``base64(HMAC-SHA256(key=f"{ts}\n{secret}", msg=b""))``.

    The timestamp is in seconds. Key and message are the reverse of DingTalk's: Feishu
    signs the empty string with the timestamp-and-secret as the key.
    """
    mac = hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def slack_escape(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` as Slack's message formatting requires (nothing else)."""
    return html.escape(text, quote=False)


# -- text shaping ---------------------------------------------------------------------------


def _utf8_size(text: str) -> int:
    return len(text.encode())


def _json_size(text: str) -> int:
    return len(_ENCODER.encode(text)) - 2  # minus the quotes


def _slack_size(text: str) -> int:
    return len(slack_escape(text))


def _fit(text: str, limit: int, size: Callable[[str], int]) -> str:
    """``text``, or its longest prefix plus an ellipsis whose ``size`` is within ``limit``."""
    if size(text) <= limit:
        return text
    if size(ELLIPSIS) > limit:
        return ""
    low, high = 0, len(text)
    while low < high:  # binary search: size() is monotonic in the prefix length
        middle = (low + high + 1) // 2
        if size(text[:middle] + ELLIPSIS) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low] + ELLIPSIS


def _compose(head: str, sep: str, body: str, limit: int, size: Callable[[str], int]) -> str:
    """``head + sep + body`` within ``limit``: the body is shortened first, the head kept."""
    if not head or not body:
        return _fit(head or body, limit, size)
    whole = head + sep + body
    if size(whole) <= limit:
        return whole
    room = limit - size(head + sep)
    if room >= size(ELLIPSIS) * 8:  # keep the title when a useful part of the body fits
        return head + sep + _fit(body, room, size)
    return _fit(whole, limit, size)


def _json_code(body: bytes, *fields: str) -> int | None:
    """The first integer among ``fields`` of a JSON object answer, or None."""
    try:
        doc = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec raises the latter for bad UTF-8
        return None
    if not isinstance(doc, dict):
        return None
    for field in fields:
        value = doc.get(field)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


# -- the shared channel ---------------------------------------------------------------------


class RobotChannel:
    """The HTTP part shared by the robot channels; subclasses describe their service.

    Args:
        policy: The egress policy: allowed private networks, CA bundle, timeouts, caps.
        clock: Unix time source for signatures and ``Retry-After`` (injectable for tests).
        allow_any_host: Accept any https host instead of only the service's documented one:
            for operators running a relay or a mock of the service, and for tests. The URL
            still has to pass the egress policy.
    """

    name: ClassVar[str] = ""
    #: The webhook URL carries the robot's token; the secret signs requests.
    secret_fields: ClassVar[tuple[str, ...]] = ("webhook", "secret")
    concurrency: ClassVar[int] = 16

    #: How people write the service's name (reasons and errors).
    label: ClassVar[str] = ""
    #: The service's documented webhook hosts.
    hosts: ClassVar[tuple[str, ...]] = ()
    #: The pattern a signing secret must match; None when the service does not sign.
    secret_format: ClassVar[re.Pattern[str] | None] = None
    #: What the secret looks like, for the error message.
    secret_hint: ClassVar[str] = ""
    #: The JSON answer fields holding the service's result code, in order of preference.
    code_fields: ClassVar[tuple[str, ...]] = ()
    #: Result codes meaning "sending too fast": retried after a minute.
    rate_limit_codes: ClassVar[frozenset[int]] = frozenset()

    def __init__(
        self,
        policy: egress.EgressPolicy,
        *,
        clock: Callable[[], float] = time.time,
        allow_any_host: bool = False,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._allow_any_host = allow_any_host

    # -- validation ----------------------------------------------------------------------

    def validate(self, endpoint: Mapping[str, Any]) -> dict[str, Any]:
        """Check and normalise an endpoint (offline: DNS is checked at delivery).

        Raises:
            BadRequest: Unknown fields, a webhook URL that is not https on the service's
                host (unless ``allow_any_host``), or a malformed secret. Messages never
                contain the URL or the secret.
        """
        if not isinstance(endpoint, Mapping):
            raise BadRequest(f"a {self.label} endpoint must be an object")
        allowed = ("webhook", "secret") if self.secret_format is not None else ("webhook",)
        unknown = sorted(str(key)[:64] for key in endpoint if key not in allowed)
        if unknown:
            raise BadRequest(
                f"unknown {self.label} endpoint fields: " + ", ".join(unknown[:5]),
                extra={"allowed": list(allowed)},
            )
        normal: dict[str, Any] = {"webhook": self._check_webhook(endpoint.get("webhook"))}
        secret = endpoint.get("secret")
        if secret is not None:
            if self.secret_format is None or not isinstance(secret, str):
                raise BadRequest(f"{self.label} secret must be a string")
            if not self.secret_format.fullmatch(secret):
                raise BadRequest(f"{self.label} secret must be {self.secret_hint}")
            normal["secret"] = secret
        return normal

    def _check_webhook(self, value: Any) -> str:
        # Messages never echo the URL: its path or query is the robot's token.
        if not isinstance(value, str) or not value:
            raise BadRequest(f"{self.label} webhook URL is required")
        if len(value) > URL_MAX:
            raise BadRequest(f"{self.label} webhook URL is longer than {URL_MAX} characters")
        if not value.isascii() or any(c.isspace() or not c.isprintable() for c in value):
            raise BadRequest(f"{self.label} webhook URL must be ASCII without spaces")
        if "#" in value:
            raise BadRequest(f"{self.label} webhook URL must not have a fragment")
        try:
            url = egress.validate_url(value, self._policy)
            parts = urlsplit(url)
            port = parts.port
        except egress.EgressRefused as exc:
            raise BadRequest(f"{self.label} webhook URL refused: {exc.detail}") from None
        except ValueError:
            raise BadRequest(f"{self.label} webhook URL is malformed") from None
        if not self._allow_any_host and (
            parts.scheme != "https" or parts.hostname not in self.hosts or port not in {None, 443}
        ):
            where = " or ".join(f"https://{host}/" for host in self.hosts)
            raise BadRequest(f"{self.label} webhook URL must start with {where}")
        self._check_token(parts)
        return url

    def _check_token(self, parts: SplitResult) -> None:
        """Refuse a URL without the robot's token (the service answers it with an error)."""
        if parts.path.strip("/") == "":
            raise BadRequest(f"{self.label} webhook URL has no robot token in its path")

    # -- delivery ------------------------------------------------------------------------

    def request(self, endpoint: Mapping[str, Any], job: DeliveryJob) -> tuple[str, bytes]:
        """The URL and JSON body of one attempt (signed when the endpoint has a secret)."""
        return str(endpoint["webhook"]), _ENCODER.encode(self._message(job))

    def _message(self, job: DeliveryJob) -> dict[str, Any]:
        raise NotImplementedError

    async def deliver(self, job: DeliveryJob) -> Outcome:
        """POST one message and map the answer to an outcome."""
        try:
            endpoint = self.validate(job.endpoint)
        except BadRequest as exc:
            return Failed(f"invalid {self.name} endpoint: {exc.detail}")
        url, body = self.request(endpoint, job)
        sent = await _http.send(
            self._policy,
            url,
            content=body,
            headers=_HEADERS,
            unreachable=f"{self.label} unreachable or too slow",
            detail=False,
        )
        if not isinstance(sent, egress.EgressResponse):
            return sent
        return self._outcome(sent)

    def _outcome(self, response: egress.EgressResponse) -> Outcome:
        if 200 <= response.status < 300:
            return self._answer(response)  # the service's own code says what happened
        outcome = _http.status_outcome(
            response.status,
            response.headers,
            peer=self.label,
            clock=self._clock,
            gone=frozenset(),  # Slack words its own "gone", with Slack's error
        )
        return outcome or self._refused(response)

    def _refused(self, response: egress.EgressResponse) -> Outcome:
        return Failed(f"{self.label} refused the message (HTTP {response.status})")

    def _answer(self, response: egress.EgressResponse) -> Outcome:
        """A 2xx answer: the service's own code in the JSON body says what happened."""
        code = None if response.truncated else _json_code(response.body, *self.code_fields)
        if code is None:
            return Failed(f"{self.label} answered without a result code")
        if code == 0:
            return Delivered(f"HTTP {response.status}")
        if code in self.rate_limit_codes:
            return Retry(f"{self.label} rate limit (code {code})", after=RATE_LIMIT_RETRY_AFTER)
        return Failed(f"{self.label} refused the message (code {code})")


def _parts(job: DeliveryJob) -> tuple[str, str]:
    return (job.title or "").strip(), (job.body or "").strip()


class DingTalkChannel(RobotChannel):
    """DingTalk custom robot: a markdown message, signed when the robot has a secret.

    Endpoint: ``{"webhook": "https://oapi.dingtalk.com/robot/send?access_token=…",
    "secret": "SEC…"}``. With a secret, ``&timestamp=<ms>&sign=<…>`` is appended to the URL
    (the "加签" security setting). The markdown ``title`` (the conversation-list preview) is
    the message title, or the topic when there is none. Error code 130101 ("send too
    fast") is retried.
    """

    name: ClassVar[str] = "dingtalk"
    label: ClassVar[str] = "DingTalk"
    hosts: ClassVar[tuple[str, ...]] = ("oapi.dingtalk.com",)
    secret_format: ClassVar[re.Pattern[str] | None] = re.compile(r"SEC[0-9A-Za-z]{8,250}")
    secret_hint: ClassVar[str] = "the 'SEC…' string of the robot's signing setting"  # noqa: S105
    code_fields: ClassVar[tuple[str, ...]] = ("errcode",)
    rate_limit_codes: ClassVar[frozenset[int]] = frozenset({130101})

    def _check_token(self, parts: SplitResult) -> None:
        query = parse_qs(parts.query, keep_blank_values=True)
        if not any(query.get("access_token", [])):
            raise BadRequest("DingTalk webhook URL has no access_token")
        if "timestamp" in query or "sign" in query:
            raise BadRequest("DingTalk webhook URL must not carry timestamp or sign: set secret")

    def request(self, endpoint: Mapping[str, Any], job: DeliveryJob) -> tuple[str, bytes]:
        """The webhook URL, with ``timestamp`` and ``sign`` when signing, and the body."""
        url, body = super().request(endpoint, job)
        secret = endpoint.get("secret")
        if secret:
            stamp = round(self._clock() * 1000)
            url += f"&timestamp={stamp}&sign={dingtalk_sign(secret, stamp)}"
        return url, body

    def _message(self, job: DeliveryJob) -> dict[str, Any]:
        title, body = _parts(job)
        head = f"### {title}" if title else ""
        text = _compose(head, "\n\n", body, DINGTALK_TEXT_MAX_BYTES, _utf8_size)
        preview = _fit(title or job.topic, DINGTALK_TEXT_MAX_BYTES, _utf8_size)
        return {"msgtype": "markdown", "markdown": {"title": preview, "text": text}}


class FeishuChannel(RobotChannel):
    """Feishu (Lark) custom bot: a text message, signed when the bot has a secret.

    Endpoint: ``{"webhook": "https://open.feishu.cn/open-apis/bot/v2/hook/…", "secret": …}``
    (or ``open.larksuite.com``). With a secret the body carries ``timestamp`` (seconds) and
    ``sign``. Codes 9499 and 11232 (rate limits) are retried.
    """

    name: ClassVar[str] = "feishu"
    label: ClassVar[str] = "Feishu"
    hosts: ClassVar[tuple[str, ...]] = ("open.feishu.cn", "open.larksuite.com")
    secret_format: ClassVar[re.Pattern[str] | None] = re.compile(r"[0-9A-Za-z]{8,256}")
    secret_hint: ClassVar[str] = "the letters-and-digits key of the bot's signature setting"  # noqa: S105
    # "StatusCode" is the answer of the older bot API.
    code_fields: ClassVar[tuple[str, ...]] = ("code", "StatusCode")
    rate_limit_codes: ClassVar[frozenset[int]] = frozenset({9499, 11232})

    def request(self, endpoint: Mapping[str, Any], job: DeliveryJob) -> tuple[str, bytes]:
        """The webhook URL and the body, with ``timestamp`` and ``sign`` when signing."""
        signature: dict[str, str] = {}
        secret = endpoint.get("secret")
        if secret:
            stamp = int(self._clock())
            signature = {"timestamp": str(stamp), "sign": feishu_sign(secret, stamp)}
        empty = {"msg_type": "text", "content": {"text": ""}, **signature}
        room = FEISHU_REQUEST_MAX_BYTES - len(_ENCODER.encode(empty))
        title, body = _parts(job)
        text = _compose(title, "\n", body, room, _json_size)
        message = {"msg_type": "text", "content": {"text": text}, **signature}
        return str(endpoint["webhook"]), _ENCODER.encode(message)


class WeComChannel(RobotChannel):
    """WeCom (WeChat Work) group robot: a markdown message.

    Endpoint: ``{"webhook": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…"}``.
    Error code 45009 (API frequency limit) is retried.
    """

    name: ClassVar[str] = "wecom"
    label: ClassVar[str] = "WeCom"
    hosts: ClassVar[tuple[str, ...]] = ("qyapi.weixin.qq.com",)
    code_fields: ClassVar[tuple[str, ...]] = ("errcode",)
    rate_limit_codes: ClassVar[frozenset[int]] = frozenset({45009})

    def _check_token(self, parts: SplitResult) -> None:
        if not any(parse_qs(parts.query).get("key", [])):
            raise BadRequest("WeCom webhook URL has no key")

    def _message(self, job: DeliveryJob) -> dict[str, Any]:
        title, body = _parts(job)
        head = f"**{title}**" if title else ""
        content = _compose(head, "\n", body, WECOM_MARKDOWN_MAX_BYTES, _utf8_size)
        return {"msgtype": "markdown", "markdown": {"content": content}}


class SlackChannel(RobotChannel):
    r"""Slack incoming webhook: ``{"text": "*title*\nbody"}`` with ``&``, ``<``, ``>`` escaped.

    Endpoint: ``{"webhook": "https://hooks.slack.com/services/…"}``. Slack answers ``ok``;
    404 and 410 (``channel_not_found``, ``no_service``, ``channel_is_archived``) disable the
    endpoint; 429 is retried after ``Retry-After``.
    """

    name: ClassVar[str] = "slack"
    label: ClassVar[str] = "Slack"
    hosts: ClassVar[tuple[str, ...]] = ("hooks.slack.com",)

    def _message(self, job: DeliveryJob) -> dict[str, Any]:
        title, body = _parts(job)
        # The title is shortened to fit before it is put in bold, so the asterisks stay paired.
        if title:
            title = _fit(title, SLACK_TEXT_MAX - 2, _slack_size)
        head = f"*{title}*" if title else ""
        text = _compose(head, "\n", body, SLACK_TEXT_MAX, _slack_size)
        return {"text": slack_escape(text)}

    def _refused(self, response: egress.EgressResponse) -> Outcome:
        body = response.body.strip()
        error = body.decode() if _SLACK_ERROR.fullmatch(body) else ""
        detail = f"HTTP {response.status}" + (f", {error}" if error else "")
        if response.status in {404, 410}:  # the hook, channel or workspace is gone
            return Failed(f"Slack says the webhook is gone ({detail})", disable_endpoint=True)
        return Failed(f"Slack refused the message ({detail})")

    def _answer(self, response: egress.EgressResponse) -> Outcome:
        if response.body.strip() == b"ok":
            return Delivered(f"HTTP {response.status}")
        return Failed("Slack answered without 'ok'")
