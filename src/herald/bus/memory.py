"""The in-process bus of the embedded mode: a direct, ordered call to each handler."""

from __future__ import annotations

from collections.abc import Callable

from herald.bus.base import LiveMessage

__all__ = ["MemoryBus"]


class MemoryBus:
    """Synchronous in-process fan-out; handlers must not block (they only enqueue)."""

    def __init__(self) -> None:
        self._handlers: list[Callable[[LiveMessage], None]] = []

    def subscribe(self, handler: Callable[[LiveMessage], None]) -> None:
        """Register a handler."""
        self._handlers.append(handler)

    async def start(self) -> None:
        """Nothing to start: publishing calls the handlers directly."""

    async def publish(self, messages: list[LiveMessage]) -> None:
        """Hand each message to every handler, in order."""
        for message in messages:
            for handler in self._handlers:
                handler(message)

    async def close(self) -> None:
        """Forget the handlers."""
        self._handlers.clear()
