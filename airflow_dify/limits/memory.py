"""In-process backend: threads of one process share a budget through a process-wide registry.

Two pools opened with the same key in one process share one state (one TAT, one slot table), so
two operators or two engines in the same worker cannot double the rate between them.
"""

from __future__ import annotations

import itertools
import threading
import time

from airflow_dify.limits.base import PoolSettings
from airflow_dify.limits.gcra import BudgetState, correct_tokens, reserve
from airflow_dify.limits.penalty import penalise
from airflow_dify.limits.pool import Busy, Clock, Grant, ReservingPool, Sleep


class _Shared:
    """State of one key in this process, guarded by ``cond``."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.state = BudgetState()
        self.slots: dict[str, float] = {}  # slot id -> lease expiry
        self.generation = 0  # bumped on every release so a waiter cannot miss a wake-up
        self.ids = itertools.count(1)


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

    def __init__(
        self, settings: PoolSettings, *, clock: Clock | None = None, sleep: Sleep | None = None
    ) -> None:
        super().__init__(settings, clock=clock or time.monotonic, sleep=sleep or time.sleep)
        self._injected_sleep = sleep is not None
        self._sh = _shared(settings.key)

    def _expire(self, now: float) -> None:
        slots = self._sh.slots
        for slot_id in [s for s, exp in slots.items() if exp <= now]:
            del slots[slot_id]

    def _try_grant(self, tokens: int, max_wait: float) -> Grant | Busy | None:
        sh, cap = self._sh, self.settings.max_concurrency
        with sh.cond:
            now = self._clock()
            if cap is not None:
                if len(sh.slots) >= cap:
                    self._expire(now)
                if len(sh.slots) >= cap:
                    return Busy(min(sh.slots.values()) - now, sh.generation)
            start = reserve(sh.state, self.rates, now, tokens, max_wait)
            if start is None:
                return None
            slot_id = None
            if cap is not None:
                slot_id = str(next(sh.ids))
                sh.slots[slot_id] = start + self.settings.lease_seconds
            return Grant(slot_id, start - now)

    def _wait_for_slot(self, busy: Busy, seconds: float) -> None:
        if self._injected_sleep:  # a fake clock only moves through its sleep: poll with it
            self._sleep(seconds)
            return
        with self._sh.cond:
            if self._sh.generation == busy.mark:  # nothing released since we looked
                self._sh.cond.wait(seconds)

    def _release(self, slot_id: str | None, token_delta: int) -> None:
        sh = self._sh
        with sh.cond:
            correct_tokens(sh.state, self.rates, self._clock(), token_delta)
            if slot_id is not None and sh.slots.pop(slot_id, None) is not None:
                sh.generation += 1
                sh.cond.notify_all()

    def _penalise(self) -> float:
        with self._sh.cond:
            now = self._clock()
            return penalise(self._sh.state, now) - now

    def _known_penalty_until(self) -> float:
        return self._sh.state.penalty_until  # a float read: atomic, no lock needed
