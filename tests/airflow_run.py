"""Run the real operator through ``dag.test()``: a DAG file written into the test dags folder.

Airflow 3 only test-runs DAGs that the dags-folder bundle can serialize, so each test writes a
small DAG file (operator kwargs as JSON) instead of building a DAG in memory.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
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


MAPPED_TEMPLATE = """\
import datetime as dt
import json

from airflow.sdk import DAG

from airflow_dify.operators.dify import DifyBatchOperator

KWARGS = json.loads({kwargs!r})

with DAG({dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:
    DifyBatchOperator.partial(task_id="batch", **KWARGS).expand(shard_index={shards!r})
"""


def run_mapped_dag(dag_id: str, shards: list[int], **operator_kwargs: Any) -> tuple[str, list[Any]]:
    """dag.test() a DAG whose one task is mapped over ``shard_index``; (run state, summaries)."""
    path = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{dag_id}.py"
    path.write_text(MAPPED_TEMPLATE.format(dag_id=dag_id, kwargs=json.dumps(operator_kwargs), shards=shards))
    dr = load_dag(path).test()
    summaries = [xcom_all(dag_id, dr.run_id, key="summary")]
    return str(dr.state), summaries[0]


def xcom_all(dag_id: str, run_id: str, key: str, task_id: str = "batch") -> list[Any]:
    """Every mapped instance's XCom ``key``, by map index."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run_id, key=key, task_ids=task_id, dag_ids=dag_id))
        return [XComModel.deserialize_value(row) for row in sorted(rows, key=lambda r: r.map_index)]


def run_dag_processes(
    dag_id: str, homes: list[Path], timeout: float = 240, **operator_kwargs: Any
) -> list[tuple[int, str, dict[str, Any] | None]]:
    """``airflow dags test`` the same one-task DAG in one process per home, all started together.

    Each process gets its own AIRFLOW_HOME with a copy of the migrated metadata database (two
    processes writing one SQLite metadata file would fight over its lock) and its own logical
    date, so each is a different DAG run. Returns (exit code, output tail, summary XCom) each.
    """
    write_dag(dag_id, operator_kwargs)
    source = Path(os.environ["DIFY_TEST_METADATA_TEMPLATE"])  # the metadata_template fixture
    procs = []
    for i, home in enumerate(homes):
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, home / "airflow.db")
        env = {**os.environ, "AIRFLOW_HOME": str(home)}
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"
        cmd = [sys.executable, "-m", "airflow", "dags", "test", dag_id, f"2026-01-{i + 1:02d}T00:00:00+00:00"]
        procs.append(popen_logged(cmd, home / "run.log", env=env))
    results = []
    for proc, home in zip(procs, homes, strict=True):
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out = (home / "run.log").read_text(errors="replace")
        results.append((proc.returncode, out[-4000:], _summary_in(home / "airflow.db", dag_id)))
    return results


def popen_logged(cmd: list[str], log: Path, **popen_kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with stdout and stderr going to ``log``, not to a pipe.

    A pipe nobody reads while the child runs blocks the child once ~64 KiB of output is queued:
    with enough DAG files in the shared folder, the parse warnings alone filled it, so the
    second of two "concurrent" runs stalled until the first had finished (a CI-only failure).
    """
    with open(log, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **popen_kwargs)


def _summary_in(db: Path, dag_id: str) -> dict[str, Any] | None:
    with closing(sqlite3.connect(db)) as conn:
        row = conn.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND key = 'summary' ORDER BY timestamp DESC LIMIT 1",
            (dag_id,),
        ).fetchone()
    if row is None:
        return None
    value = json.loads(row[0]) if isinstance(row[0], (str, bytes)) else row[0]
    return json.loads(value) if isinstance(value, str) else value
