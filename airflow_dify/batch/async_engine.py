"""The asyncio engine: every call of a run is a coroutine on ONE event loop, on ONE thread.

:class:`AsyncCallPool` is :class:`~airflow_dify.batch.engine.CallPool` with the calls moved from
a thread each to coroutines on a background loop (uvloop when installed): the same cap on
outstanding rows, the same stop and budget rules, checked right before each call on the loop, and
completions handed back through the same thread-safe queue, so ``drive`` (the caller's thread,
which writes to SQL) does not change. 1,024 calls at once are 1,024 coroutines, not 1,026 threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from airflow_dify.batch.engine import BoundedCalls, StopSignal
from airflow_dify.client.loop import LoopThread
from airflow_dify.outcome import RowOutcome

log = logging.getLogger("airflow_dify.batch")
T = TypeVar("T")
#: How long close() waits for a cancelled call to unwind (settle its permit, close its stream).
CANCEL_GRACE_SECONDS = 10.0


class AsyncCallPool(BoundedCalls[T]):
    """Calls as coroutines on one background event loop; the interface ``drive`` uses of CallPool.

    :param call: a coroutine function turning one item into its outcome; must not raise.
    :param may_start: asked on the loop right before each call (budget cap); False stops the pool.
    :param on_close: awaited on the loop once every call has ended (close the aiohttp session,
        the Redis asyncio client), before the loop is closed.
    :param close_timeout: how long :meth:`close` lets running calls finish before cancelling them
        (None: as long as they take, like the thread engine, whose threads cannot be cancelled).
    """

    def __init__(
        self,
        call: Callable[[T], Awaitable[RowOutcome]],
        *,
        max_concurrency: int,
        stop: StopSignal | None = None,
        may_start: Callable[[T], bool] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
        close_timeout: float | None = None,
    ) -> None:
        super().__init__(max_concurrency=max_concurrency, stop=stop, may_start=may_start)
        self._call = call
        self._on_close = on_close
        self._close_timeout = close_timeout
        self._loop = LoopThread("dify-engine")
        # Touched on the loop's thread only: the running tasks, and those ended in this pass.
        self._running: set[asyncio.Task[RowOutcome | None]] = set()
        self._ended: list[asyncio.Task[RowOutcome | None]] = []

    async def _guarded(self, item: T) -> RowOutcome | None:
        return await self._call(item) if self._starts(item) else None

    def _submit(self, items: list[T]) -> None:
        # One hop onto the loop per fill, however many calls it starts.
        self._loop.loop.call_soon_threadsafe(self._start, items)

    def _start(self, items: list[T]) -> None:
        create = self._loop.loop.create_task
        for item in items:
            task = create(self._guarded(item))
            self._running.add(task)
            task.add_done_callback(self._end)

    def _end(self, task: asyncio.Task[RowOutcome | None]) -> None:
        self._running.discard(task)
        if not self._ended:
            self._loop.loop.call_soon(self._hand_over)
        self._ended.append(task)

    def _hand_over(self) -> None:
        """Every call ended in this pass of the loop, to ``wait`` at once: one wake-up."""
        ended, self._ended = self._ended, []
        if ended:
            self._done.put(ended)

    def close(self) -> None:
        """Start nothing more; let running calls finish (their outcomes stay in the queue for
        :meth:`wait`: a paid answer is not dropped), cancel what outlives ``close_timeout``, then
        close the session and the loop. Calls not yet started see the stop and never start."""
        self.stop.stop(self.stop.reason or "closed")
        if self._loop.loop.is_closed():
            return
        try:
            self._loop.run(self._settle())
            if self._on_close is not None:
                self._loop.run(_quietly(self._on_close))
        finally:
            self._loop.close()

    async def _settle(self) -> None:
        """On the loop, after every start scheduled before close(): wait, then cancel the late."""
        if self._running:
            _, late = await asyncio.wait(set(self._running), timeout=self._close_timeout)
            if late:
                log.warning("cancelling %d call(s) still running at close", len(late))
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=CANCEL_GRACE_SECONDS)
        await asyncio.sleep(0)  # let the last done-callbacks run
        self._hand_over()


async def _quietly(closer: Callable[[], Awaitable[None]]) -> None:
    try:
        await closer()
    except Exception as exc:  # closing connections must not hide the run's own outcome
        log.warning("closing the asyncio engine's connections failed: %s", type(exc).__name__)


AsyncRowCaller = Callable[[Mapping[str, Any]], Awaitable[RowOutcome]]

__all__ = ["AsyncCallPool", "AsyncRowCaller"]
