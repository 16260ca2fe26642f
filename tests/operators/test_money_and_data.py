"""Never pay twice, never lose a paid answer, never touch the user's data: real Airflow runs.

Every test runs DifyBatchOperator through ``dag.test()`` or ``airflow dags test`` against
FakeDify, on SQLite, PostgreSQL and MySQL/MariaDB unless the case only exists on one engine.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from airflow_dify.testing import FakeDify, Fault
from tests.airflow_run import run_batch_dag, run_dag_processes, run_mapped_dag
from tests.sql_fixtures import SqlDb, unique_table

pytestmark = pytest.mark.usefixtures("airflow_db", "metadata_template", "dify_conn")

GENERATION = {"/chat-messages", "/completion-messages", "/workflows/run"}


def asked(fake: FakeDify) -> Counter[str]:
    """How often each query reached a generation endpoint (every request, answered or not)."""
    return Counter(r.body["query"] for r in fake.requests if r.path in GENERATION and r.body)


def kwargs(table: str, **extra: Any) -> dict[str, Any]:
    base = {"table": table, "sql_conn_id": "sql_test", "dify_conn_id": "dify_test", "app_mode": "chat"}
    return {**base, "max_concurrency": 4, "chunk_size": 20, **extra}


def test_two_runs_started_together_bill_each_row_once(
    sql_db: SqlDb, fake_dify: FakeDify, tmp_path: Path
) -> None:
    table = unique_table()
    sql_db.create_prompts(table, [(i, f"question {i}") for i in range(1, 201)])

    # Each run alone would take ~6 s, and process start-up can differ by more than that. For the
    # first 30 s after the first call, calls take 2 s (4 in flight: at most 60 rows done by then),
    # so the second run starts while the first still has rows left; bounded, it ends by itself.
    first_call: list[float] = []

    def latency(_body: Any) -> float:
        now = time.monotonic()
        first_call[:] = first_call or [now]
        return 2.0 if now - first_call[0] < 30 else 0.12

    fake_dify.latency = latency
    try:
        results = run_dag_processes(
            f"overlap_{sql_db.kind}", [tmp_path / "home1", tmp_path / "home2"], **kwargs(table)
        )
        for code, out, _ in results:
            assert code == 0, out
        counts = asked(fake_dify)
        assert len(counts) == 200 and max(counts.values()) == 1, counts.most_common(3)
        done = sql_db.query(f"SELECT COUNT(*) FROM {table} WHERE status = 'succeeded'")
        assert done == [(200,)]
        summaries = [s for _, _, s in results]
        assert all(s is not None and s["succeeded"] > 0 for s in summaries), summaries  # both worked
        assert sum(s["succeeded"] for s in summaries if s) == 200
        assert sum(s["skipped_claimed"] for s in summaries if s) > 0
    finally:
        sql_db.drop(table)


def test_mapped_shards_that_overlap_still_bill_each_row_once(sql_db: SqlDb, fake_dify: FakeDify) -> None:
    table = unique_table()
    sql_db.create_prompts(table, [(i, f"question {i}") for i in range(1, 121)])
    try:
        # Misconfigured: four mapped tasks but only two shards, each shard asked for twice.
        state, summaries = run_mapped_dag(
            f"shards_{sql_db.kind}", [0, 0, 1, 1], **kwargs(table, shard_count=2)
        )
        assert state == "success"
        counts = asked(fake_dify)
        assert len(counts) == 120 and max(counts.values()) == 1
        assert sum(s["succeeded"] for s in summaries) == 120
    finally:
        sql_db.drop(table)


@pytest.mark.postgres
def test_a_nul_byte_answer_on_postgres_loses_nothing(
    fake_dify: FakeDify, tmp_path: Path, monkeypatch
) -> None:
    from tests.sql_fixtures import _db

    db = _db("postgres", tmp_path, monkeypatch)
    table = unique_table()
    db.create_prompts(table, [(i, f"question {i}") for i in range(1, 201)])
    fake_dify.faults.add(Fault("answer", on=[37], message="half\x00answer"))
    try:
        state, summary = run_batch_dag("nul_pg", **kwargs(table))
        assert state == "success" and summary["succeeded"] == 200
        rows = db.records(f"SELECT id, status, answer, error FROM {table} WHERE status IS NOT NULL")
        assert len(rows) == 200  # every other row saved in the same run
        poison = [r for r in rows if r["answer"] == "halfanswer"]
        assert len(poison) == 1 and "1 NUL character(s) removed from answer" in poison[0]["error"]
        again_state, again = run_batch_dag("nul_pg_again", **kwargs(table))
        assert again_state == "success" and again["rows_selected"] == 0
        counts = asked(fake_dify)
        assert len(counts) == 200 and max(counts.values()) == 1  # no row billed twice across runs
    finally:
        db.drop(table)


@pytest.mark.parametrize(
    ("columns", "rows"),
    [
        ("id INTEGER PRIMARY KEY, prompt TEXT, answer INTEGER", [(1, "a", 7), (2, "b", None)]),
        ("id INTEGER PRIMARY KEY, prompt TEXT, status BOOLEAN", [(1, "a", True), (2, "b", False)]),
        (
            "id INTEGER PRIMARY KEY, prompt TEXT, status VARCHAR(10), error VARCHAR(40)",
            [(1, "a", "open", "customer unreachable"), (2, "b", "closed", None), (3, "c", "open", None)],
        ),
    ],
    ids=["answer-integer", "status-boolean", "user-status-and-error"],
)
def test_columns_the_provider_does_not_own_cost_nothing_and_stay_as_they_were(
    sql_db: SqlDb, fake_dify: FakeDify, columns: str, rows: list[tuple]
) -> None:
    table = unique_table()
    sql_db.create_prompts(table, rows, columns=columns)
    before = sql_db.query(f"SELECT * FROM {table} ORDER BY id")
    try:
        state, _ = run_batch_dag(f"foreign_{sql_db.kind}_{len(rows)}_{len(columns)}", **kwargs(table))
        assert state == "failed"
        assert sum(asked(fake_dify).values()) == 0
        assert sql_db.query(f"SELECT * FROM {table} ORDER BY id") == before  # byte-identical
        names = [c.lower() for c in sql_db.records(f"SELECT * FROM {table}")[0]]
        assert names == [c.split()[0].lower() for c in columns.split(", ")]  # nothing added
    finally:
        sql_db.drop(table)


def test_a_redo_that_fails_everywhere_keeps_every_answer(sql_db: SqlDb, fake_dify: FakeDify) -> None:
    table = unique_table()
    sql_db.create_prompts(table, [(i, f"question {i}") for i in range(1, 101)])
    cols = "id, answer, total_price, currency, status, prompt_tokens, message_id, input_hash"
    try:
        state, _ = run_batch_dag(f"redo_keep_{sql_db.kind}", **kwargs(table))
        assert state == "success"
        before = sql_db.query(f"SELECT {cols} FROM {table} ORDER BY id")
        # Quota errors: the breaker stops the run; nothing is written, every answer stays.
        fake_dify.faults.add(Fault("status", status=429, code="rate_limit_error", message="quota"))
        state, summary = run_batch_dag(f"redo_quota_{sql_db.kind}", **kwargs(table, redo="all"))
        assert state == "failed" and summary["stopped"] == "breaker"
        assert sql_db.query(f"SELECT {cols} FROM {table} ORDER BY id") == before
        # Row errors on every call: each attempt is recorded, every answer and price stays.
        fake_dify.faults.clear()
        fake_dify.faults.add(Fault("status", status=400, code="invalid_param", message="rejected"))
        state, summary = run_batch_dag(
            f"redo_keep_all_{sql_db.kind}", **kwargs(table, redo="all", max_failed_ratio=1)
        )
        assert state == "success" and summary["failed"] == 100
        assert sql_db.query(f"SELECT {cols} FROM {table} ORDER BY id") == before
        errors = sql_db.query(f"SELECT error FROM {table}")
        assert all("invalid_param" in e for (e,) in errors)  # the failed attempt is recorded
    finally:
        sql_db.drop(table)


@pytest.mark.parametrize("view", [False, True], ids=["rebuilt-table", "view"])
def test_results_table_for_views_and_rebuilt_tables(sql_db: SqlDb, fake_dify: FakeDify, view: bool) -> None:
    base, results, source = unique_table("base"), unique_table("results"), unique_table("v")
    sql_db.create_prompts(base, [(i, f"question {i}") for i in range(1, 31)])
    if view:
        sql_db.execute(f"CREATE VIEW {source} AS SELECT id, prompt FROM {base} WHERE id <= 25")
    read_from = source if view else base
    before = sql_db.query(f"SELECT * FROM {base} ORDER BY id")
    try:
        state, summary = run_batch_dag(
            f"results_{sql_db.kind}_{view}", **kwargs(read_from, results_table=results)
        )
        assert state == "success" and summary["succeeded"] == (25 if view else 30)
        assert sql_db.query(f"SELECT * FROM {base} ORDER BY id") == before  # the source is read only
        stored = sql_db.records(f"SELECT id, status, answer FROM {results} ORDER BY id")
        assert [r["answer"] for r in stored] == [f"Answer: question {r['id']}" for r in stored]
        if view:
            sql_db.execute(f"DROP VIEW {source}")
        sql_db.create_prompts(base, [(i, f"question {i}") for i in range(1, 31)])  # DROP + CREATE, same rows
        if view:
            sql_db.execute(f"CREATE VIEW {source} AS SELECT id, prompt FROM {base} WHERE id <= 25")
        fake_dify.reset()
        state, summary = run_batch_dag(
            f"results_again_{sql_db.kind}_{view}", **kwargs(read_from, results_table=results)
        )
        assert state == "success" and summary["rows_selected"] == 0 and sum(asked(fake_dify).values()) == 0
    finally:
        if view:
            sql_db.execute(f"DROP VIEW IF EXISTS {source}")
        sql_db.drop(results)
        sql_db.drop(base)


@pytest.mark.postgres
def test_uuid_ids_on_postgres(fake_dify: FakeDify, tmp_path: Path, monkeypatch) -> None:
    from tests.sql_fixtures import _db

    db = _db("postgres", tmp_path, monkeypatch)
    table = unique_table()
    ids = [str(uuid.uuid4()) for _ in range(40)]
    db.create_prompts(table, [(i, f"question {i}") for i in ids], columns="id UUID PRIMARY KEY, prompt TEXT")
    try:
        state, summary = run_batch_dag("uuid_pg", **kwargs(table, shard_index=1, shard_count=2))
        state2, summary2 = run_batch_dag("uuid_pg_other", **kwargs(table, shard_index=0, shard_count=2))
        assert state == state2 == "success" and summary["succeeded"] + summary2["succeeded"] == 40
        assert summary["succeeded"] and summary2["succeeded"]  # both shards got rows
        assert db.query(f"SELECT COUNT(*) FROM {table} WHERE status = 'succeeded'") == [(40,)]
    finally:
        db.drop(table)


def test_null_template_values_fail_their_row_naming_the_column(sql_db: SqlDb, fake_dify: FakeDify) -> None:
    table = unique_table()
    sql_db.create_prompts(
        table,
        [(1, "printer", "on fire"), (2, "login", None), (3, None, "no subject")],
        columns="id INTEGER PRIMARY KEY, subject TEXT, body TEXT",
    )
    template = {"query_template": "Classify: {{ subject }}. {{ body }}", "max_failed_ratio": 1}
    try:
        state, summary = run_batch_dag(f"nulls_{sql_db.kind}", **kwargs(table, **template))
        assert state == "success" and summary["succeeded"] == 1 and summary["failed"] == 2
        errors = dict(sql_db.query(f"SELECT id, error FROM {table} WHERE status = 'failed'"))
        assert "column 'body'" in errors[2] and "NULL" in errors[2]
        assert "column 'subject'" in errors[3]
        assert list(asked(fake_dify)) == ["Classify: printer. on fire"]  # never the text "None"
        state, summary = run_batch_dag(f"nulls_as_{sql_db.kind}", **kwargs(table, **template, null_as="-"))
        assert summary["succeeded"] == 2
        assert set(asked(fake_dify)) == {
            "Classify: printer. on fire",
            "Classify: login. -",
            "Classify: -. no subject",
        }
    finally:
        sql_db.drop(table)


@pytest.mark.postgres
def test_a_mixed_case_table_name_on_postgres_says_how_it_is_stored(
    fake_dify: FakeDify, tmp_path: Path, monkeypatch
) -> None:
    from tests.sql_fixtures import _db

    db = _db("postgres", tmp_path, monkeypatch)
    name = f"Tickets_{uuid.uuid4().hex[:6]}"
    db.create_prompts(name, [(1, "question")])  # unquoted: PostgreSQL stores it in lower case
    try:
        from airflow_dify.operators.dify import DifyBatchOperator

        op = DifyBatchOperator(task_id="t", **kwargs(name), outlets=[])
        with pytest.raises(Exception, match=rf"a table '{name.lower()}' exists: PostgreSQL folds"):
            op._table({"ti": _Ti()}).prepare(["prompt"], lambda row: None)
        state, _ = run_batch_dag("mixed_case_pg", **kwargs(name))
        assert state == "failed" and sum(asked(fake_dify).values()) == 0
    finally:
        db.drop(name.lower())


class _Ti:
    dag_id, task_id, run_id, map_index, try_number = "d", "t", "r", -1, 1


def test_price_total_is_exact_on_every_engine(sql_db: SqlDb, fake_dify: FakeDify) -> None:
    table = unique_table()
    sql_db.create_prompts(table, [(i, f"question {i} " + "x" * (i % 13)) for i in range(1, 61)])
    try:
        state, summary = run_batch_dag(f"price_{sql_db.kind}", **kwargs(table))
        assert state == "success"
        billed = sum(
            (
                Decimal(r.response["metadata"]["usage"]["total_price"])
                for r in fake_dify.requests
                if r.path in GENERATION
            ),
            Decimal(0),
        )
        stored = sum(
            (Decimal(str(p)) for (p,) in sql_db.query(f"SELECT total_price FROM {table}")), Decimal(0)
        )
        assert stored == billed == Decimal(summary["total_price"])
    finally:
        sql_db.drop(table)
