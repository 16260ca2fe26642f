"""The batch engine: every call of a run is a coroutine on ONE event loop, on ONE thread.

:class:`CallPool` runs calls on a background loop (uvloop when installed), up to
``max_concurrency`` slots (tasks), each calling ready rows back to back. The caller hands rows
over ahead of time, so a slot starts its next call the moment one ends; a call starts
only while fewer than ``max_concurrency`` run and fewer than ``unsaved_limit`` started calls wait
to be saved. ``drive`` sets that limit to the crash bound, ``max_concurrency + commit_rows - 1``:
a crash loses at most that many answered rows, and memory stays flat for any table size. The
caller (``drive``) stays a plain sync loop on its own thread: the one that reads and writes SQL,
so a DB-API connection is only ever used on the thread that made it. 1,024 calls at once are
1,024 coroutines, not 1,024 threads.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from itertools import chain
from typing import Any, Generic, TypeVar

from airflow_dify.client.loop import LoopThread
from airflow_dify.outcome import RowOutcome

log = logging.getLogger("airflow_dify.batch")
T = TypeVar("T")
#: Items handed to the loop at once while filling: a large first fill starts calls page by page.
HAND_OVER_STEP = 64
#: How long close() waits for a cancelled call to unwind (settle its permit, close its stream).
CANCEL_GRACE_SECONDS = 10.0
#: What a handed-over item comes back as: its outcome, the exception a bug in ``call`` raised,
#: ``None`` (never started) or ``_CANCELLED`` (cancelled by close()).
Completion = RowOutcome | BaseException | None


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
    reports which answers are saved.

    The caller hands items over in batches (one hop per :meth:`fill`); the loop keeps up to
    ``ahead`` of them ready and starts the next the moment a call ends, so a slot never waits for
    the caller's thread (busy reading a page or committing). Completions come back one batch per
    pass of the loop. A call starts only while fewer than ``max_concurrency`` run and fewer than
    ``unsaved_limit`` started calls are unsaved (not yet released): that is the crash
    bound, enforced where calls start.

    :param call: a coroutine function turning one item into its outcome; must not raise (errors
        are failed outcomes).
    :param ahead: items kept ready beyond the running ones (0: hand over only what may start).
    :param unsaved_limit: started calls not yet released, at most (default ``max_concurrency``:
        release each answer before the next call may start).
    :param save_margin: room under ``unsaved_limit`` at which completions are handed over at once
        and :attr:`saving_due` tells the caller to save what it holds: saving then lands before
        the limit stops the slots (at the limit every slot waits for the caller's commit).
    :param hold: seconds completions may wait on the loop to be handed over together while the
        caller has nothing to do for them (ready items left, room under ``unsaved_limit``); 0:
        every pass of the loop. :meth:`wait` reports when the oldest of them ended.
    :param may_start: asked on the loop right before each call (budget cap); False stops the pool.
    :param urgent: asked on the loop of each outcome; True hands it over at once, not after
        ``hold``, and starts nothing more until the caller has taken it from :meth:`wait` and
        called :meth:`resume` (the circuit breaker must see a revoked key before more calls start).
    :param on_close: awaited on the loop once every call has ended (close the HTTP connections,
        the Redis asyncio client), before the loop is closed.
    :param close_timeout: how long :meth:`close` lets running calls finish before cancelling them
        (None: as long as they take; a call that started may be billed, so its answer is awaited).
    """

    def __init__(
        self,
        call: Callable[[T], Awaitable[RowOutcome]],
        *,
        max_concurrency: int,
        ahead: int = 0,
        unsaved_limit: int | None = None,
        save_margin: int = 0,
        hold: float = 0.0,
        stop: StopSignal | None = None,
        may_start: Callable[[T], bool] | None = None,
        urgent: Callable[[RowOutcome], bool] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
        close_timeout: float | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self.unsaved_limit = max_concurrency if unsaved_limit is None else max(1, unsaved_limit)
        #: Unsaved count from which completions are handed over at once (and saving is due).
        self._save_from = max(1, self.unsaved_limit - max(0, save_margin))
        self.stop = stop or StopSignal()
        #: Handed over, outcome not yet taken by wait(); at most max_concurrency + ahead.
        self.outstanding = 0
        self.exhausted = False
        self._cap = max_concurrency + max(0, ahead)
        self._low_water = max(0, ahead) // 2
        self._hold = max(0.0, hold)
        #: time.monotonic() at which the oldest completion taken by the last wait() ended.
        self.oldest_end: float | None = None
        self._call = call
        self._may_start = may_start
        self._urgent = urgent
        # Urgent batches handed over (loop's thread) and taken by wait() (caller's): while more are
        # handed over than taken, fill() adds nothing (a slow commit must not refill behind a
        # revoked key); until resume() says the caller has seen them all, no call starts.
        self._urgent_put = 0
        self._urgent_taken = 0
        self._resumed = 0  # the caller's thread: urgent batches resume() has reported
        self._seen = 0  # the loop's thread: the same count, once resume()'s hop has arrived
        self._ended_urgent = False  # an urgent outcome among those not yet handed over
        self._on_close = on_close
        self._close_timeout = close_timeout
        self._released = 0  # written by the caller's thread only
        self._started = 0  # written by the loop's thread only
        self._drain_asked = False
        # Completions in batches (None: an item that never started), each with its first end time.
        self._done: queue.SimpleQueue[tuple[float, list[Completion], bool]] = queue.SimpleQueue()
        self._loop = LoopThread("dify-engine")
        # Touched on the loop's thread only: ready items, running slots, those ended in this pass.
        self._ready: deque[T] = deque()
        self._running: set[asyncio.Task[None]] = set()
        self._ended: list[Completion] = []
        self._first_end = 0.0
        self._soon = False
        self._timer: asyncio.TimerHandle | None = None

    # -- the caller's side -------------------------------------------------------------------------
    def fill(self, items: Iterator[T]) -> None:
        """Hand items over until ``max_concurrency + ahead`` are outstanding, the iterator ends,
        or we stop."""
        if self._urgent_put > self._urgent_taken:  # wait() first: the breaker may stop the run on it
            return
        if self.stop.stopped:
            if self.outstanding and not self._drain_asked:  # ready items come back as never started
                self._drain_asked = True
                self._loop.loop.call_soon_threadsafe(self._pump)
            return
        taken: list[T] = []
        room = self._cap - self.outstanding
        while not self.exhausted and room > 0:
            item = next(items, _END)
            if item is _END:
                self.exhausted = True
                break
            taken.append(item)
            room -= 1
            if len(taken) >= HAND_OVER_STEP:  # the loop starts these while we read the next page
                self._hand(taken)
                taken = []
        if taken:
            self._hand(taken)

    def _hand(self, taken: list[T]) -> None:
        self.outstanding += len(taken)
        self._loop.loop.call_soon_threadsafe(self._start, taken)

    @property
    def saving_due(self) -> bool:
        """The unsaved count is within ``save_margin`` of its limit: save now, before slots wait."""
        return self._started - self._released >= self._save_from

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
        self._urgent_taken += sum(urgent for _, _, urgent in batches)
        self.oldest_end = min(first for first, _, _ in batches)
        for completion in chain.from_iterable(ended for _, ended, _ in batches):
            self.outstanding -= 1
            if completion is None or completion is _CANCELLED:  # never started, or cancelled
                continue
            if isinstance(completion, BaseException):
                raise completion  # a bug in `call` surfaces here, after the batch is saved
            outcomes.append(completion)
        return outcomes

    def release(self, n: int) -> None:
        """``n`` answers taken from :meth:`wait` are saved (or need no saving): they no longer
        count against ``unsaved_limit``."""
        if n > 0:
            self._released += n
            if self._ready and not self._loop.loop.is_closed():  # the loop may wait for this
                self._loop.loop.call_soon_threadsafe(self._pump)

    def resume(self) -> None:
        """The caller has acted on every urgent outcome :meth:`wait` gave it (stopped the run, or
        not): calls start again (or, once stopped, the ready items come back as never started)."""
        if self._resumed < self._urgent_taken and not self._loop.loop.is_closed():
            self._resumed = self._urgent_taken
            self._loop.loop.call_soon_threadsafe(self._unpause, self._resumed)

    def close(self) -> None:
        """Start nothing more; let running calls finish (their outcomes stay in the queue for
        :meth:`wait`: a paid answer is not dropped), cancel what outlives ``close_timeout``, then
        close the connections and the loop. Items not yet started never start."""
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
    def _start(self, items: list[T]) -> None:
        self._ready.extend(items)
        self._pump()

    @property
    def _paused(self) -> bool:
        """An urgent outcome the caller has not acted on waits (handed over, or about to be)."""
        return self._ended_urgent or self._seen < self._urgent_put

    def _unpause(self, seen: int) -> None:
        self._seen = max(self._seen, seen)
        self._pump()

    def _pump(self) -> None:
        """Start a slot for each ready item while one is free and the unsaved count allows."""
        ready, running = self._ready, self._running
        if ready and self.stop.stopped:  # even at the unsaved limit: these will never start
            self._never_started(len(ready))
            ready.clear()
        while ready and len(running) < self.max_concurrency:
            item = self._take()
            if item is _END:
                return  # release() or resume() pumps again
            task: asyncio.Task[None] = self._loop.loop.create_task(self._slot(item))
            running.add(task)
            task.add_done_callback(self._slot_done)

    def _take(self) -> Any:
        """The next ready item to call now, or ``_END``: none ready, the unsaved count is at its
        limit, or the run stops (the ready items then come back as never started)."""
        ready = self._ready
        if not ready or self._paused or self._started - self._released >= self.unsaved_limit:
            return _END
        item = ready.popleft()
        if not self._starts(item):
            self._never_started(1 + len(ready))
            ready.clear()
            return _END
        self._started += 1
        return item

    async def _slot(self, item: T) -> None:
        """One slot: calls items back to back. The next call starts the moment one ends, in the
        same step of the loop, so when a wave of answers arrives together each slot sends its
        next request before the answers behind it are decoded (a task per call would first
        decode the whole wave, then start the next calls)."""
        while True:
            try:
                completion: RowOutcome | BaseException = await self._call(item)
            except Exception as exc:  # a bug in `call`: wait() raises it
                completion = exc
            urgent = self._is_urgent(completion)  # before the next call: it may pause the pool
            following = _END if isinstance(completion, BaseException) else self._take()
            if following is _END:
                self._running.discard(asyncio.current_task())
            self._ended_one(completion, urgent)
            if following is _END:
                return
            item = following

    def _slot_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if task.cancelled():  # by close(): the item it held comes back as cancelled
            self._ended_one(_CANCELLED, urgent=True)
        elif task.exception() is not None:
            self._ended_one(task.exception(), urgent=True)
        elif self._ready and len(self._running) < self.max_concurrency:
            self._pump()

    def _starts(self, item: T) -> bool:
        """Right before a call: not after ``stop``, and not when the budget says no."""
        if self.stop.stopped:
            return False
        if self._may_start is not None and not self._may_start(item):
            self.stop.stop("budget")
            return False
        return True

    def _never_started(self, n: int) -> None:
        if n:
            if not self._ended:
                self._first_end = time.monotonic()
            self._ended.extend([None] * n)
            self._hand_over_soon()

    def _ended_one(self, completion: Completion, urgent: bool) -> None:
        """One call ended: hand it over now or after ``hold``, with the others ending meanwhile."""
        if not self._ended:
            self._first_end = time.monotonic()
        self._ended.append(completion)
        if (
            urgent
            or self._hold <= 0
            or len(self._ready) <= self._low_water  # the caller should hand more over
            or not self._running
            or len(self._ended) >= self.max_concurrency
            or self._started - self._released >= self._save_from  # the caller should save soon
            or self.stop.stopped
        ):
            self._hand_over_soon()
        elif self._timer is None:
            self._timer = self._loop.loop.call_later(self._hold, self._hand_over)

    def _is_urgent(self, completion: RowOutcome | BaseException) -> bool:
        """A bug is handed over at once; an outcome ``urgent`` picks also pauses the pool."""
        if isinstance(completion, BaseException):
            return True
        if self._urgent is not None and self._urgent(completion):
            self._ended_urgent = True
            return True
        return False

    def _hand_over_soon(self) -> None:
        if not self._soon:
            self._soon = True
            self._loop.loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        """Completions so far, to ``wait`` at once: one wake-up of the caller for all of them."""
        self._soon = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ended, self._ended = self._ended, []
        if ended:
            urgent, self._ended_urgent = self._ended_urgent, False
            self._urgent_put += urgent  # before put(): wait() must never take more than were put
            self._done.put((self._first_end, ended, urgent))

    async def _settle(self) -> None:
        """On the loop, after every hand-over scheduled before close(): wait, then cancel the late."""
        self._never_started(len(self._ready))
        self._ready.clear()
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
_CANCELLED: Any = object()

__all__ = ["CallPool", "StopSignal"]
