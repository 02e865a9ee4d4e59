"""Live stream sessions (WebSocket and SSE share them): routing, bounded queues, resume."""

__all__: list[str] = []
