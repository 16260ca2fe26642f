"""Run calls concurrently and stream one outcome per row, with bounded memory.

At most ``max_concurrency`` calls run and at most ``max_concurrency`` more wait in the executor,
so memory stays flat however many rows the iterator yields. Outcomes arrive in completion order
through a queue, so the caller can write them back while calls are still running.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from airflow_dify.batch.outcome import RowOutcome

T = TypeVar("T")


class StopSignal:
    """Set by anyone (budget guard, on_kill, a signal handler) to stop submitting new calls."""

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


def run_concurrently(
    items: Iterable[T],
    call: Callable[[T], RowOutcome],
    *,
    max_concurrency: int,
    stop: StopSignal | None = None,
    may_start: Callable[[T], bool] | None = None,
    poll_interval: float = 1.0,
) -> Iterator[RowOutcome | None]:
    """Yield each item's outcome as it completes; yields ``None`` every ``poll_interval`` while idle.

    ``call`` must not raise (it turns errors into failed outcomes); if it does, the exception
    propagates after in-flight calls finish. ``may_start`` is asked in the worker right before
    each call (budget cap); a False answer stops the batch. Items that never started are not
    yielded: they stay pending in the table.
    """
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    stop = stop or StopSignal()

    def guarded(item: T) -> RowOutcome | None:
        if stop.stopped:
            return None
        if may_start is not None and not may_start(item):
            stop.stop("budget")
            return None
        return call(item)

    done: queue.SimpleQueue[Future[RowOutcome | None]] = queue.SimpleQueue()
    in_flight = 0
    window = max_concurrency * 2  # keep workers busy while the main thread reads/writes SQL
    source = iter(items)
    exhausted = False
    pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="dify-call")
    try:
        while True:
            while not exhausted and not stop.stopped and in_flight < window:
                item = next(source, _END)
                if item is _END:
                    exhausted = True
                    break
                future = pool.submit(guarded, item)
                future.add_done_callback(done.put)
                in_flight += 1
            if in_flight == 0:
                return
            try:
                future = done.get(timeout=poll_interval)
            except queue.Empty:
                yield None
                continue
            in_flight -= 1
            outcome = future.result()
            if outcome is not None:
                yield outcome
    except GeneratorExit:
        stop.stop(stop.reason or "closed")
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_END: Any = object()
