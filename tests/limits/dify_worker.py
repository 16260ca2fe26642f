"""A worker process calling FakeDify through DifyClient under a shared pool.

``python -m tests.limits.dify_worker '<json>'``: ``threads`` threads call chat until ``t0 + duration``
(wall clock, bounded by a call count too) and the process exits.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from airflow_dify.client import DifyClient, RetryPolicy
from airflow_dify.limits import PoolSettings, open_pool


def main(cfg: dict) -> None:
    pool = open_pool(
        cfg["backend"],
        PoolSettings(key=cfg["key"], max_concurrency=cfg["cap"], requests_per_minute=cfg["rpm"]),
    )
    client = DifyClient(
        cfg["url"],
        cfg["api_key"],
        pool=pool,
        pool_size=cfg["threads"],
        retry=RetryPolicy(max_attempts=3, initial_wait=0.05),
    )
    end = cfg["t0"] + cfg["duration"]

    def work(n: int) -> None:
        time.sleep(max(0.0, cfg["t0"] - time.time()))
        for i in range(5_000):  # bounded; the deadline ends it first
            if time.time() >= end:
                return
            client.chat(f"w{cfg['worker']}-t{n}-{i}", user="pool-test")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(cfg["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    pool.close()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
