"""Bad input: a clear message naming the row or setting, and nothing lost."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from airflow_dify.operators.dify import DifyBatchOperator
from airflow_dify.testing import FakeDify
from tests.airflow_run import run_batch_dag
from tests.sql_fixtures import SqlDb, unique_table

pytestmark = pytest.mark.usefixtures("airflow_db")


def test_bad_rows_fail_alone_with_specific_errors(sqlite_db: SqlDb, fake_dify: FakeDify, dify_conn) -> None:
    table = unique_table()
    sqlite_db.create_prompts(
        table,
        [(1, None), (2, "   "), (3, "x" * 501), (4, "fine 🙂 中文 ✓"), (5, "also fine")],
    )
    with closing(sqlite3.connect(sqlite_db.sqlite_path)) as db:  # raw bytes that are not UTF-8
        db.execute(f"INSERT INTO {table} VALUES (6, CAST(X'666FFF6F' AS TEXT))")
        db.commit()
    state, summary = run_batch_dag(
        "op_bad_rows",
        table=table,
        sql_conn_id="sql_test",
        dify_conn_id="dify_test",
        app_mode="chat",
        max_prompt_chars=500,
        max_failed_ratio=1.0,
    )
    assert state == "success"
    rows = {r["id"]: r for r in sqlite_db.records(f"SELECT id, status, error, answer FROM {table}")}
    assert len(rows) == 6  # nothing lost
    status = {i: r["status"] for i, r in rows.items()}
    error = {i: r["error"] or "" for i, r in rows.items()}
    assert status[1] == "failed" and "row 1" in error[1] and "NULL" in error[1]
    assert status[2] == "failed" and "row 2" in error[2] and "empty" in error[2]
    assert status[3] == "failed" and "501 characters" in error[3] and "max_prompt_chars=500" in error[3]
    assert status[6] == "failed" and "UTF-8" in error[6]
    assert status[4] == status[5] == "succeeded"
    assert rows[4]["answer"] == "Answer: fine 🙂 中文 ✓"  # emoji and CJK round-trip exactly
    sent = [r.body["query"] for r in fake_dify.requests if r.path == "/chat-messages"]
    assert sorted(sent) == ["also fine", "fine 🙂 中文 ✓"]  # no call for the bad rows
    assert summary["failed"] == 4 and summary["error_codes"]["empty_prompt"] == 2


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"table": "t; DROP TABLE x"}, "table"),
        ({"table": 'a"b'}, "table"),
        ({"id_column": "id) OR 1=1 --"}, "id_column"),
        ({"query_column": "prompt; --"}, "prompt; --"),
        ({"id_column": "nope"}, "nope"),
    ],
)
def test_bad_names_are_rejected_at_start(
    kwargs: dict, needle: str, sqlite_db: SqlDb, fake_dify, dify_conn, capfd: pytest.CaptureFixture[str]
) -> None:
    table = unique_table()
    sqlite_db.create_prompts(table, [(1, "a"), (2, "b")])
    args = {
        "table": table,
        "sql_conn_id": "sql_test",
        "dify_conn_id": "dify_test",
        "app_mode": "chat",
        **kwargs,
    }
    state, _ = run_batch_dag("op_bad_names", **args)
    assert state == "failed"
    assert fake_dify.calls() == 0
    assert sqlite_db.query(f"SELECT count(*) FROM {table}") == [(2,)]  # table untouched
    out, err = capfd.readouterr()
    errors = [line for line in (out + err).splitlines() if "SqlTableError" in line or "Error" in line]
    assert any(needle in line for line in errors), errors[-5:]


def test_duplicate_and_null_ids_are_rejected(sqlite_db: SqlDb, fake_dify: FakeDify, dify_conn) -> None:
    table = unique_table()
    sqlite_db.create_prompts(table, [(1, "a"), (1, "b"), (None, "c")], columns="id INTEGER, prompt TEXT")
    state, _ = run_batch_dag(
        "op_dup_ids", table=table, sql_conn_id="sql_test", dify_conn_id="dify_test", app_mode="chat"
    )
    assert state == "failed" and fake_dify.calls() == 0
    assert sqlite_db.query(f"SELECT count(*) FROM {table}") == [(3,)]


def test_operator_arguments_validated_at_parse_time() -> None:
    common = {"task_id": "t", "table": "t", "sql_conn_id": "s"}
    with pytest.raises(ValueError, match="app_mode must be one of"):
        DifyBatchOperator(**common, app_mode="assistant")
    with pytest.raises(ValueError, match="redo must be one of"):
        DifyBatchOperator(**common, redo="sometimes")
    with pytest.raises(ValueError, match="max_failed_ratio"):
        DifyBatchOperator(**common, max_failed_ratio=2)
    with pytest.raises(ValueError, match="unknown key"):
        DifyBatchOperator(**common, result_columns={"anwser": "a"})
