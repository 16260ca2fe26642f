"""The acquire/settle loop shared by every backend; backends only implement the store operations.

Order inside a grant: the concurrency slot first, then the rate, in ONE store operation (a lock,
a transaction, a Lua script), so a reserved rate slot is never wasted waiting for concurrency and
a grant costs one round trip. The caller then sleeps until its reserved start outside any lock.

Concurrency slots are leases that expire ``lease_seconds`` after the reserved start, so a crashed
worker's slot comes back by itself. A live holder renews nothing: each permit covers one HTTP
attempt, which the client's timeout bounds well below the lease (keep ``lease_seconds`` above the
HTTP timeout plus the longest expected rate wait).
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from airflow_dify.limits.base import PoolSettings, PoolTimeout
from airflow_dify.limits.gcra import Rates
from airflow_dify.limits.penalty import PENALTY_MAX

Clock = Callable[[], float]
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Grant:
    """A reservation: the slot taken (``None`` without a concurrency cap) and the wait until start."""

    slot_id: str | None
    wait: float


@dataclass(frozen=True)
class Busy:
    """All slots are taken. ``retry_in``: seconds until the first lease expires; ``mark``: backend data."""

    retry_in: float
    mark: object = None


def poll_delay(limit: float) -> float:
    """A short jittered poll (5-30 ms) for cross-process slot waits, so waiters don't wake in lock-step."""
    return min(limit, random.uniform(0.005, 0.03))


class ReservingPool:
    """Base of the memory, SQLite and Redis pools (implements ``RateLimitPool``).

    :param settings: the limits of this budget; ``settings.key`` names the shared state.
    :param clock: seconds as a float, in the backend's time base.
    :param sleep: how to wait (injected so unit tests run on a fake clock).
    """

    def __init__(self, settings: PoolSettings, *, clock: Clock, sleep: Sleep) -> None:
        self.settings = settings
        self.rates = Rates.from_settings(settings)
        self._clock = clock
        self._sleep = sleep
        # A pause this process learnt of (its own throttled() calls): callers that reserved before
        # it still honour it after their sleep, without another store round trip.
        self._local_penalty_until = -math.inf

    # -- store operations, one round trip each -------------------------------------------------
    def _try_grant(self, tokens: int, max_wait: float) -> Grant | Busy | None:
        """Take a slot and reserve the rate atomically; ``None``: the start is beyond ``max_wait``."""
        raise NotImplementedError

    def _release(self, slot_id: str | None, token_delta: int) -> None:
        """Free the slot and charge ``token_delta`` tokens (negative: refund)."""
        raise NotImplementedError

    def _penalise(self) -> float:
        """Record a 429 in the backend; return the seconds until the pause ends."""
        raise NotImplementedError

    def _known_penalty_until(self) -> float:
        """The latest pause this process knows of, on the pool's clock."""
        return self._local_penalty_until

    def _wait_for_slot(self, busy: Busy, seconds: float) -> None:
        """Wait up to ``seconds`` for a slot to free up (backends poll or use a condition)."""
        self._sleep(seconds)

    # -- RateLimitPool -------------------------------------------------------------------------
    def acquire(self, tokens: int = 0, *, timeout: float | None = None) -> Permit:
        charged = self.rates.clamp(tokens)
        now = self._clock()
        deadline = math.inf if timeout is None else now + max(timeout, 0.0)
        while True:
            outcome = self._try_grant(charged, deadline - now)
            if outcome is None:
                raise PoolTimeout(f"no permit within {timeout} s: the rate budget is booked beyond it")
            if isinstance(outcome, Grant):
                break
            now = self._clock()
            if now >= deadline:
                raise PoolTimeout(f"no concurrency slot free within {timeout} s")
            self._wait_for_slot(outcome, max(0.0, min(outcome.retry_in, deadline - now)))
            now = self._clock()
        start = self._clock() + outcome.wait
        if outcome.wait > 0:
            self._sleep(outcome.wait)
        late = self._known_penalty_until() - max(self._clock(), start)
        if late > 0:
            late = min(late, PENALTY_MAX)
            self._sleep(late)
            start += late
        return Permit(self, outcome.slot_id, charged, start)

    def throttled(self) -> None:
        remaining = self._penalise()
        self._local_penalty_until = max(self._local_penalty_until, self._clock() + remaining)

    def close(self) -> None:
        return None

    def __enter__(self) -> ReservingPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"{type(self).__name__}(key={s.key!r}, max_concurrency={s.max_concurrency}, "
            f"requests_per_minute={s.requests_per_minute}, tokens_per_minute={s.tokens_per_minute})"
        )


class Permit:
    """One granted call. ``settle()`` exactly once (later calls do nothing); also a context manager.

    :ivar start: the reserved start on the pool's clock (tests read it; with a frozen fake clock
        it differs from the clock after the sleep).
    :ivar tokens: tokens reserved (the estimate, clamped; 0 without a TPM budget).
    """

    __slots__ = ("_pool", "_slot_id", "_once", "tokens", "start")

    def __init__(self, pool: ReservingPool, slot_id: str | None, tokens: int, start: float) -> None:
        self._pool = pool
        self._slot_id = slot_id
        self._once = threading.Lock()  # never released: a second settle() finds it taken
        self.tokens = tokens
        self.start = start

    @property
    def settled(self) -> bool:
        return self._once.locked()

    def settle(self, actual_tokens: int | None = None) -> None:
        if not self._once.acquire(blocking=False):
            return
        delta = 0
        if actual_tokens is not None and self._pool.rates.token_interval is not None:
            delta = max(int(actual_tokens), 0) - self.tokens
        if self._slot_id is not None or delta:
            self._pool._release(self._slot_id, delta)

    def __enter__(self) -> Permit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.settle()
