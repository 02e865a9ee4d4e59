"""``PUT /v1/recipients/{id}`` bodies: decoding, every endpoint's channel, preferences.

Input: the request body. The pure part of :func:`herald.service.recipients.put_recipient`
runs on it: the body decoder, the channel lookup and ``validate`` of each endpoint, the
redacted view, and the preferences parser.

Allowed refusal: ``BadRequest`` (every decode failure is one).
"""

from __future__ import annotations

import json

from fuzzing.targets._channels import REGISTRY
from herald.channels.base import redact_endpoint
from herald.core.messages import decode_json
from herald.core.preferences import parse_preferences
from herald.errors import BadRequest
from herald.service.recipients import RecipientRequest

REFUSALS = (BadRequest,)


def _endpoints(request: RecipientRequest) -> None:
    for raw in request.endpoints:
        name = raw.get("channel")
        if not isinstance(name, str):
            raise BadRequest("every endpoint names its channel")
        channel = REGISTRY.get(name)
        config = channel.validate({k: v for k, v in raw.items() if k != "channel"})
        json.dumps(config).encode("utf-8")  # what put_recipient seals
        redact_endpoint(channel, config)


def test_one_input(data: bytes) -> None:
    """Decode and validate one recipient request body."""
    try:
        request = decode_json(data, RecipientRequest)
        _endpoints(request)
        parse_preferences(request.preferences)
    except BadRequest:
        return
