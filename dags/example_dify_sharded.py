"""Answer one prompts table with 4 mapped shards that share one Dify budget.

Scale-out uses Airflow's own engines: the same DAG runs on LocalExecutor (4 task processes) or
on CeleryExecutor (tasks on several workers/machines). What keeps the shards honest:

- ``shard_index``/``shard_count`` split the rows by ``id mod 4`` (the true modulo, so negative ids
  too), so the 4 mapped tasks cover the table with no overlap and no gap;
- the ``dify_default`` connection's ``rate_limit_backend`` (``redis://host:6379/3``) makes every
  shard, on every worker, draw from one concurrency + requests-per-minute budget;
- the Airflow pool ``dify_pool`` bounds how many shards run at once
  (``airflow pools set dify_pool 4 "Dify calls"``; a missing pool leaves the tasks unscheduled).

Connections (e.g. as ``AIRFLOW_CONN_<ID>`` env vars, see docker/README.md):
- ``dify_default``: type ``dify``; host = Dify API base URL with ``/v1``; password = app key;
  extras ``{"app_mode": "chat", "max_concurrency": 8, "requests_per_minute": 1140,
  "rate_limit_backend": "redis://127.0.0.1:6379/3"}``.
- ``dify_sql``: any SQL connection (PostgreSQL here) holding the table (``id`` integer, ``prompt``).

The table name comes from the ``DIFY_SHARDED_TABLE`` env var (default ``dify_prompts``), read at
parse time because the Asset outlet is part of the DAG's structure. Re-running only calls Dify
for rows not answered yet (and failed ones).
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG, Asset

from airflow_dify.operators.dify import DifyBatchOperator

SHARDS = 4
TABLE = os.environ.get("DIFY_SHARDED_TABLE", "dify_prompts")
#: Downstream DAGs can schedule on this: one event per finished shard.
ANSWERS = Asset(name=f"dify_answers_{TABLE}", uri=f"dify://answers/{TABLE}")

with DAG(
    dag_id="example_dify_sharded",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dify", "example", "scale-out"],
    doc_md=__doc__,
):
    DifyBatchOperator.partial(
        task_id="answer_shard",
        sql_conn_id="dify_sql",
        dify_conn_id="dify_default",
        table=TABLE,
        id_column="id",
        query_column="prompt",
        app_mode="chat",
        chunk_size=50,
        shard_count=SHARDS,
        max_failed_ratio=0.0,
        pool="dify_pool",
        outlets=[ANSWERS],
        # A shard that dies mid-run loses only its in-flight rows; the retry resumes the rest.
        retries=2,
        retry_delay=dt.timedelta(seconds=10),
    ).expand(shard_index=list(range(SHARDS)))
