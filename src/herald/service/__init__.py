"""Application services: the use cases (publish, read, tokens, streams) over the adapters.

Routes and CLI commands are thin callers of these functions; nothing here knows HTTP.
"""

__all__: list[str] = []
