"""redo='changed' through real dag.test() runs on SQLite and PostgreSQL: only edited rows are re-asked."""

from __future__ import annotations

import hashlib
import json

import pytest

from airflow_dify.testing import FakeApp, FakeDify
from tests.airflow_run import run_batch_dag
from tests.sql_fixtures import SqlDb, unique_table

pytestmark = pytest.mark.usefixtures("airflow_db")


def chat_queries(fake: FakeDify) -> list[str]:
    return sorted(r.body["query"] for r in fake.requests if r.path == "/chat-messages")


def sha(query: str, inputs: dict, app: dict | None = None) -> str:
    """Computed independently: the app's identity is its family and its name (GET /info)."""
    canonical = json.dumps(
        {"app": app or {"family": "chat", "name": "Fake Chatbot"}, "inputs": inputs, "query": query},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.usefixtures("dify_conn")
def test_edit_three_of_hundred_rows_makes_exactly_three_calls(sql_db: SqlDb, fake_dify: FakeDify) -> None:
    table = unique_table()
    sql_db.create_prompts(
        table,
        [(i, f"Question {i}", "en" if i % 2 else "de") for i in range(1, 101)],
        columns="id INTEGER PRIMARY KEY, prompt TEXT, lang TEXT",
    )
    kwargs = {
        "table": table,
        "sql_conn_id": "sql_test",
        "dify_conn_id": "dify_test",
        "app_mode": "chat",
        "input_columns": {"language": "lang"},
        "max_concurrency": 8,
        "chunk_size": 16,
    }
    cols = "id, prompt, answer, input_hash, message_id, answered_at"
    try:
        state, summary = run_batch_dag(f"changed_first_{sql_db.kind}", **kwargs)
        assert state == "success" and summary["succeeded"] == 100
        before = {r["id"]: r for r in sql_db.records(f"SELECT {cols} FROM {table}")}
        for i, row in before.items():
            assert row["input_hash"] == sha(f"Question {i}", {"language": "en" if i % 2 else "de"}), i

        # Nothing edited: a 'changed' re-run reads every row and calls nothing.
        fake_dify.reset()
        state, summary = run_batch_dag(f"changed_none_{sql_db.kind}", **kwargs, redo="changed")
        assert state == "success" and chat_queries(fake_dify) == []
        assert summary["skipped_unchanged"] == 100 and summary["processed"] == 0

        # Two prompts and one input edited.
        sql_db.execute(f"UPDATE {table} SET prompt = ? WHERE id IN (?, ?)", ("Edited question", 17, 64))
        sql_db.execute(f"UPDATE {table} SET lang = ? WHERE id = ?", ("fr", 33))
        fake_dify.reset()
        state, summary = run_batch_dag(f"changed_three_{sql_db.kind}", **kwargs, redo="changed")
        assert state == "success"
        assert chat_queries(fake_dify) == ["Edited question", "Edited question", "Question 33"]
        assert summary["succeeded"] == 3 and summary["skipped_unchanged"] == 97
        after = {r["id"]: r for r in sql_db.records(f"SELECT {cols} FROM {table}")}
    finally:
        sql_db.drop(table)
    assert after[17]["answer"] == "Answer: Edited question | language=en"
    assert after[64]["answer"] == "Answer: Edited question | language=de"
    assert after[33]["answer"] == "Answer: Question 33 | language=fr"
    assert after[17]["input_hash"] == sha("Edited question", {"language": "en"})
    assert after[33]["input_hash"] == sha("Question 33", {"language": "fr"})
    for i in (17, 33, 64):
        assert after[i]["input_hash"] != before[i]["input_hash"]
        assert after[i]["message_id"] != before[i]["message_id"]
    for i in set(before) - {17, 33, 64}:
        assert after[i] == before[i], i  # not re-asked, not re-written


@pytest.mark.usefixtures("dify_conn")
def test_changed_also_takes_pending_and_pre_hash_rows_but_not_unchanged_failures(
    sqlite_db: SqlDb, fake_dify: FakeDify
) -> None:
    table = unique_table()
    sqlite_db.create_prompts(table, [(i, f"q{i}") for i in range(1, 11)])
    kwargs = {"table": table, "sql_conn_id": "sql_test", "dify_conn_id": "dify_test", "app_mode": "chat"}
    state, _ = run_batch_dag("changed_mixed_first", **kwargs)
    assert state == "success"
    sqlite_db.execute(f"INSERT INTO {table} (id, prompt) VALUES (?, ?)", (11, "brand new"))  # pending
    sqlite_db.execute(f"UPDATE {table} SET input_hash = NULL WHERE id = ?", (2,))  # answered before hashes
    sqlite_db.execute(f"UPDATE {table} SET status = 'failed' WHERE id = ?", (3,))  # same content: stays
    sqlite_db.execute(f"UPDATE {table} SET status = 'failed', prompt = 'fixed' WHERE id = ?", (4,))
    fake_dify.reset()
    state, summary = run_batch_dag("changed_mixed_second", **kwargs, redo="changed")
    assert state == "success"
    assert chat_queries(fake_dify) == ["brand new", "fixed", "q2"]
    assert summary["rows_selected"] == 11 and summary["skipped_unchanged"] == 8
    status = dict(sqlite_db.query(f"SELECT id, status FROM {table}"))
    assert status[3] == "failed" and status[4] == "succeeded" and status[11] == "succeeded"
    hashes = dict(sqlite_db.query(f"SELECT id, input_hash FROM {table}"))
    assert hashes[2] == sha("q2", {}) and hashes[11] == sha("brand new", {})

    # The same table with redo='failed' still retries the unchanged failed row.
    fake_dify.reset()
    state, summary = run_batch_dag("changed_mixed_failed", **kwargs, redo="failed")
    assert state == "success" and chat_queries(fake_dify) == ["q3"]


def test_changed_needs_a_hash_function(sqlite_db: SqlDb) -> None:
    import sqlite3

    from airflow_dify.sql.table import SqlTable

    table = unique_table()
    sqlite_db.create_prompts(table, [(1, "a")])
    with SqlTable(lambda: sqlite3.connect(sqlite_db.sqlite_path), table, dialect="sqlite") as t:
        assert t.count_todo(redo="changed") == 1
        with pytest.raises(ValueError, match="current_hash"):
            t.iter_chunks(10, redo="changed")


def test_another_app_of_the_same_family_is_changed_and_pre_identity_hashes_are_kept(
    sqlite_db: SqlDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    apps = [FakeApp("chat", name="Support bot"), FakeApp("chat", name="Support bot v2")]
    table = unique_table()
    sqlite_db.create_prompts(table, [(i, f"q{i}") for i in range(1, 11)])
    kwargs = {"table": table, "sql_conn_id": "sql_test", "dify_conn_id": "dify_test", "redo": "changed"}
    with FakeDify(apps) as fake:

        def run(app: FakeApp, name: str) -> list[str]:
            conn = {"conn_type": "dify", "host": fake.url, "password": app.key}
            monkeypatch.setenv("AIRFLOW_CONN_DIFY_TEST", json.dumps(conn))
            fake.reset()
            state, _ = run_batch_dag(name, **kwargs)
            assert state == "success"
            return chat_queries(fake)

        assert len(run(apps[0], "identity_a")) == 10
        # Row 3 as a version before the app's name was hashed left it: family only.
        legacy = sha("q3", {}, app={"family": "chat"})
        sqlite_db.execute(f"UPDATE {table} SET input_hash = ? WHERE id = 3", (legacy,))
        assert run(apps[0], "identity_a_again") == []  # an upgrade re-bills nothing

        queries = run(apps[1], "identity_b")
        assert queries == sorted(f"q{i}" for i in range(1, 11) if i != 3)  # row 3's app is unknown: kept
        hashes = dict(sqlite_db.query(f"SELECT id, input_hash FROM {table}"))
        assert hashes[1] == sha("q1", {}, app={"family": "chat", "name": "Support bot v2"})
        assert hashes[3] == legacy
        assert run(apps[1], "identity_b_again") == []
