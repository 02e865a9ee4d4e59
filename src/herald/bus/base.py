"""The bus Protocol and the event it carries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Bus", "LiveMessage"]


@dataclass(frozen=True, slots=True)
class LiveMessage:
    """A committed message on its way to live subscribers, already framed once.

    ``frame`` is the JSON text of the WebSocket ``message`` frame; every subscriber gets the
    same string (encode once, write many). ``sse`` is the ready-made SSE event.
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

    def for_recipient(self, recipient: str) -> tuple[str, bytes]:
        """``(frame, sse)`` as ``recipient`` must see it."""
        if self.per_recipient is not None:
            return self.per_recipient[recipient]
        return self.frame, self.sse


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
