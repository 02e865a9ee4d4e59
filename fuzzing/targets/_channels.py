"""Every built-in channel, built offline with fixed keys, for the endpoint-config targets."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from herald.channels.apprise import AppriseChannel
from herald.channels.base import Channel
from herald.channels.egress import EgressPolicy
from herald.channels.email import EmailChannel
from herald.channels.registry import ChannelRegistry
from herald.channels.robots import DingTalkChannel, FeishuChannel, SlackChannel, WeComChannel
from herald.channels.webhook import WebhookChannel
from herald.channels.webpush import WebPushChannel

__all__ = ["CHANNELS", "REGISTRY"]

_POLICY = EgressPolicy()
_VAPID = ec.derive_private_key(0x5EED, ec.SECP256R1())

#: One of each built-in channel, in a stable order (the targets select by index).
CHANNELS: tuple[Channel, ...] = (
    WebhookChannel(_POLICY),
    DingTalkChannel(_POLICY),
    FeishuChannel(_POLICY),
    WeComChannel(_POLICY),
    SlackChannel(_POLICY),
    AppriseChannel(_POLICY),
    WebPushChannel(_POLICY, _VAPID, subject="mailto:ops@herald.test"),
    EmailChannel("smtps://mx.herald.test", sender="Herald <herald@herald.test>"),
)
#: The registry a server with every channel configured would have.
REGISTRY = ChannelRegistry(CHANNELS)
