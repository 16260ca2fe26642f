"""Real SQLite and PostgreSQL tables for operator tests, exposed as Airflow connections."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}


@dataclass
class SqlDb:
    kind: str  # "sqlite" | "postgres"
    conn_id: str
    conn_json: str
    sqlite_path: Path | None = None

    @property
    def ph(self) -> str:
        return "?" if self.kind == "sqlite" else "%s"

    def connect(self) -> Any:
        if self.kind == "sqlite":
            return sqlite3.connect(self.sqlite_path)
        import psycopg

        return psycopg.connect(**PG)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with closing(self.connect()) as db:
            db.execute(sql.replace("?", self.ph), params)
            db.commit()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with closing(self.connect()) as db:
            return list(db.execute(sql.replace("?", self.ph), params).fetchall())

    def records(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts by column name (as the database spells them), so tests never count positions."""
        with closing(self.connect()) as db:
            cur = db.execute(sql.replace("?", self.ph), params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def create_prompts(
        self, table: str, rows: Sequence[tuple], columns: str = "id INTEGER PRIMARY KEY, prompt TEXT"
    ) -> None:
        names = [c.split()[0] for c in columns.split(",")]
        with closing(self.connect()) as db:
            db.execute(f"DROP TABLE IF EXISTS {table}")
            db.execute(f"CREATE TABLE {table} ({columns})")
            marks = ", ".join([self.ph] * len(names))
            cur = db.cursor()
            cur.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})", list(rows))
            db.commit()

    def drop(self, table: str) -> None:
        self.execute(f"DROP TABLE IF EXISTS {table}")


def _sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SqlDb:
    path = tmp_path / "data.db"
    conn = json.dumps({"conn_type": "sqlite", "host": str(path)})
    monkeypatch.setenv("AIRFLOW_CONN_SQL_TEST", conn)
    return SqlDb("sqlite", "sql_test", conn, path)


def _postgres(monkeypatch: pytest.MonkeyPatch) -> SqlDb:
    conn = json.dumps(
        {
            "conn_type": "postgres",
            "host": PG["host"],
            "port": PG["port"],
            "login": PG["user"],
            "schema": PG["dbname"],
        }
    )
    monkeypatch.setenv("AIRFLOW_CONN_SQL_TEST", conn)
    return SqlDb("postgres", "sql_test", conn)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_db(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SqlDb]:
    yield _sqlite(tmp_path, monkeypatch) if request.param == "sqlite" else _postgres(monkeypatch)


@pytest.fixture
def sqlite_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SqlDb:
    return _sqlite(tmp_path, monkeypatch)


def unique_table(prefix: str = "prompts") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"
