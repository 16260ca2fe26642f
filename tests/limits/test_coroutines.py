"""Coroutines on one event loop, every backend: the cap and the rate hold as they do for threads.

``acquire_async`` waits on the loop (no thread per waiter); rules as in test_threads: no 1 s
window above ceil(L/60) + 1, at least 95 % of L from the first grant on, never more than `cap`
holders at once, and the holders really overlap (the pool is the only limit).
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
import uuid
from pathlib import Path

import pytest

from airflow_dify.limits import PoolSettings, PoolTimeout, open_pool
from airflow_dify.limits.pool import ReservingPool

from .conftest import BACKENDS, REDIS_URL, backend_url, delete_redis_keys
from .pool_helpers import max_in_window, max_overlap

RPM, CAP, TASKS, DURATION = 600, 4, 16, 2.5


def _pool(kind: str, tmp_path: Path, key: str, **limits: object) -> ReservingPool:
    pool = open_pool(backend_url(kind, tmp_path), PoolSettings(key=key, **limits))  # type: ignore[arg-type]
    assert isinstance(pool, ReservingPool)
    return pool


@pytest.mark.parametrize("kind", BACKENDS)
def test_coroutines_share_rate_and_cap(kind: str, tmp_path: Path) -> None:
    key = f"test:coroutines:{uuid.uuid4().hex}"
    pool = _pool(kind, tmp_path, key, requests_per_minute=RPM, max_concurrency=CAP)
    records: list[tuple[float, float]] = []
    holders = peak = 0

    async def work(end: float) -> None:
        nonlocal holders, peak
        while time.time() < end:
            permit = await pool.acquire_async(timeout=10)
            granted = time.time()
            holders += 1
            peak = max(peak, holders)
            await asyncio.sleep(random.uniform(0.15, 0.35))  # longer than the spacing: holders overlap
            holders -= 1
            released = time.time()
            await permit.settle_async()
            records.append((granted, released))

    async def main() -> None:
        end = time.time() + DURATION
        await asyncio.gather(*(work(end) for _ in range(TASKS)))
        await pool.aclose()

    try:
        asyncio.run(main())
    finally:
        pool.close()
        if kind == "redis":
            delete_redis_keys(REDIS_URL, key)
    grants = sorted(g for g, _ in records)
    assert max_in_window(grants, 1.0) <= math.ceil(RPM / 60) + 1
    first = grants[0]
    assert sum(1 for g in grants if g < first + 2) >= 0.95 * RPM / 60 * 2
    assert 2 <= peak <= CAP and max_overlap(records) <= CAP


def test_a_thread_releasing_wakes_a_waiting_coroutine() -> None:
    """Memory pool, cap 1: a slot a sync thread gives back goes to the coroutine waiting on the
    loop at once (woken across threads, not at its lease's expiry 900 s later)."""
    pool = _pool("memory", Path("/"), f"test:{uuid.uuid4().hex}", max_concurrency=1)
    held = pool.acquire()
    released = threading.Timer(0.2, held.settle)

    async def waiter() -> float:
        start = time.monotonic()
        permit = await pool.acquire_async(timeout=30)
        await permit.settle_async()
        return time.monotonic() - start

    released.start()
    waited = asyncio.run(waiter())
    released.join()
    assert 0.15 <= waited < 10  # woke on the release, not on a timeout or a lease expiry


def test_cancelled_while_waiting_for_its_start_gives_the_slot_back() -> None:
    """A task cancelled after its slot was granted, while sleeping towards its reserved start,
    must not keep the slot until the lease ends."""
    pool = _pool("memory", Path("/"), f"test:{uuid.uuid4().hex}", max_concurrency=1, requests_per_minute=6)
    pool.acquire().settle()  # the next start is 10 s away

    async def main() -> None:
        task = asyncio.create_task(pool.acquire_async())
        await asyncio.sleep(0.1)  # granted its slot, sleeping towards its start
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    with pytest.raises(PoolTimeout, match="booked beyond"):  # the slot is free; only the rate waits
        pool.acquire(timeout=0)


@pytest.mark.parametrize("kind", BACKENDS)
def test_async_settle_corrects_tokens_and_frees_the_slot(kind: str, tmp_path: Path) -> None:
    key = f"test:coroutines:{uuid.uuid4().hex}"
    pool = _pool(kind, tmp_path, key, max_concurrency=1, tokens_per_minute=6000)

    async def main() -> None:
        permit = await pool.acquire_async(100, timeout=5)
        await permit.settle_async(50)
        again = await pool.acquire_async(100, timeout=5)  # the one slot came back
        await again.settle_async()
        await pool.throttled_async()
        await pool.aclose()

    try:
        asyncio.run(main())
    finally:
        pool.close()
        if kind == "redis":
            delete_redis_keys(REDIS_URL, key)


def test_unmetered_pool_caps_coroutines_and_threads_together() -> None:
    """No rate limit: the memory pool grants a free slot in one step. The cap still counts the
    permits a sync thread holds, and a coroutine never gets a slot beyond it."""
    pool = _pool("memory", Path("/"), f"test:{uuid.uuid4().hex}", max_concurrency=3)
    held_by_thread = pool.acquire()
    holders = peak = 0

    async def work() -> None:
        nonlocal holders, peak
        for _ in range(5):
            permit = await pool.acquire_async(timeout=10)
            holders += 1
            peak = max(peak, holders)
            await asyncio.sleep(0.01)
            holders -= 1
            await permit.settle_async()

    async def main() -> None:
        await asyncio.gather(*(work() for _ in range(8)))

    asyncio.run(main())
    assert peak == 2  # 3 slots, one held by the thread throughout
    held_by_thread.settle()
    again = [pool.acquire(timeout=0) for _ in range(3)]  # every slot came back
    with pytest.raises(PoolTimeout):  # and the cap is still 3
        pool.acquire(timeout=0)
    for permit in again:
        permit.settle()


def test_unmetered_pool_honours_a_429_pause() -> None:
    """A 429 pauses the whole pool: the one-step grant is not taken while the pause lasts."""
    pool = _pool("memory", Path("/"), f"test:{uuid.uuid4().hex}", max_concurrency=4)

    async def main() -> float:
        await pool.throttled_async()  # a pause of PENALTY_FIRST (0.5 s) starts now
        start = time.monotonic()
        permit = await pool.acquire_async(timeout=10)
        waited = time.monotonic() - start
        await permit.settle_async()
        return waited

    assert asyncio.run(main()) >= 0.4


def test_a_coroutine_releasing_wakes_a_waiting_thread() -> None:
    """Cap 1: a thread blocked in acquire() is woken by a coroutine's settle at once (a release
    skips the condition only when no thread waits on it)."""
    pool = _pool("memory", Path("/"), f"test:{uuid.uuid4().hex}", max_concurrency=1)
    waited: list[float] = []

    def thread_acquire() -> None:
        start = time.monotonic()
        pool.acquire(timeout=30).settle()
        waited.append(time.monotonic() - start)

    async def main() -> None:
        permit = await pool.acquire_async(timeout=5)
        thread = threading.Thread(target=thread_acquire)
        thread.start()
        await asyncio.sleep(0.3)  # the thread is waiting on the condition by now
        await permit.settle_async()
        await asyncio.to_thread(thread.join, 30)

    asyncio.run(main())
    assert waited and 0.2 <= waited[0] < 5
