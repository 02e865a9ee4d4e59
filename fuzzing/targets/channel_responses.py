"""What a receiver's HTTP answer means: the response parsers of the HTTP channels.

Webhook receivers, push services and chat-robot APIs are third parties; their answers are
untrusted input. Input: ``channel byte``, two status bytes (big-endian, mapped onto
100-699), a ``truncated`` byte, then ``header lines NUL body``. The robot channels (DingTalk,
Feishu, WeCom, Slack) map the answer with their own rules (a JSON result code, Slack's
``ok``); the webhook and Web Push channels with :func:`herald.channels._http.status_outcome`
(which reads ``Retry-After``).

Allowed refusal: none — every answer must map to a ``Delivered``, ``Retry`` or ``Failed``.
"""

from __future__ import annotations

from fuzzing._input import fields, latin1
from fuzzing.targets._channels import CHANNELS
from herald.channels import _http
from herald.channels.base import Delivered, Failed, Outcome, Retry
from herald.channels.egress import EgressResponse
from herald.channels.robots import RobotChannel

REFUSALS: tuple[type[BaseException], ...] = ()

NOW = 1_800_000_000.0
_ROBOTS = tuple(c for c in CHANNELS if isinstance(c, RobotChannel))
_STATUS_BASE, _STATUS_SPAN = 100, 600
_PREFIX = 4  # selector, status (2 bytes), truncated


def _headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in latin1(raw).split("\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def test_one_input(data: bytes) -> None:
    """Map one HTTP answer to a delivery outcome."""
    head = data[:_PREFIX].ljust(_PREFIX, b"\x00")
    header_lines, body = fields(data[_PREFIX:], 2)
    status = _STATUS_BASE + int.from_bytes(head[1:3], "big") % _STATUS_SPAN
    response = EgressResponse(status, _headers(header_lines), body, bool(head[3] & 1))
    choice = head[0] % (len(_ROBOTS) + 1)
    outcome: Outcome | None
    if choice < len(_ROBOTS):
        outcome = _ROBOTS[choice]._outcome(response)
    else:
        outcome = _http.status_outcome(
            response.status, response.headers, peer="receiver", clock=lambda: NOW
        )
        _http.retry_after(response.headers, now=NOW)
    if outcome is not None and not isinstance(outcome, Delivered | Retry | Failed):
        raise TypeError(f"not an outcome: {outcome!r}")
