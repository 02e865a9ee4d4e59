"""``herald serve`` collects the young generation less often (event-loop pauses, bench/soak)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from herald import limits
from herald.server.serve import tune_gc

BURSTS = 50
BURST_OBJECTS = 3000  # alive at once: over CPython's default threshold, under ours


@pytest.fixture
def restore_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_tune_gc_raises_only_the_young_threshold(restore_thresholds: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc()
    assert gc.get_threshold() == (limits.GC_YOUNG_THRESHOLD, 10, 10)
    assert limits.GC_YOUNG_THRESHOLD > 700


def test_a_burst_of_short_lived_objects_promotes_nothing(restore_thresholds: None) -> None:
    """Bursts of objects freed soon after they were made trigger no collection at all.

    Collections are triggered by the net growth of tracked objects. With CPython's default
    threshold (700) each burst here runs young collections that find its objects alive and
    promote them, and every tenth one a middle collection that promotes them into the oldest
    generation, whose size is what makes full collections (and their pauses) long.
    """
    tune_gc()
    gc.collect()

    def collections() -> tuple[int, int]:
        stats = gc.get_stats()
        return stats[0]["collections"], stats[1]["collections"]

    before = collections()
    for _ in range(BURSTS):
        # Like a fan-out: a few thousand objects alive at once, all freed soon after.
        burst = [{"seq": i} for i in range(BURST_OBJECTS)]
        del burst
    assert collections() == before
