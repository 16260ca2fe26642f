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

import asyncio
import math
import random
import threading
import time
from collections.abc import Callable, Generator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from airflow_dify.limits.base import PoolSettings, PoolTimeout
from airflow_dify.limits.gcra import Rates
from airflow_dify.limits.penalty import PENALTY_MAX
from airflow_dify.limits.window import SendWindow

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


#: What the acquire steps ask their driver to do: ("grant", tokens, max_wait), ("slot", busy,
#: seconds) or ("sleep", seconds); the driver sends back the grant's outcome (else None).
Step = tuple[Any, ...]


#: Added to a wait that the send window decides: uvloop's timers run on a millisecond clock
#: (the loop's time truncated, the delay rounded), so they fire up to 1.5 ms early. Woken early, a
#: waiter finds its turn not yet come and sleeps again for well under a millisecond, which uvloop
#: runs as "at once": at bench scenario d that was 6.3 extra wake-ups per row. 2 ms late is never
#: early; the price is sends ~1 ms after their turn, 0.1 % of the rate while the window binds.
TIMER_SLACK = 0.002


def poll_delay(limit: float) -> float:
    """A short jittered poll (5-30 ms) for cross-process slot waits, so waiters don't wake in lock-step."""
    return min(limit, random.uniform(0.005, 0.03))


class ReservingPool:
    """Base of the memory, SQLite and Redis pools (implements ``RateLimitPool``).

    :param settings: the limits of this budget; ``settings.key`` names the shared state.
    :param clock: seconds as a float, in the backend's time base.
    :param sleep: how to wait (injected so unit tests run on a fake clock).
    """

    #: The store is this process's memory: its operations never wait on I/O.
    local_store = False

    def __init__(self, settings: PoolSettings, *, clock: Clock, sleep: Sleep) -> None:
        self.settings = settings
        self.rates = Rates.from_settings(settings)
        self._clock = clock
        self._sleep = sleep
        #: A test's fake clock moves only through its own sleep: the coroutine path uses it too.
        self._injected_sleep = sleep is not time.sleep
        # A pause this process learnt of (its own throttled() calls): callers that reserved before
        # it still honour it after their sleep, without another store round trip.
        self._local_penalty_until = -math.inf
        # This process's sends per second, checked on the real clock (a test's fake clock never
        # moves it, so tests that inject one see the pure GCRA).
        rpm = settings.requests_per_minute
        self._window = None if rpm is None or self._injected_sleep else SendWindow.for_rpm(rpm)

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

    # -- the same store operations for coroutines; backends with I/O override them ---------------
    async def _try_grant_async(self, tokens: int, max_wait: float) -> Grant | Busy | None:
        return self._try_grant(tokens, max_wait)

    async def _release_async(self, slot_id: str | None, token_delta: int) -> None:
        self._release(slot_id, token_delta)

    async def _penalise_async(self) -> float:
        return self._penalise()

    async def _wait_for_slot_async(self, busy: Busy, seconds: float) -> None:
        await asyncio.sleep(poll_delay(seconds))

    # -- RateLimitPool -------------------------------------------------------------------------
    def _acquire_steps(self, tokens: int, timeout: float | None) -> Generator[Step, Any, Permit]:
        """The acquire algorithm once, for the thread and the coroutine drivers: it yields what to
        do (grant, wait for a slot, sleep) and gets each grant's outcome back."""
        charged = self.rates.clamp(tokens)
        now = self._clock()
        deadline = math.inf if timeout is None else now + max(timeout, 0.0)
        while True:
            outcome = yield ("grant", charged, deadline - now)
            if outcome is None:
                raise PoolTimeout(f"no permit within {timeout} s: the rate budget is booked beyond it")
            if isinstance(outcome, Grant):
                break
            now = self._clock()
            if now >= deadline:
                raise PoolTimeout(f"no concurrency slot free within {timeout} s")
            yield ("slot", outcome, max(0.0, min(outcome.retry_in, deadline - now)))
            now = self._clock()
        start = self._clock() + outcome.wait
        window, wait = self._window, outcome.wait
        booked = False
        try:
            if window is not None:  # this send's turn in the window, booked with the reservation
                at = time.monotonic() + max(wait, 0.0)
                turn = window.book(at)
                booked = True
                if turn > at:  # the window binds: one sleep to the later of the two
                    wait += turn - at + TIMER_SLACK
            if wait > 0:
                yield ("sleep", wait)
            late = self._known_penalty_until() - max(self._clock(), start)
            if late > 0:
                late = min(late, PENALTY_MAX)
                yield ("sleep", late)
                start += late
            if window is not None:  # a stall woke several reservations at once: spread them
                while (more := window.admit(time.monotonic(), queued=True)) > 0:
                    yield ("sleep", more + TIMER_SLACK)
                booked = False
        finally:
            if booked and window is not None:  # stopped waiting: give the turn up
                window.leave()
        return Permit(self, outcome.slot_id, charged, start)

    def acquire(self, tokens: int = 0, *, timeout: float | None = None) -> Permit:
        with closing(self._acquire_steps(tokens, timeout)) as steps:  # interrupted: leave the queue
            return self._drive(steps)

    def _drive(self, steps: Generator[Step, Any, Permit]) -> Permit:
        reply: Any = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as done:
                return done.value
            reply = None
            if step[0] == "grant":
                reply = self._try_grant(step[1], step[2])
            elif step[0] == "slot":
                self._wait_for_slot(step[1], step[2])
            else:
                self._sleep(step[1])

    async def acquire_async(self, tokens: int = 0, *, timeout: float | None = None) -> Permit:
        """:meth:`acquire` for a coroutine: waits without blocking the loop or taking a thread.

        Cancelled after its slot was granted (the caller's task was cancelled while waiting for
        its reserved start), it gives the slot back rather than leaving it to its lease.
        """
        steps = self._acquire_steps(tokens, timeout)
        reply: Any = None
        granted: Grant | None = None
        try:
            while True:
                try:
                    step = steps.send(reply)
                except StopIteration as done:
                    granted = None  # the permit owns the slot now
                    return done.value
                reply = None
                if step[0] == "grant":
                    reply = await self._try_grant_async(step[1], step[2])
                    granted = reply if isinstance(reply, Grant) else None
                elif step[0] == "slot":
                    await self._wait_for_slot_async(step[1], step[2])
                elif self._injected_sleep:
                    self._sleep(step[1])  # a fake clock moves only through its sleep
                else:
                    await asyncio.sleep(step[1])
        finally:
            steps.close()  # cancelled in the send window's queue: give the turn up
            if granted is not None and granted.slot_id is not None:
                await self._release_async(granted.slot_id, 0)

    def throttled(self) -> None:
        remaining = self._penalise()
        self._local_penalty_until = max(self._local_penalty_until, self._clock() + remaining)

    async def throttled_async(self) -> None:
        remaining = await self._penalise_async()
        self._local_penalty_until = max(self._local_penalty_until, self._clock() + remaining)

    async def aclose(self) -> None:
        """Close what the coroutine path opened on the running loop (Redis' asyncio client)."""
        return None

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

    def _claim(self, actual_tokens: int | None) -> int | None:
        """The token correction to release with, or None: already settled, or nothing to do."""
        if not self._once.acquire(blocking=False):
            return None
        delta = 0
        if actual_tokens is not None and self._pool.rates.token_interval is not None:
            delta = max(int(actual_tokens), 0) - self.tokens
        return delta if self._slot_id is not None or delta else None

    def settle(self, actual_tokens: int | None = None) -> None:
        delta = self._claim(actual_tokens)
        if delta is not None:
            self._pool._release(self._slot_id, delta)

    async def settle_async(self, actual_tokens: int | None = None) -> None:
        """:meth:`settle` for a coroutine: the store round trip does not block the loop."""
        delta = self._claim(actual_tokens)
        if delta is None:
            return
        pool = self._pool
        if pool.local_store:  # no round trip: no coroutine either
            pool._release(self._slot_id, delta)
        else:
            await pool._release_async(self._slot_id, delta)

    def __enter__(self) -> Permit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.settle()
