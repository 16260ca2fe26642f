"""results_table: the source (a table or a view) is only read; results live in a table of their own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_dify.outcome import SUCCEEDED, RowOutcome
from airflow_dify.sql.errors import SqlTableError
from airflow_dify.sql.table import SqlTable
from tests import databases
from tests.sql.test_claims import Db


@pytest.fixture(params=databases.params())
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    databases.require(request.param)
    d = Db(request.param, tmp_path)
    d.view = f"v_{uuid.uuid4().hex[:10]}"  # type: ignore[attr-defined]
    d.results = f"r_{uuid.uuid4().hex[:10]}"  # type: ignore[attr-defined]
    try:
        yield d
    finally:
        if d.kind != "sqlite":
            d.execute(f"DROP VIEW IF EXISTS {d.view}")  # type: ignore[attr-defined]
            d.execute(f"DROP TABLE IF EXISTS {d.results}")  # type: ignore[attr-defined]
            d.execute(f"DROP TABLE IF EXISTS {d.table}")


def _results_run(d: Any, source: str, **kw: Any) -> SqlTable:
    table = SqlTable(d.connect, source, dialect=d.kind, results_table=d.results, write_backoff=0.0, **kw)
    table.prepare(["prompt"], lambda row: None)
    return table


def _answer_all(table: SqlTable, **select: Any) -> list[Any]:
    done = []
    for page in table.iter_chunks(4, **select):
        done += [r["id"] for r in page]
        table.write_results(
            [RowOutcome(row_id=r["id"], status=SUCCEEDED, answer=f"a{r['id']}") for r in page]
        )
    return done


def test_a_view_is_read_only_and_results_go_to_their_own_table(db: Any) -> None:
    db.make(12)
    db.execute(f"CREATE VIEW {db.view} AS SELECT id, prompt FROM {db.table} WHERE id <= 10")
    before = db.fetch(f"SELECT * FROM {db.table} ORDER BY id")
    run = _results_run(db, db.view)
    assert run.count_todo() == 10
    assert sorted(_answer_all(run)) == list(range(1, 11))
    assert db.fetch(f"SELECT * FROM {db.table} ORDER BY id") == before  # the source is untouched
    stored = db.fetch(f"SELECT id, status, answer FROM {db.results} ORDER BY id")
    assert stored == [(i, SUCCEEDED, f"a{i}") for i in range(1, 11)]
    assert _results_run(db, db.view).count_todo() == 0


def test_a_rebuilt_source_costs_nothing_and_new_rows_are_picked_up(db: Any) -> None:
    db.make(8)
    assert len(_answer_all(_results_run(db, db.table))) == 8
    db.execute(f"DROP TABLE {db.table}")  # dbt-style rebuild: same rows, one more
    db.make(9)
    again = _results_run(db, db.table)
    assert again.count_todo() == 1 and _answer_all(again) == [9]


def test_where_on_the_source_is_never_confused_with_result_columns(db: Any) -> None:
    db.make(10)
    # "id" and "status" exist in both tables: the filter applies to the source's columns.
    run = _results_run(db, db.table)
    where = f"id > {db.ph}"
    assert run.count_todo(where=where, where_parameters=[6]) == 4
    assert _answer_all(run, where=where, where_parameters=[6]) == [7, 8, 9, 10]
    assert run.count_todo(redo="pending") == 6


def test_a_results_table_someone_else_made_is_refused(db: Any) -> None:
    db.make(3)
    db.execute(f"CREATE TABLE {db.results} (id BIGINT PRIMARY KEY, status VARCHAR(10))")
    with pytest.raises(SqlTableError, match=r"status \("):
        _results_run(db, db.table)


@pytest.mark.postgres
def test_postgres_names_in_another_case_are_pointed_out(tmp_path: Path) -> None:
    databases.require("postgres")
    d = Db("postgres", tmp_path)
    name = f"Orders_{uuid.uuid4().hex[:6]}"
    d.execute(f'CREATE TABLE {name} (id BIGINT PRIMARY KEY, "Prompt" TEXT)')  # folded: orders_...
    try:
        with pytest.raises(SqlTableError, match=rf"a table '{name.lower()}' exists: PostgreSQL folds"):
            SqlTable(d.connect, name, dialect="postgres").validate()
        with pytest.raises(SqlTableError, match=r"'prompt' exists as 'Prompt'"):
            SqlTable(d.connect, name.lower(), dialect="postgres", read_columns=["prompt"]).validate()
    finally:
        d.execute(f"DROP TABLE IF EXISTS {name}")
