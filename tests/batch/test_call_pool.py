"""CallPool on its own: one loop, one thread; stop, budget and close keep their promises.

Money first: a call is never started after ``stop`` or when ``may_start`` says no, and an answer
that arrived is never dropped, even when ``close()`` races it.
"""

from __future__ import annotations

import asyncio
import threading
import time

from airflow_dify.batch.engine import CallPool
from airflow_dify.client.async_client import AsyncDifyClient
from airflow_dify.outcome import SUCCEEDED, RowOutcome
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
