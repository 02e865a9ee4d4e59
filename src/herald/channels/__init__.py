"""Delivery channels: plugins behind one small interface, registered by name."""

__all__: list[str] = []
