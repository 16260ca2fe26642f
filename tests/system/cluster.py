"""A real Airflow on this machine for system tests: metadata and data databases, components, env.

A module-scoped :func:`metadata` fixture makes fresh PostgreSQL databases (migrated once);
:func:`start_airflow` starts api-server, dag-processor and scheduler (and Celery workers) as
process groups that :class:`~tests.system.processes.Processes` stops.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.system.airflow_env import (
    BROKER_DB,
    DAG_FILE,
    POOL,
    POOL_SLOTS,
    airflow_env,
    new_keys,
    sql_connection,
)
from tests.system.processes import Processes

ROOT = Path(__file__).resolve().parents[2]
TABLE = "dify_prompts"
CELERY_BROKER = f"redis://127.0.0.1:6379/{BROKER_DB}"


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg(dbname: str = "postgres"):
    import psycopg

    return psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname=dbname, autocommit=True)


@dataclass(frozen=True)
class Metadata:
    meta_db: str
    data_db: str
    home: Path
    dags: Path
    keys: dict[str, str]

    @property
    def data_dsn(self) -> str:
        return f"host=127.0.0.1 port=5432 user=postgres dbname={self.data_db}"


def base_env() -> dict[str, str]:
    """This process's environment minus its own Airflow settings (tests/conftest.py sets some)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DIFY_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture(scope="module")
def metadata(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Metadata]:
    """Fresh metadata + data databases, migrated once for both executors, dropped afterwards."""
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    meta = Metadata(
        meta_db=f"airflow_sys_{tag}",
        data_db=f"dify_sys_{tag}",
        home=tmp_path_factory.mktemp("airflow_home"),
        dags=tmp_path_factory.mktemp("dags"),
        keys=new_keys(),
    )
    shutil.copy(ROOT / "dags" / DAG_FILE, meta.dags / DAG_FILE)
    with closing(_pg()) as db:
        db.execute(f"CREATE DATABASE {meta.meta_db}")
        db.execute(f"CREATE DATABASE {meta.data_db}")
    procs = Processes(meta.home / "setup-logs")
    try:
        env = {**base_env(), **phase_env(meta, "LocalExecutor", free_port(), free_port(), "{}")}
        procs.run("db-migrate", [sys.executable, "-m", "airflow", "db", "migrate"], env, timeout=180)
        pool_cmd = ["pools", "set", POOL, str(POOL_SLOTS), "Dify calls: at most 4 shards at once"]
        procs.run("pools-set", [sys.executable, "-m", "airflow", *pool_cmd], env, timeout=60)
        yield meta
    finally:
        left = procs.stop_all()
        with closing(_pg()) as db:
            db.execute(f"DROP DATABASE IF EXISTS {meta.meta_db} WITH (FORCE)")
            db.execute(f"DROP DATABASE IF EXISTS {meta.data_db} WITH (FORCE)")
        assert not left, f"setup processes left behind: {left}"


def phase_env(
    meta: Metadata, executor: str, api_port: int, log_port: int, dify_conn: str, queue: str = ""
) -> dict[str, str]:
    celery = None
    if executor == "CeleryExecutor":
        celery = {
            "AIRFLOW__CELERY__BROKER_URL": CELERY_BROKER,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://postgres@127.0.0.1:5432/{meta.meta_db}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            # A queue of our own: another Airflow using the same broker db cannot steal our tasks.
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        }
    return airflow_env(
        home=meta.home,
        dags=meta.dags,
        logs=meta.home / "logs",
        metadata_db=meta.meta_db,
        api_port=api_port,
        log_port=log_port,
        executor=executor,
        dify_conn=dify_conn,
        sql_conn=sql_connection(meta.data_db),
        table=TABLE,
        keys=meta.keys,
        celery=celery,
    )


def start_airflow(procs: Processes, env: dict[str, str], api_port: int, tag: str, queue: str) -> None:
    """api-server, dag-processor, scheduler; for Celery 2 workers (started first: slowest to get ready)."""
    airflow = [sys.executable, "-m", "airflow"]
    if tag == "celery":
        for i in (1, 2):
            worker = ["celery", "worker", "-c", "2", "-q", queue, "-H", f"w{i}@dify-systest"]
            # No log server (two workers on one host would fight over its port; logs are local files);
            # no gossip/mingle: nothing to sync with, and they slow the start.
            flags = ["--skip-serve-logs", "--without-gossip", "--without-mingle"]
            procs.start(f"worker{i}", [*airflow, *worker, *flags], env)
    api = ["api-server", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1"]
    procs.start("api-server", [*airflow, *api], env)
    procs.start("dag-processor", [*airflow, "dag-processor"], env)
    procs.start("scheduler", [*airflow, "scheduler"], env)


def task_log_tails(meta: Metadata, lines: int = 40) -> str:
    out = []
    for path in sorted((meta.home / "logs").rglob("*.log"))[-8:]:
        text = path.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- task log {path}:\n" + "\n".join(text))
    return "\n".join(out)
