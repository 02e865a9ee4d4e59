"""Group commit: work submitted concurrently on one node runs together, in groups.

Whatever is submitted while a group runs waits for the next group, so a burst costs one
transaction (one lock acquisition, one commit, one fsync) per group instead of one per
item, and a lone item runs at once: no timer, no added latency when the node is idle.
Each caller still returns only once its own item ran, with its own result or error.
Used for audit appends (:mod:`herald.service.audit`) and publishes
(:mod:`herald.service.messages`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupRunner"]

T = TypeVar("T")
R = TypeVar("R")


class GroupRunner(Generic[T, R]):
    """Runs the items added concurrently in groups of at most ``group_max``, in order.

    Args:
        run: Runs one group; returns one result per item, in order. An exception in the
            list is that item's alone; an exception raised fails the whole group.
        group_max: Most items per group.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        group_max: int,
    ) -> None:
        self._run = run
        self._group_max = group_max
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: Groups run so far, for tests and metrics.
        self.runs = 0

    async def add(self, item: T) -> R:
        """Run ``item`` (with whatever else is waiting); its result once its group ran."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        # shield: a caller that is cancelled must not cancel the group of the others.
        return await asyncio.shield(done)

    async def _flush(self) -> None:
        try:
            while self._pending:
                group = self._pending[: self._group_max]
                del self._pending[: self._group_max]
                try:
                    results = await self._run([item for item, _ in group])
                except BaseException as exc:
                    _fail(group, exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                self.runs += 1
                _settle(group, results)
        except asyncio.CancelledError:
            for _, done in self._pending:
                if not done.done():
                    done.cancel()
            self._pending.clear()
            raise
        finally:
            self._flusher = None


def _fail(group: list[tuple[T, asyncio.Future[R]]], exc: BaseException) -> None:
    for _, done in group:
        if not done.done():
            done.set_exception(exc)


def _settle(group: list[tuple[T, asyncio.Future[R]]], results: Sequence[R | BaseException]) -> None:
    """Hand each caller its own result (or error)."""
    if len(results) != len(group):
        _fail(group, RuntimeError("a group run returned the wrong number of results"))
        return
    for (_, done), result in zip(group, results, strict=True):
        if done.done():
            continue
        if isinstance(result, BaseException):
            done.set_exception(result)
        else:
            done.set_result(result)
