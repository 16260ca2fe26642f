"""The batch engine: every call of a run is a coroutine on ONE event loop, on ONE thread.

:class:`CallPool` runs calls as tasks on a background loop (uvloop when installed) with at most
``max_concurrency`` rows *outstanding*: from the moment a call is submitted until the caller has
taken its outcome and called :meth:`CallPool.release`. Capping outstanding rows (not just running
calls) keeps memory flat for any table size; the caller's group commit (batch/commits.py) bounds
what is answered but not yet saved, so a crash loses at most ``max_concurrency + commit_rows - 1``
rows. The caller (``drive``) stays a plain sync loop on its own thread: the one that reads and
writes SQL, so a DB-API connection is only ever used on the thread that made it. 1,024 calls at
once are 1,024 coroutines, not 1,024 threads.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator
from itertools import chain
from typing import Any, Generic, TypeVar

from airflow_dify.client.loop import LoopThread
from airflow_dify.outcome import RowOutcome

log = logging.getLogger("airflow_dify.batch")
T = TypeVar("T")
#: How long close() waits for a cancelled call to unwind (settle its permit, close its stream).
CANCEL_GRACE_SECONDS = 10.0
Task = asyncio.Task[RowOutcome | None]


class StopSignal:
    """Set by anyone (budget guard, on_kill, a signal handler) to stop starting new calls."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def stop(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def stopped(self) -> bool:
        return self._event.is_set()


class CallPool(Generic[T]):
    """Calls as coroutines on one background event loop, fed from an iterator; the caller
    acknowledges saved results.

    Two hops between the caller's thread and the loop, both batched: one per :meth:`fill`
    (however many calls it starts) and one per pass of the loop (every call ended in it), so the
    caller wakes once for a burst of completions, not once per call.

    :param call: a coroutine function turning one item into its outcome; must not raise (errors
        are failed outcomes).
    :param may_start: asked on the loop right before each call (budget cap); False stops the pool.
    :param on_close: awaited on the loop once every call has ended (close the aiohttp session,
        the Redis asyncio client), before the loop is closed.
    :param close_timeout: how long :meth:`close` lets running calls finish before cancelling them
        (None: as long as they take; a call that started may be billed, so its answer is awaited).
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
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self.stop = stop or StopSignal()
        self.outstanding = 0
        self.exhausted = False
        self._call = call
        self._may_start = may_start
        self._on_close = on_close
        self._close_timeout = close_timeout
        # Completions in batches, one per pass of the loop; read on the caller's thread.
        self._done: queue.SimpleQueue[list[Task]] = queue.SimpleQueue()
        self._loop = LoopThread("dify-engine")
        # Touched on the loop's thread only: the running tasks, and those ended in this pass.
        self._running: set[Task] = set()
        self._ended: list[Task] = []

    # -- the caller's side -------------------------------------------------------------------------
    def fill(self, items: Iterator[T], room: int | None = None) -> None:
        """Submit items until ``max_concurrency`` (or ``room``, if lower) are outstanding, the
        iterator ends, or we stop."""
        limit = self.max_concurrency if room is None else min(self.max_concurrency, room)
        taken: list[T] = []
        while not self.exhausted and not self.stop.stopped and self.outstanding + len(taken) < limit:
            item = next(items, _END)
            if item is _END:
                self.exhausted = True
                break
            taken.append(item)
        if taken:
            self.outstanding += len(taken)
            self._loop.loop.call_soon_threadsafe(self._start, taken)

    @property
    def finished(self) -> bool:
        return self.outstanding == 0 and (self.exhausted or self.stop.stopped)

    def wait(self, timeout: float) -> list[RowOutcome]:
        """Block up to ``timeout`` for completions, then take every completion already there."""
        outcomes: list[RowOutcome] = []
        try:
            batches = [self._done.get(timeout=timeout)]
        except queue.Empty:
            return outcomes
        while True:
            try:
                batches.append(self._done.get_nowait())
            except queue.Empty:
                break
        for task in chain.from_iterable(batches):
            if task.cancelled():  # cancelled by close() before it could finish: nothing to save
                self.outstanding -= 1
                continue
            outcome = task.result()  # a bug in `call` surfaces here, after the batch is saved
            if outcome is None:  # never started (stopped): nothing to save
                self.outstanding -= 1
            else:
                outcomes.append(outcome)
        return outcomes

    def release(self, n: int) -> None:
        """The caller took ``n`` outcomes (saved, or waiting for their commit): their slots are free."""
        self.outstanding -= n

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

    # -- the loop's side ---------------------------------------------------------------------------
    def _starts(self, item: T) -> bool:
        """Right before a call: not after ``stop``, and not when the budget says no."""
        if self.stop.stopped:
            return False
        if self._may_start is not None and not self._may_start(item):
            self.stop.stop("budget")
            return False
        return True

    async def _guarded(self, item: T) -> RowOutcome | None:
        return await self._call(item) if self._starts(item) else None

    def _start(self, items: list[T]) -> None:
        create = self._loop.loop.create_task
        for item in items:
            task = create(self._guarded(item))
            self._running.add(task)
            task.add_done_callback(self._end)

    def _end(self, task: Task) -> None:
        self._running.discard(task)
        if not self._ended:
            self._loop.loop.call_soon(self._hand_over)
        self._ended.append(task)

    def _hand_over(self) -> None:
        """Every call ended in this pass of the loop, to ``wait`` at once: one wake-up."""
        ended, self._ended = self._ended, []
        if ended:
            self._done.put(ended)

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
        log.warning("closing the engine's connections failed: %s", type(exc).__name__)


_END: Any = object()

__all__ = ["CallPool", "StopSignal"]
