"""CallPool on its own: one loop, one thread; stop, budget and close keep their promises.

Money first: a call is never started after ``stop`` or when ``may_start`` says no, and an answer
that arrived is never dropped, even when ``close()`` races it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from airflow_dify.batch.engine import CallPool
from airflow_dify.client.async_client import AsyncDifyClient
from airflow_dify.outcome import FAILED, SUCCEEDED, RowOutcome
from airflow_dify.testing import FakeDify


def _answer(row_id: int) -> RowOutcome:
    return RowOutcome(row_id, SUCCEEDED, answer=f"a{row_id}")


def test_close_lets_running_calls_finish_and_their_answers_reach_wait() -> None:
    gate = threading.Event()
    started: list[int] = []

    async def call(row_id: int) -> RowOutcome:
        started.append(row_id)
        while not gate.is_set():
            await asyncio.sleep(0.01)
        return _answer(row_id)

    pool: CallPool[int] = CallPool(call, max_concurrency=4)
    pool.fill(iter([1, 2, 3]))
    while len(started) < 3:
        time.sleep(0.01)
    opener = threading.Timer(0.2, gate.set)  # the answers arrive while close() is waiting
    opener.start()
    pool.close()
    opener.join()
    saved = pool.wait(timeout=1) + pool.wait(timeout=0.1)
    assert sorted(o.row_id for o in saved) == [1, 2, 3]
    assert pool.stop.reason == "closed"


def test_close_timeout_cancels_cleanly_and_frees_the_slots() -> None:
    unwound: list[int] = []

    async def call(row_id: int) -> RowOutcome:
        try:
            await asyncio.sleep(30)
        finally:
            unwound.append(row_id)  # a permit would be settled here
        return _answer(row_id)

    pool: CallPool[int] = CallPool(call, max_concurrency=2, close_timeout=0.1)
    pool.fill(iter([1, 2]))
    time.sleep(0.1)
    pool.close()
    assert sorted(unwound) == [1, 2]
    assert pool.wait(timeout=0.5) == [] and pool.outstanding in (0, 1)
    pool.wait(timeout=0.1)
    assert pool.outstanding == 0 and pool.finished


def test_nothing_starts_after_stop_or_once_the_budget_says_no() -> None:
    started: list[int] = []

    async def call(row_id: int) -> RowOutcome:
        started.append(row_id)
        return _answer(row_id)

    def may_start(row_id: int) -> bool:
        return row_id < 3

    pool: CallPool[int] = CallPool(call, max_concurrency=1, may_start=may_start)
    rows = iter(range(1, 10))
    saved: list[RowOutcome] = []
    while True:
        pool.fill(rows)
        if pool.finished:
            break
        got = pool.wait(timeout=1)
        saved += got
        pool.release(len(got))
    pool.close()
    assert started == [1, 2] and [o.row_id for o in saved] == [1, 2]
    assert pool.stop.reason == "budget"
    pool.fill(rows)  # stopped: takes nothing more
    assert started == [1, 2] and next(rows) == 4  # row 3 was taken, asked, refused; 4 never taken


def test_many_calls_in_flight_on_one_thread() -> None:
    """64 calls in flight at once against a real server: no thread per call."""
    with FakeDify(latency=0.5) as fake:
        client = AsyncDifyClient(fake.url, fake.app("chat").key, pool_size=64)
        in_flight: list[int] = []
        peak_threads = 0

        async def call(row_id: int) -> RowOutcome:
            nonlocal peak_threads
            in_flight.append(row_id)
            peak_threads = max(peak_threads, threading.active_count())
            result = await client.call("chat", query=f"q{row_id}", user="u")
            peak_threads = max(peak_threads, threading.active_count())
            return RowOutcome(row_id, SUCCEEDED, answer=result.answer)

        before = threading.active_count()
        pool: CallPool[int] = CallPool(call, max_concurrency=64, on_close=client.aclose)
        pool.fill(iter(range(64)))
        saved: list[RowOutcome] = []
        while len(saved) < 64:
            got = pool.wait(timeout=5)
            assert got, "no call finished within 5 s"
            saved += got
            pool.release(len(got))
        pool.close()
        assert sorted(o.answer or "" for o in saved) == sorted(f"Answer: q{i}" for i in range(64))
        assert peak_threads <= before + 2  # the loop's thread (+ one spare for DNS/executor)
        assert fake.calls("/chat-messages") == 64


def _gated(started: list[int], gates: dict[int, threading.Event]) -> Any:
    async def call(row_id: int) -> RowOutcome:
        started.append(row_id)
        gate = gates.get(row_id)
        while gate is not None and not gate.is_set():
            await asyncio.sleep(0.005)
        return _answer(row_id)

    return call


def _until(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def _open_and_save_all(pool: CallPool[int], gates: dict[int, threading.Event]) -> None:
    """Let every gated call end, save every answer as it comes, and close the pool."""
    for gate in gates.values():
        gate.set()
    while pool.outstanding:
        pool.release(len(pool.wait(timeout=10)))
    pool.close()


def test_ready_items_start_as_slots_free_without_the_caller() -> None:
    """With ``ahead``, the loop starts the next row the moment one ends: the caller, busy with a
    commit, never holds a slot idle."""
    started: list[int] = []
    pool: CallPool[int] = CallPool(_gated(started, {}), max_concurrency=1, ahead=3, unsaved_limit=4)
    pool.fill(iter([1, 2, 3, 4, 5]))
    assert pool.outstanding == 4  # max_concurrency + ahead handed over; row 5 stays with the caller
    _until(lambda: len(started) == 4)
    time.sleep(0.05)
    assert started == [1, 2, 3, 4]  # one at a time, and no wait()/release() was needed
    got: list[RowOutcome] = []
    _until(lambda: bool(got.extend(pool.wait(0.1))) or len(got) == 4)
    pool.close()


def test_unsaved_limit_is_enforced_where_calls_start() -> None:
    """Money first: never more started-but-unsaved calls than the limit (the crash bound)."""
    started: list[int] = []
    pool: CallPool[int] = CallPool(_gated(started, {}), max_concurrency=2, ahead=4, unsaved_limit=3)
    pool.fill(iter(range(1, 7)))
    _until(lambda: len(started) == 3)
    time.sleep(0.1)
    assert len(started) == 3  # slots are free, rows are ready, but three answers are unsaved
    got: list[RowOutcome] = []
    _until(lambda: bool(got.extend(pool.wait(0.1))) or len(got) == 3)
    pool.release(1)  # one saved: exactly one more may start
    _until(lambda: len(started) == 4)
    time.sleep(0.1)
    assert len(started) == 4
    pool.release(2)
    _until(lambda: len(started) == 6)
    pool.close()
    assert sorted(started) == [1, 2, 3, 4, 5, 6]


def test_held_completions_report_when_they_ended() -> None:
    """With ``hold``, completions wait on the loop to go over together; wait() says when the
    oldest ended, so the commit timer counts from the answer."""
    started: list[int] = []
    gates = {2: threading.Event(), 3: threading.Event(), 4: threading.Event()}
    pool: CallPool[int] = CallPool(
        _gated(started, gates), max_concurrency=2, ahead=4, unsaved_limit=10, hold=0.3
    )
    pool.fill(iter(range(1, 7)))
    t0 = time.monotonic()
    got = pool.wait(timeout=5)
    waited = time.monotonic() - t0
    assert [o.row_id for o in got] == [1]
    assert waited >= 0.25  # held: the caller had nothing to do for it yet
    assert pool.oldest_end is not None and pool.oldest_end <= t0 + 0.1  # it ended right away
    _open_and_save_all(pool, gates)
    assert sorted(started) == [1, 2, 3, 4, 5, 6]


def test_near_the_unsaved_limit_completions_skip_the_hold_and_saving_is_due() -> None:
    """At the limit every slot waits for the caller's commit: within ``save_margin`` of it, the
    caller gets the completions at once and is told to save (same set-up as the test above, where
    row 1 is held)."""
    started: list[int] = []
    gates = {i: threading.Event() for i in (2, 3, 4, 5)}
    pool: CallPool[int] = CallPool(
        _gated(started, gates), max_concurrency=4, ahead=4, unsaved_limit=10, save_margin=5, hold=5.0
    )
    pool.fill(iter(range(1, 9)))
    t0 = time.monotonic()
    got = pool.wait(timeout=10)
    assert [o.row_id for o in got] == [1]
    assert time.monotonic() - t0 < 2.0  # 5 started, 0 saved: within 5 of the limit of 10
    assert pool.saving_due
    pool.release(1)  # 4 unsaved: room enough again
    assert not pool.saving_due
    _open_and_save_all(pool, gates)
    assert sorted(started) == list(range(1, 9))


def test_without_a_save_margin_saving_is_due_only_at_the_limit() -> None:
    started: list[int] = []
    gates = {i: threading.Event() for i in (2, 3, 4)}
    pool: CallPool[int] = CallPool(_gated(started, gates), max_concurrency=3, ahead=2, unsaved_limit=4)
    pool.fill(iter(range(1, 6)))
    _until(lambda: len(started) == 4)  # row 1 ended, its slot went on to row 4 (2, 3, 4 gated)
    assert pool.saving_due  # 4 started, none saved
    got: list[RowOutcome] = []
    _until(lambda: bool(got.extend(pool.wait(0.1))) or len(got) == 1)
    pool.release(1)
    assert not pool.saving_due
    _open_and_save_all(pool, gates)
    assert sorted(started) == [1, 2, 3, 4, 5]


def test_an_urgent_outcome_is_handed_over_without_the_hold() -> None:
    """A revoked key must reach the circuit breaker before more calls start: an outcome that
    ``urgent`` picks skips the hold that batches ordinary answers (same set-up as the test above,
    where row 1 is held)."""
    started: list[int] = []
    gates = {2: threading.Event(), 3: threading.Event(), 4: threading.Event()}
    plain = _gated(started, gates)

    async def call(row_id: int) -> RowOutcome:
        outcome = await plain(row_id)
        return RowOutcome(row_id, FAILED, error="401", failure="systemic") if row_id == 1 else outcome

    pool: CallPool[int] = CallPool(
        call, max_concurrency=2, ahead=4, unsaved_limit=10, hold=5.0, urgent=lambda o: o.failure is not None
    )
    pool.fill(iter(range(1, 7)))
    t0 = time.monotonic()
    got = pool.wait(timeout=10)
    assert [o.row_id for o in got] == [1]
    assert time.monotonic() - t0 < 2.0  # not held for 5 s
    time.sleep(0.1)
    assert sorted(started) == [1, 2]  # row 1's slot did not go on to row 3 behind the revoked key
    pool.resume()  # the breaker saw it and lets the run go on
    _until(lambda: 3 in started)
    _open_and_save_all(pool, gates)
    assert sorted(started) == [1, 2, 3, 4, 5, 6]


def test_fill_adds_nothing_while_an_urgent_outcome_waits_for_the_caller() -> None:
    """A caller back from a slow commit must not refill the loop behind a revoked key: until
    wait() has taken the urgent outcome (and the breaker has seen it), fill() hands nothing over."""
    started: list[int] = []
    revoked = threading.Event()

    async def call(row_id: int) -> RowOutcome:
        started.append(row_id)
        if row_id != 2:
            return _answer(row_id)
        while not revoked.is_set():
            await asyncio.sleep(0.005)
        return RowOutcome(row_id, FAILED, error="401", failure="systemic")

    pool: CallPool[int] = CallPool(call, max_concurrency=2, urgent=lambda o: o.failure is not None)
    rows = iter(range(1, 100))
    pool.fill(rows)  # rows 1 and 2
    assert [o.row_id for o in pool.wait(timeout=5)] == [1]  # room for one more: a commit starts
    revoked.set()  # row 2 fails while the caller commits
    _until(lambda: pool._urgent_put > pool._urgent_taken)
    pool.fill(rows)  # back from the commit
    assert started == [1, 2] and pool.outstanding == 1
    assert [o.row_id for o in pool.wait(timeout=5)] == [2]
    pool.stop.stop("breaker")  # what drive does on it
    pool.resume()
    pool.fill(rows)
    pool.close()
    assert started == [1, 2]


def test_after_an_urgent_outcome_no_call_starts_until_the_caller_resumes() -> None:
    """Calls that end while the breaker has not yet seen a revoked key start nothing (each slot
    would otherwise go on to a ready row); once stopped, resume() sends the ready rows back as
    never started."""
    started: list[int] = []
    gates = {i: threading.Event() for i in (2, 3)}
    plain = _gated(started, gates)

    async def call(row_id: int) -> RowOutcome:
        outcome = await plain(row_id)
        return RowOutcome(row_id, FAILED, error="401", failure="systemic") if row_id == 1 else outcome

    pool: CallPool[int] = CallPool(call, max_concurrency=3, ahead=3, urgent=lambda o: o.failure is not None)
    pool.fill(iter(range(1, 7)))  # 1, 2, 3 run; 4, 5, 6 ready
    _until(lambda: pool._urgent_put > pool._urgent_taken)
    gates[2].set()  # row 2 ends before the caller has looked at row 1's error
    gates[3].set()
    got = []
    while len(got) < 3:
        got += pool.wait(timeout=5)
    assert sorted(o.row_id for o in got) == [1, 2, 3] and sorted(started) == [1, 2, 3]
    pool.stop.stop("breaker")
    pool.resume()
    while pool.outstanding:
        assert pool.wait(timeout=5) == []  # 4, 5 and 6 come back as never started
    pool.close()
    assert sorted(started) == [1, 2, 3]


def test_a_slot_sends_its_next_call_before_the_rest_of_its_wave_is_handled() -> None:
    """Answers that arrive together (a wave) are handled one after another on the loop: each
    slot's next call must start as soon as its own answer is handled, not after the whole wave.
    A task per call would run every ending first, then every start (end 1, end 2, start 3)."""
    events: list[str] = []
    waves: dict[int, asyncio.Future[None]] = {}

    async def call(row_id: int) -> RowOutcome:
        events.append(f"start {row_id}")
        wave = (row_id - 1) // 2  # 1 and 2 answer together, then 3 and 4
        if wave not in waves:
            waves[wave] = asyncio.get_running_loop().create_future()
        await waves[wave]
        events.append(f"end {row_id}")
        return _answer(row_id)

    pool: CallPool[int] = CallPool(call, max_concurrency=2, ahead=2, unsaved_limit=10)
    pool.fill(iter([1, 2, 3, 4]))
    _until(lambda: len(events) == 2)
    first = waves[0]
    first.get_loop().call_soon_threadsafe(first.set_result, None)
    _until(lambda: len(events) == 6)
    assert events == ["start 1", "start 2", "end 1", "start 3", "end 2", "start 4"]
    second = waves[1]
    second.get_loop().call_soon_threadsafe(second.set_result, None)
    got: list[RowOutcome] = []
    while pool.outstanding:
        got += pool.wait(timeout=1)
    pool.close()
    assert sorted(o.row_id for o in got) == [1, 2, 3, 4]
