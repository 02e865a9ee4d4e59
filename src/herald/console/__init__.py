"""The web console's static files (HTML, CSS, JavaScript modules), served by ``herald serve``.

No build step: the files under ``static/`` are what the browser runs. The routes that serve
them, the session cookie and the Content-Security-Policy are in
:mod:`herald.server.console`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["STATIC_DIR"]

#: Where the console's files are (inside the installed package).
STATIC_DIR = Path(__file__).resolve().parent / "static"
