"""Scenario 4: the same rows on the same server in the same run, three ways.

1. the seed's loop (sequential ``requests.post``, sliding-window limiter, one UPDATE per row);
2. one Airflow task per row (``@task`` + ``.expand()``), run by ``dag.test()``;
3. :class:`DifyBatchOperator` with ``max_concurrency=32``, run by ``dag.test()``.

Rates: ``rows / wall`` where wall is the loop for the seed and the whole ``dag.test()`` for the
Airflow ways (what a user waits for). The operator's in-task rate (its own summary) and each
way's server-side span are reported too, so the fixed DAG-run overhead is visible.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    make_prompt_table,
    rate,
    ratio,
    records_view,
    run_worker,
    server_view,
    start_fake,
    work_dir,
)
from bench.config import BenchConfig


def airflow_env(home: Path) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }


def prepare_airflow_home(cfg: BenchConfig) -> Path:
    """A private AIRFLOW_HOME with a migrated SQLite metadata DB (reused if given)."""
    home = cfg.airflow_home or work_dir() / "airflow_home"
    (home / "dags").mkdir(parents=True, exist_ok=True)
    if cfg.airflow_migrate:
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            capture_output=True,
            timeout=600,
            cwd=REPO,
            env={**os.environ, **airflow_env(home)},
        )
    return home


def baselines(cfg: BenchConfig) -> dict[str, Any]:
    n, lat = cfg.baseline_rows, cfg.baseline_latency
    home = prepare_airflow_home(cfg)
    env = airflow_env(home)
    out: dict[str, Any] = {"rows": n, "latency_s": lat, "operator_max_concurrency": cfg.operator_concurrency}
    fake = start_fake(lat, keep_records=None)
    try:
        base = {"url": fake.url, "key": fake.app("chat").key}
        db = make_prompt_table(work_dir() / "baseline_seed_loop.db", n)
        seed = run_worker(
            {**base, "kind": "seed_loop", "seed_rpm": cfg.seed_rpm, "db": str(db)},
            "baseline_seed_loop",
            timeout=n * lat * 3 + 60,
        )
        seed["server"] = server_view(fake, None)
        fake.reset()
        # Both Airflow ways in one process: the dag.test() warm-up is paid once; the server log
        # is split by each run's monotonic interval.
        runs = [
            {"dag": "task_per_row", "db": str(make_prompt_table(work_dir() / "baseline_tpr.db", n))},
            {
                "dag": "operator",
                "db": str(make_prompt_table(work_dir() / "baseline_operator.db", n)),
                "max_concurrency": cfg.operator_concurrency,
            },
        ]
        airflow = run_worker(
            {**base, "kind": "airflow_dags", "runs": runs}, "baseline_airflow", n * 4 + 300, env=env
        )
        out["airflow_warm_up_seconds"] = airflow["warm_up_seconds"]
        out["airflow_worker_peak_rss_mb"] = airflow["peak_rss_mb"]
        for name, run in airflow["runs"].items():
            run["server"] = records_view(fake, run.pop("monotonic_start"), run.pop("monotonic_end"))
            out[name] = run
        out["seed_loop"] = seed
        for name in ("seed_loop", "task_per_row", "operator"):
            result = out[name]
            result["rows_per_second"] = round(rate(result["succeeded"], result["wall_seconds"]), 3)
            span = result["server"].get("span_seconds") or 0.0
            result["server_span_rows_per_second"] = round(rate(result["succeeded"], span + lat), 3)
    finally:
        fake.stop()
    seed, tpr, op = out["seed_loop"], out["task_per_row"], out["operator"]
    summary = op.get("summary") or {}
    op_in_task = summary.get("rows_per_second") or 0.0
    out["operator_in_task_rows_per_second"] = op_in_task
    out["ratios"] = {
        "operator_vs_seed": ratio(op["rows_per_second"], seed["rows_per_second"]),
        "operator_vs_task_per_row": ratio(op["rows_per_second"], tpr["rows_per_second"]),
        "operator_in_task_vs_seed": ratio(op_in_task, seed["rows_per_second"]),
        "seed_vs_task_per_row": ratio(seed["rows_per_second"], tpr["rows_per_second"]),
        "server_span_operator_vs_seed": ratio(
            op["server_span_rows_per_second"], seed["server_span_rows_per_second"]
        ),
        "server_span_operator_vs_task_per_row": ratio(
            op["server_span_rows_per_second"], tpr["server_span_rows_per_second"]
        ),
    }
    out["physical_bound_rows_per_second"] = round(cfg.operator_concurrency / lat, 2)
    out["physical_bound_vs_seed"] = ratio(cfg.operator_concurrency / lat, seed["rows_per_second"])
    return out
