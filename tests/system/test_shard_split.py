"""The operator's shard split covers every id exactly once, on SQLite and PostgreSQL.

One ``dag.test()`` per backend runs mapped ``DifyBatchOperator`` groups (``.partial().expand()``,
as in dags/example_dify_sharded.py), group N splitting its own table into N shards. Each shard
sends a templated ``user`` (``shard-<map_index>``), so FakeDify's request log shows which shard
asked for which row: every prompt must be asked exactly once, by shard ``id mod N`` (the true
modulo: negative ids included).

Every N in 1..8 is covered at the SqlTable level on both backends
(tests/batch/test_sql_table.py::test_shards_partition_the_ids_exactly); here N = 1, 2, 3 and 8
(one, even, odd, the most), because each mapped task costs ~0.5 s of Airflow overhead in dag.test().
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from airflow_dify.testing import FakeDify
from tests.airflow_run import load_dag
from tests.sql_fixtures import SqlDb, unique_table

pytestmark = pytest.mark.usefixtures("airflow_db")

COUNTS = (1, 2, 3, 8)
IDS = list(range(-11, 14))  # 25 ids: negatives, zero, and every residue for every N <= 8

DAG = """\
import datetime as dt
import json

from airflow.sdk import DAG

from airflow_dify.operators.dify import DifyBatchOperator

TABLES = json.loads({tables!r})

with DAG({dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:
    for n, table in TABLES.items():
        DifyBatchOperator.partial(
            task_id=f"split_{{n}}",
            sql_conn_id="sql_test",
            dify_conn_id="dify_split",
            table=table,
            app_mode="chat",
            user="shard-{{{{ ti.map_index }}}}",
            shard_count=int(n),
            chunk_size=4,
        ).expand(shard_index=list(range(int(n))))
"""


def prompt(n: int, row_id: int) -> str:
    return f"split {n} row {row_id}"


def test_every_id_answered_once_by_its_shard(
    sql_db: SqlDb, fake_dify: FakeDify, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "dify", "host": fake_dify.url, "password": fake_dify.app("chat").key}
    monkeypatch.setenv("AIRFLOW_CONN_DIFY_SPLIT", json.dumps(conn))
    tables = {str(n): unique_table(f"split{n}") for n in COUNTS}
    for n, table in tables.items():
        sql_db.create_prompts(table, [(i, prompt(int(n), i)) for i in IDS])
    dag_id = f"shard_split_{sql_db.kind}"
    path = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{dag_id}.py"
    path.write_text(DAG.format(dag_id=dag_id, tables=json.dumps(tables)))
    try:
        dr = load_dag(path).test()
        states = Counter((ti.task_id, str(ti.state)) for ti in dr.get_task_instances())
        statuses = {n: sql_db.query(f"SELECT id, status FROM {t}") for n, t in tables.items()}
    finally:
        for table in tables.values():
            sql_db.drop(table)
    assert states == Counter({(f"split_{n}", "success"): n for n in COUNTS})
    for n, rows in statuses.items():
        assert sorted(rows) == [(i, "succeeded") for i in IDS], n

    asked = Counter(
        (r.body["query"], r.body["user"]) for r in fake_dify.requests if r.path == "/chat-messages"
    )
    expected = Counter({(prompt(n, i), f"shard-{i % n}"): 1 for n in COUNTS for i in IDS})
    assert asked == expected
