"""In-process backend: threads of one process share a budget through a process-wide registry.

Two pools opened with the same key in one process share one state (one TAT, one slot table), so
two operators or two engines in the same worker cannot double the rate between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time

from airflow_dify.limits.base import PoolSettings
from airflow_dify.limits.gcra import BudgetState, correct_tokens, reserve
from airflow_dify.limits.penalty import penalise
from airflow_dify.limits.pool import Busy, Clock, Grant, Permit, ReservingPool, Sleep


class _Shared:
    """State of one key in this process, guarded by ``cond``."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.state = BudgetState()
        self.slots: dict[str, float] = {}  # slot id -> lease expiry
        self.generation = 0  # bumped on every release so a waiter cannot miss a wake-up
        self.thread_waiters = 0  # threads in cond.wait(): a release with none skips notify_all
        self.ids = itertools.count(1)
        #: Coroutines waiting for a slot, each woken on its own loop (releases come from any thread).
        self.async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def wake_all(self) -> None:
        """Under ``cond``: wake every waiting thread and coroutine."""
        if self.thread_waiters:
            self.cond.notify_all()
        if not self.async_waiters:
            return
        waiters, self.async_waiters = self.async_waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_REGISTRY: dict[str, _Shared] = {}
_REGISTRY_LOCK = threading.Lock()


def _shared(key: str) -> _Shared:
    with _REGISTRY_LOCK:
        return _REGISTRY.setdefault(key, _Shared())


class MemoryPool(ReservingPool):
    """Budget shared by the threads of this process.

    :param settings: limits; ``settings.key`` selects the process-wide shared state.
    :param clock: defaults to ``time.monotonic``; pools sharing a key must share a clock.
    :param sleep: defaults to ``time.sleep``.
    """

    local_store = True

    def __init__(
        self, settings: PoolSettings, *, clock: Clock | None = None, sleep: Sleep | None = None
    ) -> None:
        super().__init__(settings, clock=clock or time.monotonic, sleep=sleep or time.sleep)
        self._sh = _shared(settings.key)
        rates = self.rates
        #: No rate budget: the pool is a process-wide semaphore, and a free slot is taken in one step.
        self._unmetered = rates.request_interval is None and rates.token_interval is None

    async def acquire_async(self, tokens: int = 0, *, timeout: float | None = None) -> Permit:
        """The general acquire, except that an unmetered pool with a slot free (and no 429 pause)
        grants it at once: the common case of a batch under ``max_concurrency`` alone."""
        if self._unmetered and not self._injected_sleep:
            permit = self._free_slot_now(self.rates.clamp(tokens))
            if permit is not None:
                return permit
        return await super().acquire_async(tokens, timeout=timeout)

    def _free_slot_now(self, tokens: int) -> Permit | None:
        with self._sh.cond:
            now = self._clock()
            if self._sh.state.penalty_until > now or self._full(now):
                return None
            return Permit(self, self._take_slot(now), tokens, now)

    def _full(self, now: float) -> bool:
        """Under ``cond``: every slot is held (expired leases are dropped first)."""
        cap, slots = self.settings.max_concurrency, self._sh.slots
        if cap is None or len(slots) < cap:
            return False
        for slot_id in [s for s, exp in slots.items() if exp <= now]:
            del slots[slot_id]
        return len(slots) >= cap

    def _take_slot(self, start: float) -> str | None:
        """Under ``cond``: a new slot whose lease runs from ``start`` (None without a cap)."""
        if self.settings.max_concurrency is None:
            return None
        slot_id = str(next(self._sh.ids))
        self._sh.slots[slot_id] = start + self.settings.lease_seconds
        return slot_id

    def _try_grant(self, tokens: int, max_wait: float) -> Grant | Busy | None:
        sh = self._sh
        with sh.cond:
            now = self._clock()
            if self._full(now):
                return Busy(min(sh.slots.values()) - now, sh.generation)
            start = reserve(sh.state, self.rates, now, tokens, max_wait)
            if start is None:
                return None
            return Grant(self._take_slot(start), start - now)

    def _wait_for_slot(self, busy: Busy, seconds: float) -> None:
        if self._injected_sleep:  # a fake clock only moves through its sleep: poll with it
            self._sleep(seconds)
            return
        sh = self._sh
        with sh.cond:
            if sh.generation == busy.mark:  # nothing released since we looked
                sh.thread_waiters += 1
                try:
                    sh.cond.wait(seconds)
                finally:
                    sh.thread_waiters -= 1

    async def _wait_for_slot_async(self, busy: Busy, seconds: float) -> None:
        """Wait on the loop (no thread, no polling) until a release or ``seconds``."""
        if self._injected_sleep:
            self._sleep(seconds)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        sh = self._sh
        with sh.cond:
            if sh.generation != busy.mark:  # released since we looked
                return
            sh.async_waiters.append((loop, future))
        try:
            await asyncio.wait_for(future, seconds)
        except asyncio.TimeoutError:
            pass
        finally:
            if not future.done():
                with sh.cond:
                    if (loop, future) in sh.async_waiters:
                        sh.async_waiters.remove((loop, future))

    def _release(self, slot_id: str | None, token_delta: int) -> None:
        sh = self._sh
        with sh.cond:
            correct_tokens(sh.state, self.rates, self._clock(), token_delta)
            if slot_id is not None and sh.slots.pop(slot_id, None) is not None:
                sh.generation += 1
                sh.wake_all()

    def _penalise(self) -> float:
        with self._sh.cond:
            now = self._clock()
            return penalise(self._sh.state, now) - now

    def _known_penalty_until(self) -> float:
        return self._sh.state.penalty_until  # a float read: atomic, no lock needed
