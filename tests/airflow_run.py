"""Run the real operator through ``dag.test()``: a DAG file written into the test dags folder.

Airflow 3 only test-runs DAGs that the dags-folder bundle can serialize, so each test writes a
small DAG file (operator kwargs as JSON) instead of building a DAG in memory.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

DAG_TEMPLATE = """\
import datetime as dt
import json

from airflow.sdk import DAG

from airflow_dify.operators.dify import DifyBatchOperator

KWARGS = json.loads({kwargs!r})

with DAG({dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:
    DifyBatchOperator(task_id="batch", **KWARGS)
"""


def write_dag(dag_id: str, operator_kwargs: dict[str, Any]) -> Path:
    path = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{dag_id}.py"
    path.write_text(DAG_TEMPLATE.format(dag_id=dag_id, kwargs=json.dumps(operator_kwargs)))
    return path


def load_dag(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"testdag_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def xcom(dag_id: str, run_id: str, key: str = "return_value", task_id: str = "batch") -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=run_id, key=key, task_ids=task_id, dag_ids=dag_id)
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


def run_batch_dag(dag_id: str, **operator_kwargs: Any) -> tuple[str, dict[str, Any] | None]:
    """dag.test() a one-task DAG; returns (task state, summary XCom)."""
    dag = load_dag(write_dag(dag_id, operator_kwargs))
    dr = dag.test()
    ti = next(t for t in dr.get_task_instances() if t.task_id == "batch")
    return str(ti.state), xcom(dag_id, dr.run_id, key="summary")
