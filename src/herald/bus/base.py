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


class Bus(Protocol):
    """Fan-out of committed messages to every node's live sessions."""

    def subscribe(self, handler: Callable[[LiveMessage], None]) -> None:
        """Call ``handler`` for every message published on the bus."""
        ...

    async def publish(self, messages: list[LiveMessage]) -> None:
        """Deliver ``messages`` to every subscribed handler, in order."""
        ...

    async def close(self) -> None:
        """Stop delivering."""
        ...
