"""Fixtures for the pool tests: a fake clock and one factory that opens any backend on it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_dify.limits import PoolSettings, open_pool
from airflow_dify.limits.pool import ReservingPool

from .pool_helpers import FakeClock, PoolFactory

REDIS_URL = os.environ.get("DIFY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
BACKENDS = ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)]


def backend_url(kind: str, tmp_path: Path) -> str:
    return {"memory": "memory", "sqlite": f"sqlite:///{tmp_path}/pool.db", "redis": REDIS_URL}[kind]


def delete_redis_keys(url: str, pool_key: str) -> None:
    import redis

    from airflow_dify.limits.redis import redis_keys

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.delete(*redis_keys(pool_key))
    finally:
        client.close()


@pytest.fixture(params=BACKENDS)
def make_pool(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PoolFactory]:
    """``make_pool(clock, key=None, **limits)``: a pool on the parametrised backend, fake clock.

    Pools made with the same ``key`` share state (the same memory registry entry, file or keys).
    """
    kind: str = request.param
    url = backend_url(kind, tmp_path)
    opened: list[ReservingPool] = []
    keys: set[str] = set()

    def factory(clock: FakeClock, key: str | None = None, **limits: object) -> ReservingPool:
        key = key or f"test:{uuid.uuid4().hex}"
        keys.add(key)
        pool = open_pool(url, PoolSettings(key=key, **limits), clock=clock, sleep=clock.sleep)
        assert isinstance(pool, ReservingPool)
        opened.append(pool)
        return pool

    factory.kind = kind  # type: ignore[attr-defined]
    yield factory
    for pool in opened:
        pool.close()
    if kind == "redis":
        for key in keys:
            delete_redis_keys(url, key)
