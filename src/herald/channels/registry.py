"""The channel registry: plugins by name, built once from the settings.

Built-in channels are registered explicitly (no filename scanning); third-party channels
come through the ``herald.channels`` entry-point group, each entry point naming a factory
``(settings) -> Channel``. ``inapp`` is not a plugin: in-app deliveries are the streams
and become ``delivered`` when the recipient acks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from herald.channels.base import Channel
from herald.config import Settings
from herald.errors import BadRequest, ConfigError

__all__ = ["INAPP", "ChannelRegistry", "build_registry"]

INAPP = "inapp"
ENTRY_POINT_GROUP = "herald.channels"


class ChannelRegistry:
    """Channels by name, each with its own concurrency limit."""

    def __init__(self, channels: Iterable[Channel] = ()) -> None:
        self._channels: dict[str, Channel] = {}
        self._limits: dict[str, asyncio.Semaphore] = {}
        for channel in channels:
            self.register(channel)

    def register(self, channel: Channel) -> None:
        """Add a channel; names are unique."""
        if channel.name in self._channels or channel.name == INAPP:
            raise ConfigError(f"channel {channel.name!r} is registered twice")
        self._channels[channel.name] = channel
        self._limits[channel.name] = asyncio.Semaphore(channel.concurrency)

    def get(self, name: str) -> Channel:
        """The channel called ``name``; BadRequest naming the known ones otherwise."""
        channel = self._channels.get(name)
        if channel is None:
            known = ", ".join(sorted(self._channels)) or "none configured"
            raise BadRequest(f"unknown channel {name[:32]!r} (available: {known})")
        return channel

    def limit(self, name: str) -> asyncio.Semaphore:
        """The concurrency limit of a channel."""
        return self._limits[name]

    def names(self) -> list[str]:
        """Registered channel names, sorted."""
        return sorted(self._channels)

    def __contains__(self, name: object) -> bool:
        return name in self._channels


def _builtin(settings: Settings, vapid: ec.EllipticCurvePrivateKey | None) -> list[Channel]:
    # Imported here: each channel pulls in its own client library.
    from herald.channels.apprise import AppriseChannel  # noqa: PLC0415
    from herald.channels.egress import EgressPolicy  # noqa: PLC0415
    from herald.channels.robots import (  # noqa: PLC0415
        DingTalkChannel,
        FeishuChannel,
        SlackChannel,
        WeComChannel,
    )
    from herald.channels.webhook import WebhookChannel  # noqa: PLC0415

    policy = EgressPolicy.from_settings(settings)
    channels: list[Channel] = [
        WebhookChannel(policy),
        DingTalkChannel(policy),
        FeishuChannel(policy),
        WeComChannel(policy),
        SlackChannel(policy),
        AppriseChannel(policy),
    ]
    if vapid is not None:
        from herald.channels.webpush import WebPushChannel  # noqa: PLC0415

        try:
            channels.append(WebPushChannel(policy, vapid, subject=settings.vapid_subject))
        except ValueError as exc:
            raise ConfigError(f"HERALD_WEBPUSH_SUBJECT: {exc}") from None
    if settings.smtp_url is not None:
        from herald.channels.email import EmailChannel  # noqa: PLC0415

        host = urlsplit(settings.base_url).hostname or "localhost"
        channels.append(
            EmailChannel.from_settings(settings, sender=settings.smtp_from or f"herald@{host}")
        )
    return channels


def build_registry(
    settings: Settings,
    *,
    vapid: ec.EllipticCurvePrivateKey | None = None,
    extra: Iterable[Callable[[Settings], Channel]] = (),
) -> ChannelRegistry:
    """Built-in channels, then entry-point plugins, then ``extra`` factories."""
    registry = ChannelRegistry(_builtin(settings, vapid))
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        registry.register(entry.load()(settings))
    for factory in extra:
        registry.register(factory(settings))
    return registry
