"""The pool held to FakeDify's limits by real processes, and a 429 burst slowing every thread."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from airflow_dify.client import DifyClient, RetryPolicy
from airflow_dify.limits import PoolSettings, open_pool
from airflow_dify.testing import FakeDify, Fault
from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
RPM, CAP, DURATION = 1200, 6, 8.0


def _run_workers(
    fake: FakeDify, backend: str, processes: int = 4, threads: int = 4, duration: float = DURATION
) -> None:
    t0 = time.time() + 2.0  # all processes start together once imported
    key = f"it-{uuid.uuid4().hex[:8]}"
    procs = []
    for w in range(processes):
        cfg = {
            "backend": backend,
            "key": key,
            "cap": CAP,
            "rpm": RPM * 0.97,
            "url": fake.url,
            "api_key": fake.app("chat").key,
            "threads": threads,
            "t0": t0,
            "duration": duration,
            "worker": w,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.limits.dify_worker", json.dumps(cfg)],
                cwd=ROOT,
                start_new_session=True,
            )
        )
    try:
        for p in procs:
            assert p.wait(timeout=duration + 30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_processes_share_one_budget_at_the_server(backend: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pool.db'}" if backend == "sqlite" else REDIS_URL
    with FakeDify(latency=0.05, requests_per_minute=RPM, max_active_requests=CAP) as fake:
        _run_workers(fake, url)
        stats = fake.stats()
        starts = sorted(r.started for r in fake.requests if r.path == "/chat-messages" and r.status == 200)
    assert stats["rejected_429"] == 0, stats
    assert stats["max_concurrency_seen"] <= CAP
    assert stats["worst_1s"] <= math.ceil(RPM / 60) + 1
    assert stats["worst_60s"] <= RPM
    span = starts[-1] - starts[0]
    achieved = (len(starts) - 1) / span * 60
    print(f"{backend}: {achieved:.0f} rpm against a {RPM * 0.97:.0f} rpm budget, stats {stats}")
    assert achieved >= 0.95 * RPM * 0.97, f"{achieved:.0f} rpm against a {RPM * 0.97:.0f} rpm budget"


def test_a_429_burst_slows_every_thread() -> None:
    with FakeDify(latency=0.02) as fake:
        fake.faults.add(Fault("status", status=429, code="too_many_requests", on=[5, 6, 7]))
        pool = open_pool("memory", PoolSettings(key=f"burst-{uuid.uuid4().hex}", max_concurrency=8))
        client = DifyClient(fake.url, fake.app("chat").key, pool=pool, retry=RetryPolicy(initial_wait=0.01))
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda i: client.chat(f"q{i}", user="u"), range(40)))
        recs = sorted(fake.requests, key=lambda r: r.started)
        first_429 = min(r.started for r in recs if r.status == 429)
        # After the 429s every thread paused: nothing new was admitted for the penalty (>= 0.5 s),
        # although each thread's own retry wait was only ~10 ms.
        after = [r.started for r in recs if r.started > first_429 + 0.05]
        assert after and min(after) - first_429 >= 0.4
        client.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_processes_share_the_concurrency_cap(backend: str, tmp_path: Path) -> None:
    """Slow calls (0.4 s): 16 threads in 4 processes want 16 slots; the shared cap grants CAP."""
    url = f"sqlite:///{tmp_path / 'pool.db'}" if backend == "sqlite" else REDIS_URL
    with FakeDify(latency=0.4, max_active_requests=CAP) as fake:
        _run_workers(fake, url, duration=4.0)
        stats = fake.stats()
    print(f"{backend}: concurrency {stats['max_concurrency_seen']} of cap {CAP}, {stats['admitted']} calls")
    assert stats["rejected_429"] == 0  # FakeDify's own cap was never hit
    assert stats["max_concurrency_seen"] == CAP  # ...and the pool used all of it
