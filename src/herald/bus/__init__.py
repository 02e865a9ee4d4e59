"""The message bus: carries committed messages to live stream sessions (in-process or Redis)."""

__all__: list[str] = []
