"""The environment of the native system test's Airflow, by name: docker/compose.yaml uses the same names.

Kept in one place so the compose file can be checked against it (tests/system/test_docker_compose.py):
if the native test needs a new setting, the container deployment most likely needs it too.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DAG_ID = "example_dify_sharded"
DAG_FILE = "example_dify_sharded.py"
POOL = "dify_pool"
POOL_SLOTS = 4
DIFY_CONN_ID = "dify_default"
SQL_CONN_ID = "dify_sql"
TABLE_ENV = "DIFY_SHARDED_TABLE"

#: Settings every component (scheduler, dag-processor, api-server, workers) must agree on.
COMMON_NAMES = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CORE__PARALLELISM",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL",
    "AIRFLOW_CONN_DIFY_DEFAULT",
    "AIRFLOW_CONN_DIFY_SQL",
    TABLE_ENV,
)
#: Only the CeleryExecutor deployment needs these.
CELERY_NAMES = (
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY",
    "AIRFLOW__OPERATORS__DEFAULT_QUEUE",
)

#: Native-only: paths, ports and loop speed of processes sharing one host (containers need none).
NATIVE_ONLY_NAMES = (
    "AIRFLOW_HOME",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
    "AIRFLOW__CORE__UNIT_TEST_MODE",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC",
)
#: Container-only: the image's dumb-init must not signal a Celery worker's whole group.
CONTAINER_ONLY_NAMES = ("DUMB_INIT_SETSID",)
#: Redis dbs: Celery broker and the shared rate-limit budget (the same numbers in docker/compose.yaml).
BROKER_DB = 1
RATE_LIMIT_DB = 3


@dataclass(frozen=True)
class Budget:
    """FakeDify's server-side limits and the (slightly lower) budget the connection declares."""

    server_rpm: int = 1200
    server_max_active: int = 10
    conn_rpm: int = 1140  # 95 %: timing jitter makes 100 % overshoot by one request now and then
    conn_max_concurrency: int = 8
    latency: float = 0.25


def dify_connection(url: str, api_key: str, budget: Budget, redis_url: str) -> str:
    return json.dumps(
        {
            "conn_type": "dify",
            "host": url,
            "password": api_key,
            "extra": {
                "app_mode": "chat",
                "max_concurrency": budget.conn_max_concurrency,
                "requests_per_minute": budget.conn_rpm,
                "rate_limit_backend": redis_url,
            },
        }
    )


def sql_connection(database: str) -> str:
    return json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": database}
    )


def new_keys() -> dict[str, str]:
    """Fresh secrets for one test run: every component must share them (JWTs, fernet)."""
    from cryptography.fernet import Fernet

    return {
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
    }


def airflow_env(
    *,
    home: Path,
    dags: Path,
    logs: Path,
    metadata_db: str,
    api_port: int,
    log_port: int,
    executor: str,
    dify_conn: str,
    sql_conn: str,
    table: str,
    keys: Mapping[str, str],
    celery: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Airflow settings for one phase (``keys`` from :func:`new_keys`, shared by all phases)."""
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(logs),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_port),
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__PARALLELISM": str(POOL_SLOTS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{metadata_db}",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # Quick scheduling loops: the test waits on them, a 2-core box has little else to do.
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW_CONN_DIFY_DEFAULT": dify_conn,
        "AIRFLOW_CONN_DIFY_SQL": sql_conn,
        TABLE_ENV: table,
    }
    env.update(keys)
    env.update(celery or {})
    return env
