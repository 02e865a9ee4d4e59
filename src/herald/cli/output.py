"""Printing for the CLI: JSON for machines, rich text for people, one-line errors."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

__all__ = ["console", "emit", "fail", "stderr"]

console = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def emit(data: dict[str, Any], *, as_json: bool, human: str | None = None) -> None:
    """Print ``data`` as one JSON object, or ``human`` text (key: value lines by default)."""
    if as_json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    if human is not None:
        console.print(human)
        return
    for key, value in data.items():
        console.print(f"[bold]{key}[/bold]: {value}")


def fail(message: str, code: int = 1) -> NoReturn:
    """One human line on stderr and a non-zero exit."""
    stderr.print(f"[red]error:[/red] {message}", markup=True)
    raise typer.Exit(code)
