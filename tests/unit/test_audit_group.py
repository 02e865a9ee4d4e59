"""Grouped audit appends (herald.service.audit.AuditGroup): pure logic over a fake append."""

from __future__ import annotations

import asyncio

import pytest

from herald.errors import StorageError
from herald.service.audit import AuditGroup


class Log:
    """A stand-in for ``append_audit``: hands out consecutive indices, one call per group."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.groups: list[list[object]] = []
        self.fail_first = fail_first
        self.release = asyncio.Event()
        self.release.set()

    async def append(self, events: list[object]) -> list[int]:
        await self.release.wait()
        await asyncio.sleep(0)  # an append takes a while: others queue up meanwhile
        if self.fail_first:
            self.fail_first -= 1
            raise StorageError("the database is unavailable")
        start = sum(len(g) for g in self.groups)
        self.groups.append(list(events))
        return list(range(start, start + len(events)))


async def test_concurrent_events_share_appends_and_get_their_own_index() -> None:
    log = Log()
    group = AuditGroup(log.append)  # type: ignore[arg-type]
    events = [f"e{n}" for n in range(50)]
    indices = await asyncio.gather(*(group.add(e) for e in events))  # type: ignore[arg-type]
    assert sorted(indices) == list(range(50))
    appended = [e for g in log.groups for e in g]
    assert [appended[i] for i in indices] == events  # each caller got its own entry's index
    assert group.runs == len(log.groups) < 50


async def test_groups_are_capped() -> None:
    log = Log()
    log.release.clear()
    group = AuditGroup(log.append, group_max=8)  # type: ignore[arg-type]
    waiting = [asyncio.create_task(group.add(n)) for n in range(20)]  # type: ignore[arg-type]
    await asyncio.sleep(0)
    log.release.set()
    await asyncio.gather(*waiting)
    assert max(len(g) for g in log.groups) <= 8
    assert sum(len(g) for g in log.groups) == 20


async def test_a_failed_append_fails_its_group_only() -> None:
    log = Log(fail_first=1)
    group = AuditGroup(log.append)  # type: ignore[arg-type]
    with pytest.raises(StorageError):
        await group.add("lost")  # type: ignore[arg-type]
    assert await group.add("kept") == 0  # type: ignore[arg-type]
    assert log.groups == [["kept"]]


async def test_a_cancelled_caller_does_not_cancel_the_append() -> None:
    log = Log()
    log.release.clear()
    group = AuditGroup(log.append)  # type: ignore[arg-type]
    cancelled = asyncio.create_task(group.add("a"))  # type: ignore[arg-type]
    other = asyncio.create_task(group.add("b"))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    cancelled.cancel()
    log.release.set()
    assert await other == 1
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert log.groups == [["a", "b"]]  # committed all the same: the log is append-only
