"""The three real databases the tests run on, and how to reach them (loopback only).

PostgreSQL and MySQL/MariaDB tests are marked and fail, never skip, when their server is down
(``scripts/mysql.sh`` starts MariaDB natively; ``.ci/run`` does so itself).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}
PG_DSN = os.environ.get(
    "DIFY_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5"
)
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "database": "test"}
KINDS = ("sqlite", "postgres", "mysql")


def connect(kind: str, sqlite_path: Path | None = None) -> Any:
    """A new DB-API connection to the test database of ``kind``."""
    if kind == "sqlite":
        assert sqlite_path is not None
        return sqlite3.connect(sqlite_path)
    if kind == "postgres":
        import psycopg

        return psycopg.connect(PG_DSN)
    import MySQLdb

    return MySQLdb.connect(
        host=MYSQL["host"],
        port=MYSQL["port"],
        user=MYSQL["user"],
        passwd=MYSQL["password"],
        db=MYSQL["database"],
        charset="utf8mb4",
    )


def require(kind: str) -> None:
    """Fail the test (never skip) when the server of ``kind`` cannot be reached."""
    if kind == "sqlite":
        return
    try:
        connect(kind).close()
    except Exception as exc:  # noqa: BLE001 - any driver's connection error
        pytest.fail(f"{kind} at 127.0.0.1 is unreachable: {exc}")


def airflow_connection(kind: str, sqlite_path: Path | None = None) -> dict[str, Any]:
    """The same database as an Airflow connection (for AIRFLOW_CONN_* variables)."""
    if kind == "sqlite":
        return {"conn_type": "sqlite", "host": str(sqlite_path)}
    if kind == "postgres":
        return {
            "conn_type": "postgres",
            "host": PG["host"],
            "port": PG["port"],
            "login": PG["user"],
            "schema": PG["dbname"],
        }
    return {
        "conn_type": "mysql",
        "host": MYSQL["host"],
        "port": MYSQL["port"],
        "login": MYSQL["user"],
        "schema": MYSQL["database"],
        "extra": {"charset": "utf8mb4"},
    }


def params(*, sqlite: bool = True) -> list[Any]:
    """pytest parameters for the database kinds, each server marked with what it needs."""
    out: list[Any] = ["sqlite"] if sqlite else []
    out += [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
    return out


def run_sql(
    connect: Callable[[], Any], sql: str, params: Any = None, *, many: bool = False, fetch: bool = False
) -> tuple[list[tuple], list[str]]:
    """One statement on a fresh connection, committed: (rows if ``fetch``, column names)."""
    with closing(connect()) as db:
        cur = db.cursor()
        if many:
            cur.executemany(sql, params)
        elif params is None:
            cur.execute(sql)
        else:
            cur.execute(sql, params)
        rows = list(cur.fetchall()) if fetch else []
        names = [d[0] for d in cur.description or ()]
        db.commit()
        return rows, names


def fetch_all(connect: Callable[[], Any], sql: str) -> list[tuple]:
    return run_sql(connect, sql, fetch=True)[0]
