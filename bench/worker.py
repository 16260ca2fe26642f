"""``python -m bench.worker '<json spec>'``: one client workload in its own process.

Kept apart from the server so the CPU time and peak RSS it reports are the client's alone.
Prints ``BENCH_RESULT {json}`` as its last result line (see bench.common.collect_worker).
"""

from __future__ import annotations

import json
import resource
import sqlite3
import sys
import threading
import time
from typing import Any

from bench.baselines.peer_report import peak_rss_mb, threads_now
from bench.common import RESULT_PREFIX


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    return peak_rss_mb()  # VmHWM: ru_maxrss would carry the bench process's peak over exec


class RssSampler:
    """(seconds, VmRSS MB, VmHWM MB) of this process every ``interval`` s in a daemon thread, at
    most ``keep`` samples (halved when full). VmHWM is the peak so far: the first sample where it
    jumps places a short spike in time even when no VmRSS sample caught it."""

    THREADS_EVERY = 0.25  # seconds between thread counts (cheap: one /proc read)

    def __init__(self, interval: float = 5.0, keep: int = 120) -> None:
        self.interval, self.keep = interval, keep
        self.samples: list[tuple[float, float, float]] = []
        self.threads_peak = threads_now()
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    @staticmethod
    def memory_mb() -> tuple[float, float]:
        try:
            with open("/proc/self/status") as f:
                wanted = [line.split() for line in f if line.startswith(("VmRSS:", "VmHWM:"))]
            kib = {fields[0].rstrip(":"): int(fields[1]) for fields in wanted}
            return round(kib["VmRSS"] / 1024.0, 1), round(kib["VmHWM"] / 1024.0, 1)
        except (OSError, KeyError, ValueError):  # not Linux
            return 0.0, 0.0

    def _run(self) -> None:
        due = self._t0 + self.interval
        while not self._stop.wait(min(self.THREADS_EVERY, self.interval)):
            self.threads_peak = max(self.threads_peak, threads_now())
            now = time.monotonic()
            if now < due:
                continue
            self.samples.append((round(now - self._t0, 1), *self.memory_mb()))
            if len(self.samples) >= self.keep:
                self.samples = self.samples[::2]
                self.interval *= 2
            due = now + self.interval

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def open_client(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(pool, client, options) of a batch, as the operator builds them."""
    from airflow_dify.batch.options import BatchOptions
    from airflow_dify.client import DifyClient
    from airflow_dify.limits import PoolSettings, open_pool

    concurrency = int(spec["max_concurrency"])
    settings = PoolSettings(
        key=spec.get("pool_key", "bench"),
        max_concurrency=spec.get("pool_concurrency"),
        requests_per_minute=spec.get("rpm"),
    )
    pool = open_pool(spec.get("backend", "memory"), settings)
    client = DifyClient(spec["url"], spec["key"], pool=pool, pool_size=concurrency)
    shard = spec.get("shard")
    options = BatchOptions(
        app_mode="chat",
        user="bench",
        max_concurrency=concurrency,
        chunk_size=int(spec.get("chunk_size", 100)),
        shard=tuple(shard) if shard else None,
        progress_seconds=3600,
        **{k: spec[k] for k in ("commit_rows", "commit_seconds") if k in spec},
    )
    return pool, client, options


def open_batch(spec: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """(pool, client, table, options) for the Airflow-free batch path, as the operator builds them."""
    from airflow_dify.sql.table import SqlTable

    pool, client, options = open_client(spec)
    db_path = spec["db"]
    table = SqlTable(
        lambda: sqlite3.connect(db_path, timeout=30),
        spec.get("table", "prompts"),
        dialect="sqlite",
        claims=bool(spec.get("claims", True)),
    )
    return pool, client, table, options


def _measured(spec: dict[str, Any], run: Any) -> tuple[Any, float, float, float, RssSampler]:
    """(summary, wall start, elapsed s, CPU s, sampler) of ``run()``: the batch alone, not set-up."""
    wall0, cpu0, t0 = time.time(), _cpu(), time.perf_counter()
    with RssSampler(float(spec.get("rss_interval", 5.0))) as rss:
        summary = run()
    return summary, wall0, time.perf_counter() - t0, _cpu() - cpu0, rss


def _result(summary: Any, wall0: float, elapsed: float, cpu: float, rss: RssSampler) -> dict[str, Any]:
    processed = summary.processed
    return {
        "rows": processed,
        "succeeded": summary.succeeded,
        "failed": summary.failed,
        "error_codes": dict(summary.error_codes),
        "commits": summary.commits,
        "wall_seconds": round(elapsed, 4),
        "cpu_seconds": round(cpu, 4),
        "cpu_us_per_row": round(cpu / processed * 1e6, 1) if processed else None,
        "rows_per_second": round(processed / elapsed, 2) if elapsed > 0 else None,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "threads_peak": rss.threads_peak,
        "rss_samples_s_rss_hwm_mb": rss.samples,
        "started_wall": wall0,
        "ended_wall": time.time(),
    }


def run_batch(spec: dict[str, Any]) -> dict[str, Any]:
    """run_batch over the table; CPU and wall time cover the batch, not imports and setup."""
    from airflow_dify.batch.run import run_batch as run

    pool, client, table, options = open_batch(spec)
    try:
        start_at = spec.get("start_at")
        late = 0.0
        if start_at is not None:  # a shared start for processes that booted at different speeds
            wait = start_at - time.time()
            if wait > 0:
                time.sleep(min(wait, 60.0))
            late = max(0.0, time.time() - start_at)
        measured = _measured(spec, lambda: run(table, table, client, options))
    finally:
        client.close()
        pool.close()
        table.close()
    return {**_result(*measured), "late_seconds": round(late, 4)}


def run_frame(spec: dict[str, Any]) -> dict[str, Any]:
    """The DataFrame path over the same prompts: the batch without its SQL table."""
    import pandas as pd

    from airflow_dify.batch.dataframe import answer_dataframe
    from bench.common import prompt

    rows = int(spec["rows"])
    frame = pd.DataFrame({"id": range(1, rows + 1), "prompt": [prompt(i) for i in range(1, rows + 1)]})
    pool, client, options = open_client(spec)
    try:
        measured = _measured(spec, lambda: answer_dataframe(frame, client, options, max_failed_ratio=None)[1])
    finally:
        client.close()
        pool.close()
    return _result(*measured)


def run_seed(spec: dict[str, Any]) -> dict[str, Any]:
    from bench.baselines.seed_loop import run_seed_loop

    result = run_seed_loop(spec["url"], spec["key"], spec["db"], max_requests=int(spec["seed_rpm"]))
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return result


def run_airflow(spec: dict[str, Any]) -> dict[str, Any]:
    from bench.baselines.airflow_dags import run_dags

    result = run_dags(spec)
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return result


def run_profile(spec: dict[str, Any]) -> dict[str, Any]:
    from bench.profile import profile_client

    return profile_client(spec)


KINDS = {
    "batch": run_batch,
    "frame": run_frame,
    "seed_loop": run_seed,
    "airflow_dags": run_airflow,
    "profile": run_profile,
}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    result = KINDS[spec["kind"]](spec)
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
