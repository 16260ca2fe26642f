"""Scenarios 1, 2, 3 and 5 (the baselines, scenario 4, are in scenario_baselines.py).

Each returns a JSON-safe dict; ratios are computed from numbers measured in the same run.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    WorkerError,
    collect_worker,
    make_prompt_table,
    paused_gc,
    ratio,
    run_worker,
    server_view,
    spawn_worker,
    start_fake,
    work_dir,
)
from bench.config import BenchConfig


def _batch_spec(fake: Any, db: Path, **kw: Any) -> dict[str, Any]:
    return {"kind": "batch", "url": fake.url, "key": fake.app("chat").key, "db": str(db), **kw}


# -- 1 --------------------------------------------------------------------------------------------
def bound_ratio(cfg: BenchConfig) -> dict[str, Any]:
    """Achieved rows/s over min(RPM/60, concurrency/latency), with the rate limit on and off.

    Each is also run with row claims off, right after, so what claims cost is a ratio of two
    runs made minutes apart on the same server.
    """
    conc, lat = cfg.bound_concurrency, cfg.bound_latency
    out: dict[str, Any] = {
        "rows": cfg.bound_rows,
        "latency_s": lat,
        "max_concurrency": conc,
        "requests_per_minute": cfg.bound_rpm,
    }
    fake = start_fake(lat, keep_records=None)
    try:
        runs = [
            (v, rpm, claims)
            for v, rpm in (("limited", cfg.bound_rpm), ("unlimited", None))
            for claims in (True, False)
        ]
        for base, rpm, claims in runs:
            variant = base if claims else f"{base}_no_claims"
            fake.reset()
            bound = min(rpm / 60.0, conc / lat) if rpm else conc / lat
            db = make_prompt_table(work_dir() / f"bound_{variant}.db", cfg.bound_rows)
            spec = _batch_spec(fake, db, max_concurrency=conc, pool_concurrency=conc, rpm=rpm, claims=claims)
            client = run_worker(spec, f"bound_{variant}", timeout=cfg.bound_rows / bound * 4 + 60)
            achieved = client["rows_per_second"] or 0.0
            out[variant] = {
                "bound_rows_per_second": round(bound, 2),
                "achieved_rows_per_second": achieved,
                "bound_ratio": ratio(achieved, bound),
                "client": client,
                "server": server_view(fake, rpm),
            }
    finally:
        fake.stop()
    out["claims_throughput_ratio"] = {
        v: ratio(out[v]["achieved_rows_per_second"], out[f"{v}_no_claims"]["achieved_rows_per_second"])
        for v in ("limited", "unlimited")
    }
    return out


# -- 2 --------------------------------------------------------------------------------------------
def client_cost(cfg: BenchConfig) -> dict[str, Any]:
    """CPU seconds of the client process per row (read + call + write back) at latency 0, no limits."""
    fake = start_fake(0.0, keep_records=1000)
    try:
        db = make_prompt_table(work_dir() / "cost.db", cfg.cost_rows)
        spec = _batch_spec(fake, db, max_concurrency=cfg.cost_concurrency)
        client = run_worker(spec, "cost", timeout=cfg.cost_rows / 100 + 120)
        out: dict[str, Any] = {
            "rows": cfg.cost_rows,
            "max_concurrency": cfg.cost_concurrency,
            "cpu_us_per_row": client["cpu_us_per_row"],
            "rows_per_second": client["rows_per_second"],
            "client": client,
            "server": server_view(fake, None),
        }
        if cfg.profile:
            fake.reset()
            pdb = make_prompt_table(work_dir() / "profile.db", cfg.profile_rows)
            edb = make_prompt_table(work_dir() / "profile_engine.db", cfg.profile_rows)
            edb2 = make_prompt_table(work_dir() / "profile_engine2.db", cfg.profile_rows)
            pspec = _batch_spec(
                fake,
                pdb,
                kind="profile",
                db_engine=str(edb),
                db_engine2=str(edb2),
                max_concurrency=cfg.cost_concurrency,
                calls=cfg.profile_calls,
            )
            out["profile"] = run_worker(pspec, "profile", timeout=cfg.profile_rows / 50 + 180)
    finally:
        fake.stop()
    return out


# -- 3 --------------------------------------------------------------------------------------------
def memory(cfg: BenchConfig) -> dict[str, Any]:
    """Peak RSS of the batch process for each table size (SQLite, latency 0)."""
    fake = start_fake(0.0, keep_records=1000)
    runs = []
    try:
        for rows in cfg.memory_rows:
            fake.reset()
            db = make_prompt_table(work_dir() / "memory.db", rows)
            spec = _batch_spec(fake, db, max_concurrency=cfg.memory_concurrency)
            client = run_worker(spec, f"memory_{rows}", timeout=rows / 100 + 120)
            runs.append(
                {
                    "rows": rows,
                    **{
                        k: client[k]
                        for k in (
                            "peak_rss_mb",
                            "rows_per_second",
                            "cpu_us_per_row",
                            "wall_seconds",
                            "succeeded",
                            "rss_samples_s_rss_hwm_mb",
                        )
                    },
                }
            )
            db.unlink(missing_ok=True)
    finally:
        fake.stop()
    first, last = runs[0], runs[-1]
    diff = round(last["peak_rss_mb"] - first["peak_rss_mb"], 1)
    row_diff = last["rows"] - first["rows"]
    return {
        "runs": runs,
        "rows_small": first["rows"],
        "rows_large": last["rows"],
        "rss_diff_mb": diff,
        "rss_ratio": ratio(last["peak_rss_mb"], first["peak_rss_mb"]),
        "rss_mb_per_100k_rows": round(diff / row_diff * 100_000, 2) if row_diff else None,
        "issue_sizes": list(cfg.memory_rows) == [100_000, 1_000_000],
    }


# -- 5 --------------------------------------------------------------------------------------------
def _pool_run(cfg: BenchConfig, fake: Any, backend_name: str) -> dict[str, Any]:
    if backend_name == "sqlite":
        pool_file = work_dir() / "pool.sqlite"
        pool_file.unlink(missing_ok=True)
        backend = f"sqlite:///{pool_file}"
    else:
        backend = cfg.redis_url
    key = f"bench-{uuid.uuid4().hex[:12]}"
    fake.reset()
    db = make_prompt_table(work_dir() / f"pool_{backend_name}.db", cfg.pool_rows)
    start_at = time.time() + cfg.pool_start_delay
    procs = []
    for i in range(cfg.pool_processes):
        spec = _batch_spec(
            fake,
            db,
            max_concurrency=cfg.pool_threads,
            pool_concurrency=cfg.pool_concurrency,
            rpm=cfg.pool_rpm,
            backend=backend,
            pool_key=key,
            shard=[i, cfg.pool_processes],
            start_at=start_at,
        )
        procs.append(spawn_worker(spec, f"pool_{backend_name}_{i}"))
    timeout = cfg.pool_start_delay + cfg.pool_rows / (cfg.pool_rpm / 60.0) * 3 + 60
    results, errors = [], []
    with paused_gc():
        for proc in procs:
            try:
                results.append(collect_worker(proc, timeout))
            except WorkerError as exc:
                errors.append(str(exc))
    if errors:
        raise WorkerError("; ".join(errors))
    succeeded = sum(r["succeeded"] for r in results)
    elapsed = max(r["ended_wall"] for r in results) - start_at
    achieved_rpm = succeeded / elapsed * 60.0 if elapsed > 0 else 0.0
    return {
        "backend": backend_name,
        "processes": cfg.pool_processes,
        "succeeded": succeeded,
        "failed": sum(r["failed"] for r in results),
        "elapsed_seconds": round(elapsed, 3),
        "achieved_rpm": round(achieved_rpm, 1),
        "limit_rpm": cfg.pool_rpm,
        "achieved_over_limit": ratio(achieved_rpm, cfg.pool_rpm),
        "late_start_seconds": max(r["late_seconds"] for r in results),
        "per_process_rows": [r["succeeded"] for r in results],
        "server": server_view(fake, cfg.pool_rpm),
    }


def shared_pool(cfg: BenchConfig) -> dict[str, Any]:
    """N processes share one RPM budget through the sqlite file / Redis pool backends."""
    out: dict[str, Any] = {
        "rows": cfg.pool_rows,
        "processes": cfg.pool_processes,
        "threads_per_process": cfg.pool_threads,
        "pool_max_concurrency": cfg.pool_concurrency,
        "latency_s": cfg.pool_latency,
        "limit_rpm": cfg.pool_rpm,
    }
    fake = start_fake(cfg.pool_latency, keep_records=None)
    try:
        for name in cfg.pool_backends:
            try:
                out[name] = _pool_run(cfg, fake, name)
            except Exception as exc:  # one backend down must not hide the other's numbers
                out[name] = {"backend": name, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        fake.stop()
    return out
