"""Helpers for the client tests: a fast retry policy and a pool that counts calls."""

from __future__ import annotations

import threading

from airflow_dify.client import RetryPolicy
from airflow_dify.limits.base import PoolSettings

#: Real back-off shape, tiny waits: retry tests stay fast but still sleep between attempts.
FAST = RetryPolicy(max_attempts=5, max_elapsed=30.0, initial_wait=0.01, max_wait=0.05)


class CountingPermit:
    def __init__(self, pool: CountingPool) -> None:
        self.pool = pool

    def settle(self, actual_tokens: int | None = None) -> None:
        with self.pool.lock:
            self.pool.settled.append(actual_tokens)


class CountingPool:
    """Records acquire/settle/throttled calls to prove the client uses one permit per attempt."""

    def __init__(self) -> None:
        self.settings = PoolSettings(key="counting")
        self.lock = threading.Lock()
        self.acquired: list[int] = []
        self.settled: list[int | None] = []
        self.throttles = 0

    def acquire(self, tokens: int = 0, *, timeout: float | None = None) -> CountingPermit:
        with self.lock:
            self.acquired.append(tokens)
        return CountingPermit(self)

    def throttled(self) -> None:
        with self.lock:
            self.throttles += 1

    def close(self) -> None:
        return None
