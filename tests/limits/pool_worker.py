"""A separate process using a shared pool (run as ``python -m tests.limits.pool_worker '<json>'``).

Modes:
* ``run``: ``threads`` threads acquire permits from ``t0`` for ``duration`` seconds (wall clock),
  hold each for a random 20-200 ms like a short HTTP call, and write ``[[granted, released], ...]``
  (``time.time()``) as JSON to ``out``.
* ``hold``: take ``count`` permits, print ``held``, then sleep until killed (bounded: 60 s).
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time

from airflow_dify.limits import PoolSettings, open_pool


def _settings(cfg: dict) -> PoolSettings:
    return PoolSettings(
        key=cfg["key"],
        max_concurrency=cfg.get("cap"),
        requests_per_minute=cfg.get("rpm"),
        lease_seconds=cfg.get("lease", 900.0),
    )


def run(cfg: dict) -> None:
    pool = open_pool(cfg["url"], _settings(cfg))
    t0, end = cfg["t0"], cfg["t0"] + cfg["duration"]
    records: list[list[float]] = []
    lock = threading.Lock()

    def work() -> None:
        time.sleep(max(0.0, t0 - time.time()))
        mine = []
        for _ in range(10_000):  # bounded; the deadline ends it long before
            if time.time() >= end:
                break
            permit = pool.acquire(timeout=10)
            granted = time.time()
            time.sleep(random.uniform(0.02, 0.2))
            released = time.time()  # taken before settle: the real hold covers [granted, released]
            permit.settle()
            mine.append([granted, released])
        with lock:
            records.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(cfg["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(cfg["duration"] + 30)
    pool.close()
    with open(cfg["out"], "w") as fh:
        json.dump(records, fh)


def hold(cfg: dict) -> None:
    pool = open_pool(cfg["url"], _settings(cfg))
    permits = [pool.acquire(timeout=5) for _ in range(cfg["count"])]
    print("held", len(permits), flush=True)
    time.sleep(60)


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    {"run": run, "hold": hold}[config["mode"]](config)
