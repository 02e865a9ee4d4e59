"""The event-loop lag monitor on a real event loop: a blocking call shows up as lag."""

from __future__ import annotations

import asyncio
import time

from tests.unit.test_metrics import samples

from herald.observability.loop import LoopLagMonitor
from herald.observability.metrics import Metrics

INTERVAL = 0.02
BLOCK = 0.3  # seconds the test holds the loop with a blocking call


class Recorder:
    """Collects samples and wakes the test after each one."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.sampled = asyncio.Event()

    def __call__(self, lag: float) -> None:
        self.samples.append(lag)
        self.sampled.set()

    async def next_sample(self) -> float:
        self.sampled.clear()
        count = len(self.samples)
        await asyncio.wait_for(self.sampled.wait(), timeout=10)
        return self.samples[count]


async def test_a_blocking_call_is_recorded_as_lag() -> None:
    recorder = Recorder()
    monitor = asyncio.create_task(LoopLagMonitor(recorder, interval=INTERVAL).run())
    try:
        # After a sample the monitor has already gone back to sleep (it only yields there),
        # so the block below starts after its next wake-up was scheduled.
        await recorder.next_sample()
        recorder.sampled.clear()
        time.sleep(BLOCK)  # the blocking call whose effect is measured
        lag = await recorder.next_sample()
    finally:
        monitor.cancel()
        await asyncio.gather(monitor, return_exceptions=True)
    # The wake-up was due at most INTERVAL after the block began and ran after it ended.
    assert lag >= BLOCK - INTERVAL
    assert all(sample >= 0.0 for sample in recorder.samples)


async def test_samples_reach_the_histogram_and_the_recent_max() -> None:
    metrics = Metrics()
    seen = asyncio.Event()

    def observe(lag: float) -> None:
        metrics.observe_loop_lag(lag)
        seen.set()

    monitor = asyncio.create_task(LoopLagMonitor(observe, interval=INTERVAL).run())
    try:
        await asyncio.wait_for(seen.wait(), timeout=10)
        seen.clear()
        time.sleep(BLOCK)  # the blocking call whose effect is measured
        await asyncio.wait_for(seen.wait(), timeout=10)
    finally:
        monitor.cancel()
        await asyncio.gather(monitor, return_exceptions=True)
    got = samples(metrics)
    assert got[("herald_event_loop_lag_seconds_count", ())] >= 2
    # The blocked wake-up is above the 0.25 s bound; nothing is beyond the histogram's top.
    above = (
        got[("herald_event_loop_lag_seconds_count", ())]
        - got[("herald_event_loop_lag_seconds_bucket", (("le", "0.25"),))]
    )
    assert above >= 1
    assert got[("herald_event_loop_lag_max_seconds", ())] >= BLOCK - INTERVAL
    assert monitor.cancelled()


async def test_the_monitor_runs_until_cancelled() -> None:
    recorder = Recorder()
    monitor = asyncio.create_task(LoopLagMonitor(recorder, interval=INTERVAL).run())
    for _ in range(3):
        await recorder.next_sample()
    monitor.cancel()
    await asyncio.gather(monitor, return_exceptions=True)
    assert monitor.cancelled()
    assert len(recorder.samples) >= 3
