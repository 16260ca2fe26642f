"""Test setup: a private AIRFLOW_HOME per session, FakeDify fixtures, and hard service checks.

PostgreSQL and Redis tests never skip: if the service cannot be reached the test fails, so CI
cannot go green by silently testing less.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

_HOME = Path(tempfile.mkdtemp(prefix="airflow-dify-tests-"))
# Must be set before anything imports airflow.
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_HOME / "dags")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
(_HOME / "dags").mkdir()

import pytest  # noqa: E402

pytest_plugins = ["airflow_dify.testing.pytest_plugin", "tests.sql_fixtures"]

PG_DSN = os.environ.get("DIFY_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")
REDIS_URL = os.environ.get("DIFY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _require_services(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("postgres") and not _reachable(5432):
        pytest.fail("PostgreSQL at 127.0.0.1:5432 is unreachable (postgres-marked tests never skip)")
    if request.node.get_closest_marker("mysql") and not _reachable(3306):
        pytest.fail(
            "MySQL/MariaDB at 127.0.0.1:3306 is unreachable (run scripts/mysql.sh; mysql tests never skip)"
        )
    if request.node.get_closest_marker("redis") and not _reachable(6379):
        pytest.fail("Redis at 127.0.0.1:6379 is unreachable (redis-marked tests never skip)")


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def metadata_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated metadata DB no process keeps open: copied for each ``airflow ... test`` process.

    Copying the session's own DB while it is in use (WAL mode) can tear the copy or race with a
    checkpoint; this one is written once, then only read.
    """
    home = tmp_path_factory.mktemp("metadata_template")
    env = {**os.environ, "AIRFLOW_HOME": str(home)}
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=env
    )
    os.environ["DIFY_TEST_METADATA_TEMPLATE"] = str(home / "airflow.db")
    return home / "airflow.db"


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """A migrated metadata DB (SQLite) for dag.test() runs."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    return airflow_home
