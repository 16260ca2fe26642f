"""DifyBatchOperator through real ``dag.test()`` runs, on SQLite and PostgreSQL, against FakeDify."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from airflow_dify.testing import FakeDify, Fault
from airflow_dify.testing.answers import answer_text
from tests.airflow_run import run_batch_dag
from tests.sql_fixtures import SqlDb, unique_table

pytestmark = pytest.mark.usefixtures("airflow_db")

GENERATION_PATHS = {"/chat-messages", "/completion-messages", "/workflows/run"}


def generation_records(fake: FakeDify) -> list:
    return [r for r in fake.requests if r.path in GENERATION_PATHS]


def prompts(n: int, start: int = 1) -> list[tuple]:
    return [(i, f"Question #{i}: is 語 ✓ 🙂 ok?") for i in range(start, start + n)]


RESULT_COLS = (
    "id, answer, status, error, prompt_tokens, completion_tokens, total_tokens, total_price, currency, "
    "latency_ms, message_id, conversation_id, answered_at, attempts"
)


@pytest.mark.parametrize("mode", ["chat", "completion", "workflow"])
def test_every_written_column_matches_the_request_log(
    mode: str, sql_db: SqlDb, fake_dify: FakeDify, dify_conn
) -> None:
    dify_conn(mode)
    table = unique_table()
    sql_db.create_prompts(table, prompts(40))
    kwargs: dict = {
        "table": table,
        "sql_conn_id": "sql_test",
        "dify_conn_id": "dify_test",
        "app_mode": mode,
        "max_concurrency": 8,
        "chunk_size": 7,
    }
    if mode == "workflow":
        kwargs["input_columns"] = {"question": "prompt"}
    try:
        state, summary = run_batch_dag(f"op_{mode}_{sql_db.kind}", **kwargs)
        assert state == "success"
        rows = {r["id"]: r for r in sql_db.records(f"SELECT {RESULT_COLS} FROM {table}")}
    finally:
        sql_db.drop(table)
    records = generation_records(fake_dify)
    assert len(records) == 40 and all(r.status == 200 for r in records)
    bills = {b.workflow_run_id: b for b in fake_dify.billing}
    by_prompt = {}
    for rec in records:
        key = rec.body["inputs"]["question"] if mode == "workflow" else rec.body["query"]
        by_prompt[key] = rec
        assert rec.body["user"] == f"airflow-op_{mode}_{sql_db.kind}"
        # Workflows stream by default: only their node events carry the price.
        assert rec.body["response_mode"] == ("streaming" if mode == "workflow" else "blocking")
        if mode == "chat":
            assert rec.body["auto_generate_name"] is False
    expected_tokens = 0
    for row_id, prompt in prompts(40):
        row = rows[row_id]
        resp = by_prompt[prompt].response
        assert row["status"] == "succeeded" and row["error"] is None and row["attempts"] == 1
        if mode == "workflow":
            bill = bills[row["message_id"]]  # the run id; what FakeDify charged for that run
            assert row["answer"] == answer_text(None, {"question": prompt})  # the one output, as text
            assert row["total_tokens"] == bill.total_tokens and row["currency"] == bill.currency
            assert Decimal(str(row["total_price"])) == bill.total_price
            expected_tokens += bill.total_tokens
        else:
            usage = resp["metadata"]["usage"]
            assert row["answer"] == resp["answer"]
            assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
                usage["prompt_tokens"],
                usage["completion_tokens"],
                usage["total_tokens"],
            )
            assert Decimal(str(row["total_price"])) == Decimal(usage["total_price"])
            assert row["currency"] == usage["currency"]
            assert row["message_id"] == resp["message_id"]
            assert row["conversation_id"] == (resp.get("conversation_id") or None)
            expected_tokens += usage["total_tokens"]
        assert row["latency_ms"] is not None and row["latency_ms"] >= 0 and row["answered_at"] is not None
    assert summary["succeeded"] == 40 and summary["failed"] == 0 and summary["rows_selected"] == 40
    assert summary["total_tokens"] == expected_tokens


def test_resume_after_interruption_answers_each_row_once(
    sqlite_db: SqlDb, fake_dify: FakeDify, dify_conn
) -> None:
    table = unique_table()
    sqlite_db.create_prompts(table, prompts(60))
    # Every call after the 25th fails terminally: the first run ends failed with partial results saved.
    fake_dify.faults.add(Fault("status", status=400, code="invalid_param", after=25))
    kwargs = {
        "table": table,
        "sql_conn_id": "sql_test",
        "dify_conn_id": "dify_test",
        "app_mode": "chat",
        "max_concurrency": 4,
        "chunk_size": 10,
    }
    state, summary = run_batch_dag("op_resume", **kwargs)
    assert state == "failed"
    first = Counter(r.body["query"] for r in generation_records(fake_dify))
    statuses = Counter(s for (s,) in sqlite_db.query(f"SELECT status FROM {table}"))
    assert statuses["succeeded"] == 25 and statuses["failed"] == 35
    assert summary["failed"] == 35 and summary["error_codes"] == {"invalid_param": 35}
    fake_dify.faults.clear()
    state, summary = run_batch_dag("op_resume", **kwargs)
    assert state == "success" and summary["rows_selected"] == 35 and summary["succeeded"] == 35
    total = Counter(r.body["query"] for r in generation_records(fake_dify))
    assert {s for (s,) in sqlite_db.query(f"SELECT status FROM {table}")} == {"succeeded"}
    failed_first = {
        r.body["query"] for r in generation_records(fake_dify)[: sum(first.values())] if r.status != 200
    }
    assert len(failed_first) == 35
    # Rows answered in the first run were never asked again; only rows that had failed were re-asked.
    for _, prompt in prompts(60):
        assert total[prompt] == (2 if prompt in failed_first else 1), prompt


def test_redo_modes_where_template_inputs_and_custom_columns(
    sqlite_db: SqlDb, fake_dify: FakeDify, dify_conn
) -> None:
    table = unique_table()
    sqlite_db.create_prompts(
        table,
        [(i, f"subject {i}", "de" if i % 2 else "en", f"body {i}") for i in range(1, 11)],
        columns="id INTEGER PRIMARY KEY, subject TEXT, lang TEXT, body TEXT",
    )
    base = {
        "table": table,
        "sql_conn_id": "sql_test",
        "dify_conn_id": "dify_test",
        "app_mode": "chat",
        "query_template": "{{ subject }} / {{ body }}",
        "input_columns": {"language": "lang"},
        "result_columns": {"answer": "category", "status": "dify_status"},
        "where": "lang = ?",
        "where_parameters": ["en"],
    }
    state, summary = run_batch_dag("op_redo", **base)
    assert state == "success" and summary["succeeded"] == 5
    recs = generation_records(fake_dify)
    assert sorted(r.body["query"] for r in recs) == sorted(f"subject {i} / body {i}" for i in range(2, 11, 2))
    assert all(r.body["inputs"] == {"language": "en"} for r in recs)
    rows = sqlite_db.records(f"SELECT id, category, dify_status FROM {table} ORDER BY id")
    assert [r["dify_status"] for r in rows] == [None, "succeeded"] * 5
    asked = [r.body["query"] for r in recs]
    assert rows[1]["category"] == recs[asked.index("subject 2 / body 2")].response["answer"]

    fake_dify.reset()
    sqlite_db.execute(f"UPDATE {table} SET dify_status = 'failed' WHERE id = 4")
    for redo, expected in (("pending", 0), ("failed", 1), ("all", 5)):
        fake_dify.reset()
        state, summary = run_batch_dag(f"op_redo_{redo}", **base, redo=redo)
        assert state == "success", redo
        assert len(generation_records(fake_dify)) == expected == summary["rows_selected"], redo

    # str.format template, positional where on the other language
    fake_dify.reset()
    state, summary = run_batch_dag(
        "op_redo_format", **{**base, "query_template": "{subject}: {body}", "where_parameters": ["de"]}
    )
    assert state == "success" and summary["succeeded"] == 5
    assert {r.body["query"] for r in generation_records(fake_dify)} == {
        f"subject {i}: body {i}" for i in range(1, 11, 2)
    }


def test_thousand_rows_totals_equal_fake_usage_to_the_last_decimal(
    sqlite_db: SqlDb, fake_dify: FakeDify, dify_conn
) -> None:
    table = unique_table()
    sqlite_db.create_prompts(table, [(i, f"prompt number {i} " + "x" * (i % 37)) for i in range(1, 1001)])
    state, summary = run_batch_dag(
        "op_thousand",
        table=table,
        sql_conn_id="sql_test",
        dify_conn_id="dify_test",
        app_mode="chat",
        max_concurrency=16,
        chunk_size=100,
    )
    assert state == "success" and summary["succeeded"] == 1000
    usages = [r.response["metadata"]["usage"] for r in generation_records(fake_dify)]
    assert len(usages) == 1000
    fake_price = sum((Decimal(u["total_price"]) for u in usages), Decimal(0))
    db_prices = sum((Decimal(p) for (p,) in sqlite_db.query(f"SELECT total_price FROM {table}")), Decimal(0))
    assert db_prices == fake_price == Decimal(summary["total_price"])
    assert summary["total_tokens"] == sum(u["total_tokens"] for u in usages)
    assert sqlite_db.query(f"SELECT sum(total_tokens) FROM {table}")[0][0] == summary["total_tokens"]
