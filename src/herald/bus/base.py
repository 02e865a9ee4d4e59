"""The bus Protocol and the event it carries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from herald.core.wsframe import text_frame

__all__ = ["Bus", "LiveMessage"]


@dataclass(frozen=True, slots=True)
class LiveMessage:
    """A committed message on its way to live subscribers, already framed once.

    ``frame`` is the JSON text of the WebSocket ``message`` frame; every subscriber gets the
    same string (encode once, write many). ``sse`` is the ready-made SSE event.
    :meth:`ws_frame` is the same text framed as a WebSocket frame, made once on first use.
    """

    tenant_id: str
    topic: str
    seq: int
    id: str
    recipients: tuple[str, ...]
    frame: str
    sse: bytes
    published_at: float
    #: End-to-end messages: each recipient's own frame (only its devices' payloads).
    per_recipient: dict[str, tuple[str, bytes]] | None = None
    #: :meth:`ws_frame`'s results, by recipient ("" when everyone gets the same frame).
    _ws_frames: dict[str, bytes] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def for_recipient(self, recipient: str) -> tuple[str, bytes]:
        """``(frame, sse)`` as ``recipient`` must see it."""
        if self.per_recipient is not None:
            return self.per_recipient[recipient]
        return self.frame, self.sse

    def ws_frame(self, recipient: str) -> bytes:
        """The WebSocket text frame (RFC 6455, unmasked) ``recipient`` must see.

        Built on first use and kept: every subscriber's socket is written the same bytes
        (per recipient for end-to-end messages), so a message is framed once per node
        rather than once per connection.
        """
        key = recipient if self.per_recipient is not None else ""
        frame = self._ws_frames.get(key)
        if frame is None:
            frame = self._ws_frames[key] = text_frame(self.for_recipient(recipient)[0].encode())
        return frame


class Bus(Protocol):
    """Fan-out of committed messages to every node's live sessions."""

    def subscribe(self, handler: Callable[[LiveMessage], None]) -> None:
        """Call ``handler`` for every message published on the bus."""
        ...

    async def start(self) -> None:
        """Begin receiving (the server calls it; admin commands never do)."""
        ...

    async def publish(self, messages: list[LiveMessage]) -> None:
        """Deliver ``messages`` to every subscribed handler, in order."""
        ...

    async def close(self) -> None:
        """Stop delivering."""
        ...
