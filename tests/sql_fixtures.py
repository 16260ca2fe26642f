"""Real SQLite, PostgreSQL and MySQL tables for operator tests, exposed as Airflow connections."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import databases


@dataclass
class SqlDb:
    kind: str  # "sqlite" | "postgres" | "mysql"
    conn_id: str
    conn_json: str
    sqlite_path: Path | None = None

    @property
    def ph(self) -> str:
        return "?" if self.kind == "sqlite" else "%s"

    def connect(self) -> Any:
        return databases.connect(self.kind, self.sqlite_path)

    def _run(self, sql: str, params: Sequence[Any], fetch: bool) -> tuple[list[tuple], list[str]]:
        return databases.run_sql(self.connect, sql.replace("?", self.ph), tuple(params), fetch=fetch)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._run(sql, params, fetch=False)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._run(sql, params, fetch=True)[0]

    def records(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts by column name (as the database spells them), so tests never count positions."""
        rows, names = self._run(sql, params, fetch=True)
        return [dict(zip(names, row, strict=True)) for row in rows]

    def create_prompts(
        self, table: str, rows: Sequence[tuple], columns: str = "id INTEGER PRIMARY KEY, prompt TEXT"
    ) -> None:
        names = [c.split()[0] for c in columns.split(",")]
        with closing(self.connect()) as db:
            cur = db.cursor()
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute(f"CREATE TABLE {table} ({columns})")
            marks = ", ".join([self.ph] * len(names))
            cur.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})", list(rows))
            db.commit()

    def drop(self, table: str) -> None:
        self.execute(f"DROP TABLE IF EXISTS {table}")


def _db(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SqlDb:
    databases.require(kind)
    path = tmp_path / "data.db" if kind == "sqlite" else None
    conn = json.dumps(databases.airflow_connection(kind, path))
    monkeypatch.setenv("AIRFLOW_CONN_SQL_TEST", conn)
    return SqlDb(kind, "sql_test", conn, path)


@pytest.fixture(params=databases.params())
def sql_db(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SqlDb]:
    yield _db(request.param, tmp_path, monkeypatch)


@pytest.fixture
def sqlite_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SqlDb:
    return _db("sqlite", tmp_path, monkeypatch)


def unique_table(prefix: str = "prompts") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"
