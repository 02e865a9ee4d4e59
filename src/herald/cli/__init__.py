"""The ``herald`` command line (typer + rich)."""

__all__: list[str] = []
