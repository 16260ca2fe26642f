"""Run calls concurrently with at most ``max_concurrency`` rows outstanding, results in completion order.

A row is *outstanding* from the moment its call is submitted until the caller has taken its
outcome and called :meth:`CallPool.release`. Capping outstanding rows (not just running calls)
keeps memory flat for any table size; the caller's group commit (batch/commits.py) bounds what is
answered but not yet saved, so a crash loses at most ``max_concurrency + commit_rows - 1`` rows.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain
from typing import Any, Generic, Protocol, TypeVar

from airflow_dify.outcome import RowOutcome

T = TypeVar("T")


class Done(Protocol):
    """A finished call as ``wait`` reads it: a concurrent future, or an asyncio task."""

    def cancelled(self) -> bool: ...

    def result(self) -> RowOutcome | None: ...


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


class BoundedCalls(Generic[T]):
    """What every engine shares: the outstanding-row cap, the completion queue and the stop rules.

    Subclasses only say how one guarded call is started (:meth:`_submit`): on a worker thread, or
    as a coroutine on the engine's event loop. Completions come back as futures on a thread-safe
    queue either way, so :meth:`wait` runs on the caller's thread (the one that writes to SQL).

    :param may_start: asked right before each call (budget cap); False stops the pool.
    """

    def __init__(
        self,
        *,
        max_concurrency: int,
        stop: StopSignal | None = None,
        may_start: Callable[[T], bool] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self.stop = stop or StopSignal()
        self._may_start = may_start
        # Completions, in batches: the thread engine puts one per call, the asyncio engine all
        # those of one pass of its loop (one wake-up of the caller, not one per call).
        self._done: queue.SimpleQueue[Sequence[Done]] = queue.SimpleQueue()
        self.outstanding = 0
        self.exhausted = False

    def _starts(self, item: T) -> bool:
        """Right before a call: not after ``stop``, and not when the budget says no."""
        if self.stop.stopped:
            return False
        if self._may_start is not None and not self._may_start(item):
            self.stop.stop("budget")
            return False
        return True

    def _submit(self, items: list[T]) -> None:
        """Start the guarded calls of ``items``; each ends up on ``_done`` once it is over."""
        raise NotImplementedError

    def fill(self, items: Iterator[T]) -> None:
        """Submit items until ``max_concurrency`` are outstanding, the iterator ends, or we stop."""
        taken: list[T] = []
        while (
            not self.exhausted
            and not self.stop.stopped
            and self.outstanding + len(taken) < self.max_concurrency
        ):
            item = next(items, _END)
            if item is _END:
                self.exhausted = True
                break
            taken.append(item)
        if taken:
            self.outstanding += len(taken)
            self._submit(taken)

    @property
    def finished(self) -> bool:
        return self.outstanding == 0 and (self.exhausted or self.stop.stopped)

    def wait(self, timeout: float) -> list[RowOutcome]:
        """Block up to ``timeout`` for one completion, then take every completion already there."""
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
        for future in chain.from_iterable(batches):
            if future.cancelled():  # cancelled by close() before it could finish: nothing to save
                self.outstanding -= 1
                continue
            outcome = future.result()  # a bug in `call` surfaces here, after the batch is saved
            if outcome is None:  # never started (stopped): nothing to save
                self.outstanding -= 1
            else:
                outcomes.append(outcome)
        return outcomes

    def release(self, n: int) -> None:
        """The caller took ``n`` outcomes (saved, or waiting for their commit): their slots are free."""
        self.outstanding -= n

    def close(self) -> None:
        raise NotImplementedError


class CallPool(BoundedCalls[T]):
    """A bounded thread pool fed from an iterator; the caller acknowledges saved results.

    :param call: turns one item into its outcome; must not raise (errors are failed outcomes).
    :param may_start: asked in the worker right before each call (budget cap); False stops the pool.
    """

    def __init__(
        self,
        call: Callable[[T], RowOutcome],
        *,
        max_concurrency: int,
        stop: StopSignal | None = None,
        may_start: Callable[[T], bool] | None = None,
    ) -> None:
        super().__init__(max_concurrency=max_concurrency, stop=stop, may_start=may_start)
        self._call = call
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="dify-call")

    def _guarded(self, item: T) -> RowOutcome | None:
        return self._call(item) if self._starts(item) else None

    def _submit(self, items: list[T]) -> None:
        for item in items:
            self._executor.submit(self._guarded, item).add_done_callback(self._one_done)

    def _one_done(self, future: Future[RowOutcome | None]) -> None:
        self._done.put((future,))

    def close(self) -> None:
        self.stop.stop(self.stop.reason or "closed")
        self._executor.shutdown(wait=True, cancel_futures=True)


_END: Any = object()
