"""Message ids: UUIDv7 (RFC 9562 §5.7), monotonic within a process (RFC 9562 §6.2).

Layout of a UUIDv7 (RFC 9562 §5.7), most significant bit first::

    unix_ts_ms (48) | ver = 0b0111 (4) | rand_a (12) | var = 0b10 (2) | rand_b (62)

The 48-bit millisecond timestamp comes first, so ids sort by creation time both as
integers and as canonical strings. Within one millisecond, :class:`UUIDv7Generator` uses
``rand_a`` as a counter (RFC 9562 §6.2, Method 1, "Fixed Bit-Length Dedicated Counter"):
it is seeded randomly with its top bit cleared at each new millisecond, which leaves at
least 2,048 increments before it can overflow (the "counter rollover guard" of §6.2), and
on overflow the timestamp is moved one millisecond ahead of the clock. ``rand_b`` is fresh
randomness for every id, so ids stay unguessable even within one millisecond.

The generator never reads the clock or the RNG itself: both are injected, and
:func:`default_generator` is the one place that wires in the real ones.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Callable

from herald.errors import BadRequest

__all__ = [
    "UUIDv7Generator",
    "default_generator",
    "parse_message_id",
    "timestamp_ms",
]

_SLUG = "invalid-id"
_TS_MAX = (1 << 48) - 1  # RFC 9562 §5.7: unix_ts_ms is 48 bits (good until year 10889)
_COUNTER_MAX = 0xFFF  # rand_a is 12 bits
_SEED_MASK = 0x7FF  # RFC 9562 §6.2: rollover guard, the counter's top bit starts cleared
_RAND_B_MASK = (1 << 62) - 1
_VERSION_7 = 0x7 << 76  # RFC 9562 §4.2: version field, bits 48-51
_VARIANT_RFC = 0b10 << 62  # RFC 9562 §4.1: variant field 0b10, bits 64-65
#: Canonical text form (RFC 9562 §4): 8-4-4-4-12 hex digits, hyphens, nothing else.
_CANONICAL_RE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
    re.ASCII | re.IGNORECASE,
)
_CANONICAL_LEN = 36


class UUIDv7Generator:
    """Generate UUIDv7 ids that strictly increase within this generator.

    Ids are strictly increasing even if the clock stands still or goes backwards: the
    generator keeps the last timestamp it used and never goes below it. It is safe to
    share between threads.

    Args:
        clock_ms: Returns the current Unix time in milliseconds.
        randbytes: Returns that many cryptographically strong random bytes
            (``os.urandom`` in production).
    """

    def __init__(self, clock_ms: Callable[[], int], randbytes: Callable[[int], bytes]) -> None:
        self._clock_ms = clock_ms
        self._randbytes = randbytes
        self._last_ms = -1
        self._counter = 0
        self._lock = threading.Lock()

    def _random(self, size: int) -> int:
        data = self._randbytes(size)
        if len(data) != size:
            raise ValueError(f"randbytes({size}) returned {len(data)} bytes")
        return int.from_bytes(data, "big")

    def _reseed(self) -> None:
        self._counter = self._random(2) & _SEED_MASK

    def new(self) -> uuid.UUID:
        """Return a new id, greater than every id this generator returned before.

        Returns:
            A version 7, RFC 9562 variant UUID.

        Raises:
            ValueError: If the clock returns a time outside the 48-bit range of UUIDv7,
                or ``randbytes`` returns the wrong number of bytes.
        """
        now = self._clock_ms()
        if not 0 <= now <= _TS_MAX:
            raise ValueError(f"clock_ms() returned {now!r}, outside the UUIDv7 range")
        with self._lock:
            if now > self._last_ms:
                self._last_ms = now
                self._reseed()
            else:
                # Same millisecond, or the clock went back: keep the last timestamp and
                # count up (RFC 9562 §6.2, Method 1).
                self._counter += 1
                if self._counter > _COUNTER_MAX:
                    # RFC 9562 §6.2: on counter overflow, advance the timestamp.
                    if self._last_ms >= _TS_MAX:
                        raise ValueError("UUIDv7 timestamp space exhausted")
                    self._last_ms += 1
                    self._reseed()
            ts, counter = self._last_ms, self._counter
            rand_b = self._random(8) & _RAND_B_MASK
        value = (ts << 80) | _VERSION_7 | (counter << 64) | _VARIANT_RFC | rand_b
        return uuid.UUID(int=value)

    def new_str(self) -> str:
        """Return a new id in canonical form: 36 lowercase characters with hyphens."""
        return str(self.new())


def _wall_clock_ms() -> int:
    # REAL CLOCK: read only through default_generator(); nothing else in core uses this.
    return time.time_ns() // 1_000_000


def default_generator() -> UUIDv7Generator:
    """Return a generator wired to the system clock and ``os.urandom``.

    This factory is the only place in :mod:`herald.core` allowed to touch the real clock
    and the real RNG; everything else receives them injected.
    """
    # REAL CLOCK + REAL RNG wired here, on purpose.
    return UUIDv7Generator(clock_ms=_wall_clock_ms, randbytes=os.urandom)


def parse_message_id(text: str) -> str:
    """Check that ``text`` is a UUIDv7 in canonical form and return it lowercased.

    Only the 36-character hyphenated form is accepted (any case); braces, ``urn:uuid:``
    prefixes, missing hyphens, other versions and other variants are refused.

    Args:
        text: The candidate id, e.g. from a URL path.

    Returns:
        The id in canonical lowercase form.

    Raises:
        BadRequest: With slug ``invalid-id`` if ``text`` is not a canonical UUIDv7.
    """
    # Length first, so that the regex never runs over an oversized input.
    if (
        not isinstance(text, str)
        or len(text) != _CANONICAL_LEN
        or _CANONICAL_RE.fullmatch(text) is None
    ):
        raise BadRequest("a message id must be a UUIDv7 in canonical form", slug=_SLUG)
    return text.lower()


def timestamp_ms(u: uuid.UUID | str) -> int:
    """Return the Unix time in milliseconds embedded in a UUIDv7.

    Args:
        u: A UUIDv7, as a :class:`uuid.UUID` or in canonical text form.

    Returns:
        The 48-bit ``unix_ts_ms`` field (RFC 9562 §5.7).

    Raises:
        BadRequest: With slug ``invalid-id`` if ``u`` is not a UUIDv7 of the RFC variant.
    """
    if isinstance(u, uuid.UUID):
        if u.variant != uuid.RFC_4122 or u.version != 7:
            raise BadRequest("not a UUIDv7", slug=_SLUG)
        value = u.int
    else:
        value = int(parse_message_id(u).replace("-", ""), 16)
    return value >> 80
