"""open_pool: backend URL parsing, the unlimited shortcut, failure modes, no secret in messages."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from airflow_dify.limits import PoolError, PoolSettings, UnlimitedPool, derive_pool_key, open_pool
from airflow_dify.limits.memory import MemoryPool
from airflow_dify.limits.sqlite import SqlitePool

from .conftest import REDIS_URL

LIMITED = PoolSettings(key="k", requests_per_minute=60)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://relative.db",
        "sqlite:///",
        "sqlite:",
        "mysql://host/db",
        "redis://:notaport",
        "redis://127.0.0.1:99999/0",
        "redis://127.0.0.1:6379/notadb",
        "redis://",
        "memory://x",
        "file:///tmp/x.db",
    ],
)
def test_invalid_urls_name_the_setting_and_the_forms(url: str) -> None:
    with pytest.raises(PoolError) as err:
        open_pool(url, LIMITED)
    message = str(err.value)
    assert "rate_limit_backend" in message and "sqlite:////" in message and "redis://host" in message


def test_secret_in_url_never_in_message() -> None:
    with pytest.raises(PoolError) as err:
        open_pool("redis://user:s3cretpw@127.0.0.1:1/0", LIMITED)
    assert "s3cretpw" not in str(err.value) and "s3cretpw" not in repr(err.value)
    with pytest.raises(PoolError) as err:
        open_pool("redis://:s3cretpw@127.0.0.1:bad/0", LIMITED)
    assert "s3cretpw" not in str(err.value)


def test_no_limit_gives_the_unlimited_pool() -> None:
    pool = open_pool("memory", PoolSettings(key="k"))
    assert isinstance(pool, UnlimitedPool)
    pool.acquire(10**9, timeout=0).settle(5)
    # an invalid URL is still reported even when nothing is limited
    with pytest.raises(PoolError):
        open_pool("mysql://x", PoolSettings(key="k"))


def test_memory_is_the_default_and_pools_share_a_key() -> None:
    key = f"test:{uuid.uuid4().hex}"
    a = open_pool(None, PoolSettings(key=key, requests_per_minute=6))
    b = open_pool("MEMORY", PoolSettings(key=key, requests_per_minute=6))
    assert isinstance(a, MemoryPool) and isinstance(b, MemoryPool)
    assert isinstance(open_pool("  ", PoolSettings(key=key, requests_per_minute=6)), MemoryPool)
    a.acquire(timeout=0).settle()
    with pytest.raises(PoolError):  # PoolTimeout: b sees the request a just made
        b.acquire(timeout=0.05)


def test_sqlite_url_forms(tmp_path: Path) -> None:
    for url in (f"sqlite:///{tmp_path}/a.db", f"sqlite:////{tmp_path.as_posix().lstrip('/')}/b.db"):
        pool = open_pool(url, LIMITED)
        assert isinstance(pool, SqlitePool)
        pool.acquire(timeout=1).settle()
        pool.close()
    assert (tmp_path / "a.db").exists() and (tmp_path / "b.db").exists()
    with pytest.raises(PoolError, match="does not exist"):
        open_pool(f"sqlite:///{tmp_path}/missing/dir.db", LIMITED)


@pytest.mark.parametrize("field", ["requests_per_minute", "tokens_per_minute", "max_concurrency"])
def test_non_positive_limits_rejected(field: str) -> None:
    with pytest.raises(PoolError, match=field):
        open_pool("memory", PoolSettings(key="k", **{field: 0}))


def test_redis_down_fails_fast() -> None:
    t0 = time.monotonic()
    with pytest.raises(PoolError, match="unreachable"):
        open_pool("redis://127.0.0.1:1/0", LIMITED)
    assert time.monotonic() - t0 < 3.0


@pytest.mark.redis
def test_redis_pool_opens_and_cleans_up() -> None:
    import redis

    from airflow_dify.limits.redis import redis_keys

    key = f"test:{uuid.uuid4().hex}"
    pool = open_pool(REDIS_URL, PoolSettings(key=key, requests_per_minute=600, max_concurrency=2))
    client = redis.Redis.from_url(REDIS_URL)
    try:
        permit = pool.acquire(timeout=1)
        state, slots = redis_keys(key)
        assert client.zcard(slots) == 1
        assert client.pttl(state) > 0 and client.pttl(slots) > 0  # abandoned budgets vanish
        permit.settle()
        assert client.zcard(slots) == 0
    finally:
        client.delete(*redis_keys(key))
        client.close()
        pool.close()


def test_pool_key_hides_the_credential() -> None:
    key = derive_pool_key("https://api.dify.ai/v1/", "app-secret")
    assert key == derive_pool_key("https://api.dify.ai/v1", "app-secret") and "secret" not in key
    assert "app-secret" not in repr(open_pool("memory", PoolSettings(key=key, requests_per_minute=1)))


_OPEN_TOGETHER = """
import sys, time
from airflow_dify.limits import PoolSettings, open_pool
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
pool = open_pool("sqlite:///" + sys.argv[1], PoolSettings(key="k", max_concurrency=2))
pool.acquire().settle()
pool.close()
"""


def test_processes_opening_a_new_sqlite_pool_file_together_all_succeed(tmp_path: Path) -> None:
    """Switching a fresh file to WAL answers 'database is locked' at once to the others (seen
    as a CI flake: ~1 in 14 processes failed): every opener must wait its turn instead."""
    import subprocess
    import sys

    failures = []
    for round_ in range(4):
        path = tmp_path / f"pool{round_}.db"
        start = time.time() + 1.0
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_TOGETHER, str(path), str(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(6)
        ]
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            if proc.returncode != 0:
                failures.append(out[-300:])
    assert not failures, failures
