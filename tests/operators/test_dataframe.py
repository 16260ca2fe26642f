"""dify_answer_dataframe inside a real @task (dag.test()): the connection's pool, retries and summary."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from airflow_dify.testing import FakeDify, Fault
from tests.airflow_run import load_dag, xcom

pytestmark = pytest.mark.usefixtures("airflow_db")

DAG_FILE = """\
import datetime as dt

import pandas as pd
from airflow.sdk import DAG, task

from airflow_dify.operators.dataframe import dify_answer_dataframe

with DAG({dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:

    @task
    def classify() -> dict:
        df = pd.DataFrame({{"text": [f"review {{i}}" for i in range(60)], "lang": ["en", "de"] * 30}})
        out = dify_answer_dataframe(
            df, "dify_test", query_column="text", input_columns={{"language": "lang"}}, chunk_size=16
        )
        out.to_csv({csv!r}, index=False)
        return {{"rows": len(out), "succeeded": int((out["status"] == "succeeded").sum())}}

    classify()
"""


def test_task_helper_uses_the_connection_pool_retries_and_pushes_the_summary(
    fake_dify: FakeDify, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_dify.latency = 0.02
    # Two transient 503s: retried by the client's policy, not failed rows.
    fake_dify.faults.add(Fault("status", status=503, code="unavailable", on=[5, 30]))
    conn = {
        "conn_type": "dify",
        "host": fake_dify.url,
        "password": fake_dify.app("chat").key,
        "extra": {"app_mode": "chat", "max_concurrency": 3},
    }
    monkeypatch.setenv("AIRFLOW_CONN_DIFY_TEST", json.dumps(conn))
    csv = tmp_path / "out.csv"
    path = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / "df_task.py"
    path.write_text(DAG_FILE.format(dag_id="df_task", csv=str(csv)))
    dr = load_dag(path).test()
    ti = next(t for t in dr.get_task_instances() if t.task_id == "classify")
    assert str(ti.state) == "success"
    assert xcom("df_task", dr.run_id, task_id="classify") == {"rows": 60, "succeeded": 60}
    summary = xcom("df_task", dr.run_id, key="summary", task_id="classify")
    assert summary["succeeded"] == 60 and summary["rows_selected"] == 60
    out = pd.read_csv(csv)
    assert out.loc[3, "answer"] == "Answer: review 3 | language=de"
    assert summary["total_tokens"] == int(out["total_tokens"].sum())
    assert fake_dify.calls() == 62  # 60 rows + 2 retried attempts, no failed row
    assert fake_dify.stats()["max_concurrency_seen"] <= 3  # the connection's cap held
    bodies = [r.body for r in fake_dify.requests if r.path == "/chat-messages"]
    assert {b["user"] for b in bodies} == {"airflow-df_task"}
