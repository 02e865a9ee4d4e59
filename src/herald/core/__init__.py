"""The pure core of Herald: topics and patterns, message ids, scopes, delivery states.

Nothing in this package does I/O, reads the clock or reads the RNG: time and randomness
are passed in (see :class:`herald.core.ids.UUIDv7Generator`), so every function here is
deterministic and testable without fakes. Import the submodules directly, e.g.
``from herald.core.topics import TopicPattern``.
"""

from __future__ import annotations

__all__: list[str] = []
