"""The ASGI server: thin HTTP/WebSocket adapters over :mod:`herald.service`."""

__all__: list[str] = []
