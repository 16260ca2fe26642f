"""The pilot on real SQLite, PostgreSQL and MySQL tables against FakeDify, no Airflow.

Checked: exactly the sampled rows are called and stored, the others are only read (no claim, no
call), the rest's lengths come from the batch's own selection (``where`` and its parameters in
the driver's style), and the restriction to the sample's ids composes with every paramstyle.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest

from airflow_dify.batch.errors import EstimateError
from airflow_dify.batch.options import BatchOptions
from airflow_dify.batch.pilot import PilotResult, run_pilot
from airflow_dify.client import DifyClient
from airflow_dify.sql.dialects import Dialect
from airflow_dify.sql.errors import SqlTableError
from airflow_dify.sql.selection import only_ids_where
from airflow_dify.sql.table import SqlTable
from airflow_dify.testing import FakeDify, Fault
from tests import databases
from tests.sql_fixtures import SqlDb, unique_table


def _connector(sql_db: SqlDb) -> Any:
    if sql_db.kind == "sqlite":
        return lambda: sqlite3.connect(sql_db.sqlite_path, check_same_thread=False)
    return lambda: databases.connect(sql_db.kind)


@contextmanager
def _tables(sql_db: SqlDb, table: str, **kw: Any) -> Iterator[tuple[SqlTable, SqlTable]]:
    connect = _connector(sql_db)
    with (
        SqlTable(connect, table, dialect=sql_db.kind, write_backoff=0.0, **kw) as source,
        SqlTable(connect, table, dialect=sql_db.kind, claims=False, **kw) as reader,
    ):
        yield source, reader


def _pilot(sql_db: SqlDb, fake: FakeDify, table: str, sample_rows: int, **options: Any) -> PilotResult:
    opts = BatchOptions(app_mode="chat", user="pilot", max_concurrency=4, chunk_size=7, **options)
    with DifyClient(fake.url, fake.app("chat").key) as client, _tables(sql_db, table) as (source, reader):
        return run_pilot(source, reader, client, opts, sample_rows=sample_rows, seed=5, resamples=200)


def _prompts(n: int) -> list[tuple[int, str]]:
    return [(i, f"pilot question {i}: " + "word " * (i % 40)) for i in range(1, n + 1)]


def test_only_the_sampled_rows_are_called_and_kept(sql_db: SqlDb, fake_dify: FakeDify) -> None:
    table = unique_table("pilot")
    sql_db.create_prompts(table, _prompts(60))
    try:
        where = f"id > {sql_db.ph}"  # the batch's own filter: the pilot samples within it
        pilot = _pilot(sql_db, fake_dify, table, 12, where=where, where_parameters=[10])
        rows = sql_db.records(f"SELECT id, status, claimed_by, total_price FROM {table} ORDER BY id")
    finally:
        sql_db.drop(table)
    est = pilot.estimate
    assert est is not None and est.sampled == 12 and est.pending == 50 - 12
    answered = {r["id"] for r in rows if r["status"] == "succeeded"}
    asked = [r.body["query"] for r in fake_dify.requests if r.path == "/chat-messages"]
    assert len(asked) == fake_dify.calls("/chat-messages") == 12  # no call outside the sample
    assert len(answered) == 12 and min(answered) > 10
    assert sorted(asked) == sorted(q for i, q in _prompts(60) if i in answered)
    assert all(r["claimed_by"] is None for r in rows)  # sample claims released by their writes
    assert (
        est.sample_price
        == fake_dify.billed_total()
        == sum(Decimal(r["total_price"]) for r in rows if r["total_price"] is not None)
    )
    assert pilot.currency == "USD" and len(pilot.answers) == 10
    first = pilot.answers[0]
    assert first["id"] == min(answered) and first["answer"].startswith("Answer: pilot question")
    assert {a["id"] for a in pilot.answers} <= answered


def test_nothing_pending_calls_nothing(sqlite_db: SqlDb, fake_dify: FakeDify) -> None:
    table = unique_table("pilot")
    sqlite_db.create_prompts(table, _prompts(5))
    _pilot(sqlite_db, fake_dify, table, 10)  # more than there are: all 5 are the sample
    assert fake_dify.calls() == 5
    pilot = _pilot(sqlite_db, fake_dify, table, 10)
    assert fake_dify.calls() == 5
    assert pilot.estimate is not None and pilot.estimate.sampled == 0 and pilot.estimate.pending == 0
    assert pilot.to_dict()["projected_price"] == "0.0000000"


def test_rows_that_cannot_be_sent_are_not_sampled_and_cost_nothing(
    sqlite_db: SqlDb, fake_dify: FakeDify
) -> None:
    table = unique_table("pilot")
    rows = [(i, None if i % 3 == 0 else f"q {i}") for i in range(1, 31)]  # 10 NULL prompts
    sqlite_db.create_prompts(table, rows)
    pilot = _pilot(sqlite_db, fake_dify, table, 5)
    assert pilot.unsendable == 10 and fake_dify.calls() == 5
    data = pilot.to_dict()
    assert data["sampled"] == 5 and data["pending"] == 20 - 5 + 10  # what the batch will select


def test_every_sampled_row_failing_is_a_clear_error(sqlite_db: SqlDb, fake_dify: FakeDify) -> None:
    table = unique_table("pilot")
    sqlite_db.create_prompts(table, _prompts(20))
    fake_dify.faults.add(Fault("status", status=400, code="invalid_param", message="bad input", after=0))
    with pytest.raises(EstimateError, match="all 4 sampled row"):
        _pilot(sqlite_db, fake_dify, table, 4, breaker_threshold=100)
    assert fake_dify.calls() == 4


@pytest.mark.parametrize(
    ("style", "where", "params", "expected_where", "expected_params"),
    [
        ("qmark", None, None, '"id" IN (?, ?)', [7, 9]),
        ("qmark", "lang = ?", ["en"], '(lang = ?) AND "id" IN (?, ?)', ["en", 7, 9]),
        ("format", "lang = %s", ("en",), '(lang = %s) AND "id" IN (%s, %s)', ["en", 7, 9]),
        ("numeric", "lang = :1", ["en"], '(lang = :1) AND "id" IN (:2, :3)', ["en", 7, 9]),
        (
            "pyformat",
            "lang = %(lang)s",
            {"lang": "en"},
            '(lang = %(lang)s) AND "id" IN (%(_dify_id0)s, %(_dify_id1)s)',
            {"lang": "en", "_dify_id0": 7, "_dify_id1": 9},
        ),
        ("named", None, None, '"id" IN (:_dify_id0, :_dify_id1)', {"_dify_id0": 7, "_dify_id1": 9}),
    ],
)
def test_only_ids_where_binds_in_the_drivers_style(
    style: str, where: str | None, params: Any, expected_where: str, expected_params: Any
) -> None:
    got = only_ids_where(Dialect("generic", style), '"id"', [7, 9], where, params)
    assert got == (expected_where, expected_params)


def test_only_ids_where_refuses_no_ids_and_taken_names() -> None:
    with pytest.raises(SqlTableError, match="at least one id"):
        only_ids_where(Dialect("sqlite", "qmark"), '"id"', [], None, None)
    with pytest.raises(SqlTableError, match="reserved"):
        only_ids_where(Dialect("generic", "named"), '"id"', [1], "x = :_dify_id0", {"_dify_id0": 1})
