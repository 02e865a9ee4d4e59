"""The event-loop lag monitor: how late a periodic wake-up of the loop fires.

Everything a node does runs on one event loop, so any callback that holds it (a CPU-heavy
fan-out, a blocking call by mistake) delays every other connection. A task that asks to be
woken every :data:`~herald.limits.EVENT_LOOP_LAG_INTERVAL` seconds and records how much
later than asked it actually ran measures exactly that delay, on a live node, for the
price of ten wake-ups a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from herald import limits

__all__ = ["LoopLagMonitor"]


class LoopLagMonitor:
    """Wakes up every ``interval`` seconds and reports how late each wake-up was.

    A sample is the time between when the wake-up was due and when the task ran again, so
    a loop blocked for ``b`` seconds while the monitor slept yields a sample of at least
    ``b - interval``. One long block is one sample (not one per interval it covered).
    """

    def __init__(
        self,
        observe: Callable[[float], None],
        *,
        interval: float = limits.EVENT_LOOP_LAG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a monitor; :meth:`run` starts measuring.

        Args:
            observe: Called with each sample in seconds (never negative).
            interval: Seconds between wake-ups.
            clock: Monotonic seconds, the clock the loop's timers use.
        """
        self._observe = observe
        self._interval = interval
        self._clock = clock

    async def run(self) -> None:
        """Measure until cancelled."""
        while True:
            due = self._clock() + self._interval
            await asyncio.sleep(self._interval)
            self._observe(max(0.0, self._clock() - due))
