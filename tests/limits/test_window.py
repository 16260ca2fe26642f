"""The send window: the GCRA's per-second promise kept on the wire after a stall."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import time
import uuid
from collections.abc import Generator
from typing import Any

import pytest

from airflow_dify.client.loop import new_event_loop
from airflow_dify.limits import PoolSettings, open_pool
from airflow_dify.limits.window import SKEW, SendWindow


def _admit_all(window: SendWindow, asks: list[float]) -> list[float]:
    """Admission times for requests asking at ``asks`` (sorted), each waiting as told."""
    admitted: list[float] = []
    for ask in asks:
        now = max(ask, admitted[-1] if admitted else ask)  # time only moves forward
        queued = False
        while (wait := window.admit(now, queued=queued)) > 0:
            now += wait
            queued = True
        admitted.append(now)
    assert window.queued == 0
    return admitted


def _worst(times: list[float], span: float) -> int:
    """Most admissions in any half-open window of ``span`` (less a nanosecond of float rounding)."""
    return max(bisect.bisect_left(times, t + span - 1e-9) - i for i, t in enumerate(times))


def test_for_rpm_is_one_short_of_the_gcra_burst_over_a_slightly_longer_span() -> None:
    window = SendWindow.for_rpm(6000)
    assert (window.limit, window.span) == (100, 1.0 + SKEW)
    slow = SendWindow.for_rpm(90)  # 1.5 per second: one send per GCRA interval (+ skew)
    assert (slow.limit, slow.span) == (1, pytest.approx(60 / 90 + SKEW))
    with pytest.raises(ValueError, match="limit >= 1"):
        SendWindow(0, 1.0)


def test_a_steady_gcra_stream_is_never_held() -> None:
    window = SendWindow.for_rpm(6000)
    asks = [k * 0.0102 for k in range(500)]  # 10.2 ms apart: 100 of them span 1.0 s + 20 ms
    assert _admit_all(window, asks) == asks


def test_a_backlog_after_a_stall_is_spread_not_burst() -> None:
    """Reservations due during a 300 ms stall all wake at its end: at most 100 go out in any
    1.01 s, so a server stamping each up to 10 ms late still counts at most 100 per second."""
    window = SendWindow.for_rpm(6000)
    asks = [k * 0.01 for k in range(100)] + [1.3] * 30 + [1.3 + k * 0.01 for k in range(30, 200)]
    admitted = _admit_all(window, sorted(asks))
    assert len(admitted) == len(asks)
    assert _worst(admitted, 1.0 + SKEW) <= 100
    skewed = sorted(t + (SKEW if i % 2 else 0.0) for i, t in enumerate(admitted))
    assert _worst(skewed, 1.0) <= 100
    assert admitted == sorted(admitted) and all(a >= b for a, b in zip(admitted, sorted(asks), strict=True))


def test_the_pool_sends_through_its_window() -> None:
    """A coroutine's permit waits for the window: 100 sends in the last 0.9 s hold it ~0.1 s."""
    pool = open_pool("memory", PoolSettings(key=f"w:{uuid.uuid4().hex}", requests_per_minute=6000))
    window = pool._window  # type: ignore[attr-defined]
    assert window is not None
    recent = time.monotonic() - 0.9
    for _ in range(100):
        assert window.admit(recent) == 0.0

    async def acquire() -> float:
        t0 = time.monotonic()
        permit = await pool.acquire_async()
        await permit.settle_async()
        return time.monotonic() - t0

    waited = asyncio.run(acquire())
    pool.close()
    assert 0.07 <= waited <= 0.5


def _full(window: SendWindow, last: float) -> list[float]:
    """``window.limit`` sends 10 ms apart, the last at ``last``: the next one waits."""
    sends = [last - (window.limit - 1 - k) * 0.01 for k in range(window.limit)]
    assert [window.admit(t) for t in sends] == [0.0] * window.limit
    return sends


def test_waiters_that_ask_at_once_are_told_their_own_turns_and_each_wakes_once() -> None:
    """16 calls reach a full window in the same instant: each is told a later turn than the one
    before (10 ms apart, as the sends they wait for), and each is admitted at the first ask of its
    turn. Told the same wait, all 16 woke at every turn and 15 went back to sleep."""
    window = SendWindow.for_rpm(6000)
    _full(window, 0.99)
    waits = [window.admit(1.0) for _ in range(16)]
    turns = [1.0 + w for w in waits]
    assert all(later - earlier == pytest.approx(0.01) for earlier, later in itertools.pairwise(turns))
    assert turns[0] == pytest.approx(1.01)  # the oldest send (at 0.0) is one span old
    assert window.queued == 16
    assert [window.admit(turn + 1e-9, queued=True) for turn in turns] == [0.0] * 16
    assert window.queued == 0
    assert window.admit(turns[-1] + 0.001) > 0  # the window is full again: the next one waits


def test_waiters_beyond_one_window_are_told_turns_a_span_later() -> None:
    """At RPM 90 (one send per 0.68 s) three waiters queue behind one send: a span apart each."""
    window = SendWindow.for_rpm(90)
    assert window.admit(0.0) == 0.0
    turns = [0.1 + window.admit(0.1) for _ in range(3)]
    assert turns == pytest.approx([window.span * k for k in (1, 2, 3)])
    for turn in turns:
        assert window.admit(turn + 1e-9, queued=True) == 0.0


def test_a_waiter_that_leaves_gives_its_turn_up() -> None:
    window = SendWindow.for_rpm(6000)
    _full(window, 0.99)
    first, second = window.admit(1.0), window.admit(1.0)
    window.leave()  # the second is cancelled while it waits
    assert window.queued == 1
    assert window.admit(1.0 + first + 1e-9, queued=True) == 0.0
    assert window.queued == 0
    assert window.admit(1.0 + second + 1e-9) == 0.0  # its turn came, nobody is queued: admitted at once


def test_a_newcomer_is_not_admitted_ahead_of_the_waiters_whose_turn_it_is() -> None:
    """The oldest send has aged out, but a queued waiter is about to take that place: a newcomer
    queues behind it instead of taking it and sending the waiter back to sleep."""
    window = SendWindow.for_rpm(6000)
    _full(window, 0.99)
    turn = 1.0 + window.admit(1.0)
    assert window.admit(turn + 0.0005) > 0  # the newcomer waits for the next turn
    assert window.admit(turn + 0.0005, queued=True) == 0.0  # the waiter's turn is still its own
    assert window.queued == 1


def test_waiters_woken_after_a_stall_are_admitted_without_queueing_a_newcomer() -> None:
    """After a stall the turns of every queued waiter are past: a newcomer then goes at once
    (the window still holds it: the oldest send is more than a span old), taking no one's turn."""
    window = SendWindow.for_rpm(6000)
    _full(window, 0.99)
    window.admit(1.0)
    assert window.admit(3.0) == 0.0
    assert window.queued == 1


@pytest.mark.parametrize("loop_kind", ["asyncio", "engine"])
def test_coroutines_under_a_binding_window_wake_once_per_send(loop_kind: str) -> None:
    """16 coroutines take 100 permits through a window already full: each send waits for its turn
    once. Before turns were queued, each waiter woke at every turn: ~16 checks per send. On the
    engine's loop (uvloop, a millisecond clock) a timer fires up to 1.5 ms early: without the
    slack, a waiter woken early slept again for microseconds, several times per send."""
    pool = open_pool("memory", PoolSettings(key=f"w:{uuid.uuid4().hex}", requests_per_minute=6000))
    window = pool._window  # type: ignore[attr-defined]
    assert window is not None
    admitted = _full(window, time.monotonic())
    admits = 0
    admit = window.admit

    def counted(now: float, *, queued: bool = False) -> float:
        nonlocal admits
        admits += 1
        wait = admit(now, queued=queued)
        if wait <= 0:
            admitted.append(now)
        return wait

    window.admit = counted  # type: ignore[method-assign]
    sleeps = 0
    steps = pool._acquire_steps

    def counted_steps(tokens: int, timeout: float | None) -> Generator[Any, Any, Any]:
        nonlocal sleeps
        inner = steps(tokens, timeout)
        reply = None
        try:
            while True:
                try:
                    step = inner.send(reply)
                except StopIteration as done:
                    return done.value
                sleeps += step[0] == "sleep"
                reply = yield step
        finally:
            inner.close()

    pool._acquire_steps = counted_steps  # type: ignore[method-assign]
    sends: list[float] = []

    async def worker(permits: int) -> None:
        for _ in range(permits):
            permit = await pool.acquire_async()
            sends.append(time.monotonic())
            await permit.settle_async()

    async def main() -> None:
        await asyncio.gather(*(worker(100 // 16 + (k < 100 % 16)) for k in range(16)))

    loop = new_event_loop() if loop_kind == "engine" else asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    pool.close()
    assert len(sends) == 100
    assert admits <= 1.5 * len(sends)
    assert sleeps <= 1.2 * len(sends)  # the rate's wait and the window's are one sleep
    assert _worst(sorted(admitted), window.span) <= 100  # the 100 before them count too
    assert window.queued == 0


def test_a_coroutine_cancelled_in_the_queue_leaves_it() -> None:
    pool = open_pool("memory", PoolSettings(key=f"w:{uuid.uuid4().hex}", requests_per_minute=6000))
    window = pool._window  # type: ignore[attr-defined]
    assert window is not None
    _full(window, time.monotonic())

    async def main() -> None:
        waiting = asyncio.ensure_future(pool.acquire_async())
        while not window.queued:
            await asyncio.sleep(0.001)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting

    asyncio.run(asyncio.wait_for(main(), 5))
    pool.close()
    assert window.queued == 0


def test_a_booked_turn_is_the_later_of_the_reservation_and_the_window() -> None:
    window = SendWindow.for_rpm(6000)
    assert window.book(0.5) == 0.5  # not full yet: the reservation decides
    assert window.admit(0.5, queued=True) == 0.0
    assert window.queued == 0
    window = SendWindow.for_rpm(6000)
    _full(window, 0.99)
    assert window.book(1.2) == 1.2  # a span after the oldest send (1.01) is already past then
    assert window.book(1.0) == pytest.approx(1.02)  # second in line: the second-oldest's turn
    assert window.queued == 2
    assert window.admit(1.2, queued=True) == 0.0
    window.leave()
    assert window.queued == 0
