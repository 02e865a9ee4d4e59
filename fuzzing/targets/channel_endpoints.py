"""Channel endpoint configurations: each built-in channel's ``validate`` on fuzzed JSON.

Input: ``channel byte`` (selects webhook, dingtalk, feishu, wecom, slack, apprise, webpush
or email) then a JSON document. Whatever ``validate`` accepts must validate again to
itself (it is stored normalised and re-checked at delivery time) and must redact.

Allowed refusal: ``BadRequest`` (``EgressRefused`` is one; the request body decoder
answers bytes that are not JSON with one too).
"""

from __future__ import annotations

from typing import Any

from fuzzing._input import mode
from fuzzing.targets._channels import CHANNELS
from herald.channels.base import redact_endpoint
from herald.core.messages import decode_json
from herald.errors import BadRequest

REFUSALS = (BadRequest,)


def test_one_input(data: bytes) -> None:
    """Validate one endpoint configuration with one channel."""
    selected, rest = mode(data, len(CHANNELS))
    channel = CHANNELS[selected]
    try:
        # Any JSON value, as the endpoint list of a recipient body may hold (not only
        # objects: validate must refuse the rest itself).
        endpoint: Any = decode_json(rest, object)
        normal = channel.validate(endpoint)
    except REFUSALS:
        return
    if channel.validate(normal) != normal:
        raise AssertionError(f"{channel.name}: a validated endpoint does not validate to itself")
    redact_endpoint(channel, normal)
