"""The two Airflow ways to run a table batch, each as a real DAG file run by ``dag.test()``.

* ``task_per_row``: ``@task`` + ``.expand()`` over the rows, one Dify call and one UPDATE per
  mapped task instance: how ``@task.llm`` (common-ai) style tasks are used for batches.
* ``operator``: one :class:`DifyBatchOperator` task.

Runs inside a ``bench.worker`` process whose ``AIRFLOW_HOME`` the bench prepared (migrated DB);
Airflow 3 only test-runs DAGs from the dags folder, hence the files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

DIFY_CONN_ID = "dify_bench"
SQL_CONN_ID = "sql_bench"

_HEADER = """\
import datetime as dt
import sqlite3
from contextlib import closing

from airflow.sdk import DAG, task

from airflow_dify.hooks.dify import DifyHook
from airflow_dify.operators.dify import DifyBatchOperator

DB = {db!r}
TABLE = {table!r}
"""

TASK_PER_ROW = (
    _HEADER
    + """
with DAG({dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:

    @task
    def pending_rows() -> list[dict]:
        with closing(sqlite3.connect(DB)) as db:
            rows = db.execute(f"SELECT id, prompt FROM {{TABLE}} WHERE status IS NULL ORDER BY id")
            return [{{"id": i, "prompt": p}} for i, p in rows]

    @task
    def answer_row(row: dict) -> None:
        hook = DifyHook(dify_conn_id={conn!r})
        try:
            result = hook.chat(row["prompt"], user="airflow-bench")
        finally:
            hook.close()
        with closing(sqlite3.connect(DB)) as db:
            db.execute(
                f"UPDATE {{TABLE}} SET answer = ?, total_tokens = ?, status = 'succeeded' WHERE id = ?",
                (result.answer, result.usage.total_tokens, row["id"]),
            )
            db.commit()

    answer_row.expand(row=pending_rows())
"""
)

OPERATOR = (
    _HEADER
    + """
with DAG({dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:
    DifyBatchOperator(
        task_id="batch",
        table=TABLE,
        sql_conn_id={sql_conn!r},
        dify_conn_id={conn!r},
        app_mode="chat",
        max_concurrency={max_concurrency!r},
    )
"""
)


WARM_UP = """\
import datetime as dt

from airflow.sdk import DAG, task

with DAG({dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:

    @task
    def warm_up() -> None:
        return None

    warm_up()
"""


def _connections(url: str, key: str, db: str) -> None:
    os.environ[f"AIRFLOW_CONN_{DIFY_CONN_ID.upper()}"] = json.dumps(
        {"conn_type": "dify", "host": url, "password": key, "extra": {"app_mode": "chat"}}
    )
    os.environ[f"AIRFLOW_CONN_{SQL_CONN_ID.upper()}"] = json.dumps({"conn_type": "sqlite", "host": db})


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"benchdag_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def _summary(dag_id: str, run_id: str) -> dict[str, Any] | None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=run_id, key="summary", task_ids="batch", dag_ids=dag_id)
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


def _test_file(path: Path, text: str) -> tuple[Any, float]:
    """Write, load and ``dag.test()`` one DAG file; (dag run, seconds spent in dag.test())."""
    path.write_text(text)
    try:
        dag = _load(path)
        started = time.perf_counter()
        dag_run = dag.test()
        return dag_run, time.perf_counter() - started
    finally:
        path.unlink(missing_ok=True)


def _run_one(folder: Path, stamp: int, run: dict[str, Any], url: str, key: str) -> dict[str, Any]:
    kind, db, table = run["dag"], run["db"], run.get("table", "prompts")
    _connections(url, key, db)
    if kind == "task_per_row":
        with closing(sqlite3.connect(db)) as conn:  # the columns the tasks write, not timed
            for col in ("answer TEXT", "total_tokens INTEGER", "status TEXT"):
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {col}")
            conn.commit()
    dag_id = f"bench_{kind}_{stamp}"
    template = TASK_PER_ROW if kind == "task_per_row" else OPERATOR
    text = template.format(
        db=db,
        table=table,
        dag_id=dag_id,
        conn=DIFY_CONN_ID,
        sql_conn=SQL_CONN_ID,
        max_concurrency=run.get("max_concurrency", 32),
    )
    mono_start = time.monotonic()  # system-wide on Linux: the bench matches it to the server log
    dag_run, wall = _test_file(folder / f"{dag_id}.py", text)
    mono_end = time.monotonic()
    states = [str(ti.state) for ti in dag_run.get_task_instances()]
    with closing(sqlite3.connect(db)) as conn:
        answered = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE status = 'succeeded'").fetchone()[0]
    return {
        "dag_state": str(dag_run.state),
        "task_instances": len(states),
        "failed_task_instances": sum(s != "success" for s in states),
        "succeeded": int(answered),
        "wall_seconds": round(wall, 3),
        "summary": _summary(dag_id, dag_run.run_id) if kind == "operator" else None,
        "monotonic_start": mono_start,
        "monotonic_end": mono_end,
    }


def run_dags(spec: dict[str, Any]) -> dict[str, Any]:
    """``dag.test()`` each DAG of ``spec["runs"]`` in turn, after a one-task warm-up DAG.

    The first ``dag.test()`` in a process builds the in-process execution API (8-20 s measured
    on 2 cores, mostly imports); a deployed Airflow has its API server up already, so that
    one-time cost is paid by the warm-up and reported as ``warm_up_seconds``, outside the runs.
    """
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    stamp = int(time.time() * 1000)
    _, warm_up = _test_file(
        folder / f"bench_warm_up_{stamp}.py", WARM_UP.format(dag_id=f"bench_warm_up_{stamp}")
    )
    runs = {run["dag"]: _run_one(folder, stamp, run, spec["url"], spec["key"]) for run in spec["runs"]}
    return {"warm_up_seconds": round(warm_up, 3), "runs": runs}
