"""Real processes sharing one budget through SQLite and Redis.

4 processes x 4 threads call for 6 s against a pool configured AT the limit L = 1200 RPM
(20/s), with a concurrency cap of 6. Rules checked (grant = time.time() when acquire returned):
* throughput: from the first grant to the end of demand (at most 5 s), >= 95 % of L (not too slow);
* 1 s windows: no window [t, t+1) holds more than ceil(L/60) + 1 grants (the +1 is the burst of
  one request; timing jitter of the recording is far below the 50 ms spacing);
* whole run: grants <= L * (last - first) / 60 + 2 (burst 1 + one for recording jitter);
* concurrency: at most `cap` [granted, released] intervals overlap (each lies inside a slot hold).
Then a SIGKILLed holder: its slots come back once their 2 s lease has run out.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from airflow_dify.limits import PoolSettings, PoolTimeout, open_pool

from .conftest import REDIS_URL, delete_redis_keys
from .pool_helpers import max_in_window, max_overlap

ROOT = Path(__file__).resolve().parents[2]
RPM, CAP, PROCS, THREADS, DURATION = 1200, 6, 4, 4, 6.0
KINDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]


def _url(kind: str, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/shared.db" if kind == "sqlite" else REDIS_URL


def _spawn(cfg: dict, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests.limits.pool_worker", json.dumps(cfg)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, **kw)


@pytest.fixture
def pool_key(request: pytest.FixtureRequest) -> str:
    key = f"test:mp:{uuid.uuid4().hex}"
    yield key
    if "redis" in request.node.name:
        delete_redis_keys(REDIS_URL, key)


@pytest.mark.parametrize("kind", KINDS)
def test_processes_share_rate_and_concurrency(kind: str, tmp_path: Path, pool_key: str) -> None:
    url = _url(kind, tmp_path)
    open_pool(url, PoolSettings(key=pool_key, requests_per_minute=RPM)).close()  # create the file
    t0 = time.time() + 1.5  # every worker imported and waiting before the start
    procs = []
    for i in range(PROCS):
        cfg = {"mode": "run", "url": url, "key": pool_key, "rpm": RPM, "cap": CAP, "threads": THREADS}
        cfg.update(t0=t0, duration=DURATION, out=str(tmp_path / f"out{i}.json"))
        procs.append(_spawn(cfg))
    for p in procs:
        assert p.wait(timeout=DURATION + 40) == 0
    records = [r for i in range(PROCS) for r in json.loads((tmp_path / f"out{i}.json").read_text())]
    grants = sorted(g for g, _ in records)

    # Throughput from the first grant (a loaded box may start the workers late) to the end of demand.
    first, end = grants[0], min(grants[0] + DURATION - 1, t0 + DURATION)
    assert end - first >= 3, f"workers started {first - t0:.1f} s late"
    in_run = sum(1 for g in grants if g < end)
    assert in_run >= 0.95 * RPM / 60 * (end - first), f"only {in_run} grants in {end - first:.2f} s"
    assert max_in_window(grants, 1.0) <= math.ceil(RPM / 60) + 1
    assert len(grants) <= RPM * (grants[-1] - grants[0]) / 60 + 2
    assert max_overlap([(g, r) for g, r in records]) <= CAP
    assert max_overlap([(g, r) for g, r in records]) >= 2  # the cap was actually exercised by threads


@pytest.mark.parametrize("kind", KINDS)
def test_killed_holder_slots_come_back_after_the_lease(kind: str, tmp_path: Path, pool_key: str) -> None:
    url, lease, cap = _url(kind, tmp_path), 2.0, 3
    holder = _spawn(
        {"mode": "hold", "url": url, "key": pool_key, "cap": cap, "lease": lease, "count": cap},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().startswith("held")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    pool = open_pool(url, PoolSettings(key=pool_key, max_concurrency=cap, lease_seconds=lease))
    try:
        with pytest.raises(PoolTimeout):
            pool.acquire(timeout=0.2)  # the dead process still holds all slots
        t0 = time.monotonic()
        permits = [pool.acquire(timeout=lease + 3) for _ in range(cap)]
        assert time.monotonic() - t0 < lease + 3
        with pytest.raises(PoolTimeout):
            pool.acquire(timeout=0.2)  # and we now hold them all again: the cap still holds
        for p in permits:
            p.settle()
    finally:
        pool.close()
