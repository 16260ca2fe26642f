"""Real threads on the real clock, every backend: rate, windows and concurrency cap in one process.

The pool is configured AT the limit (600 RPM = 10/s); rules as in test_multiprocess: no 1 s
window above ceil(L/60) + 1, at least 95 % of L from the first grant on, never more than `cap`
holders at once.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from pathlib import Path

import pytest

from airflow_dify.limits import PoolSettings, open_pool

from .conftest import BACKENDS, REDIS_URL, backend_url, delete_redis_keys
from .pool_helpers import max_in_window, max_overlap

RPM, CAP, THREADS, DURATION = 600, 4, 8, 2.5


@pytest.mark.parametrize("kind", BACKENDS)
def test_threads_share_rate_and_cap(kind: str, tmp_path: Path) -> None:
    key = f"test:threads:{uuid.uuid4().hex}"
    pool = open_pool(
        backend_url(kind, tmp_path), PoolSettings(key=key, requests_per_minute=RPM, max_concurrency=CAP)
    )
    records: list[tuple[float, float]] = []
    lock = threading.Lock()
    end = time.time() + DURATION

    def work() -> None:
        for _ in range(1000):  # bounded; the deadline ends it
            if time.time() >= end:
                return
            with pool.acquire(timeout=10):
                granted = time.time()
                time.sleep(random.uniform(0.15, 0.35))  # longer than the spacing: holders overlap
                released = time.time()
            with lock:
                records.append((granted, released))

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(DURATION + 15)
    finally:
        pool.close()
        if kind == "redis":
            delete_redis_keys(REDIS_URL, key)
    grants = sorted(g for g, _ in records)
    assert max_in_window(grants, 1.0) <= math.ceil(RPM / 60) + 1
    first = grants[0]
    assert sum(1 for g in grants if g < first + 2) >= 0.95 * RPM / 60 * 2
    assert 2 <= max_overlap(records) <= CAP


def test_throttled_pauses_threads_that_already_reserved() -> None:
    """A 429 seen while others sleep towards their reserved start delays them too (same process)."""
    pool = open_pool("memory", PoolSettings(key=f"test:{uuid.uuid4().hex}", requests_per_minute=600))
    t0 = time.monotonic()
    pool.acquire().settle()  # the budget is busy: the next caller reserves t0 + 0.1 s
    done: list[float] = []
    waiter = threading.Thread(target=lambda: (pool.acquire().settle(), done.append(time.monotonic())))
    waiter.start()
    pool.throttled()  # 0.5 s pause, announced while the waiter sleeps
    waiter.join(5)
    assert done and done[0] - t0 >= 0.45
