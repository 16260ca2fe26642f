"""Trace ids join a row, its ledger entries and the call in Dify's log (real dag.test() runs)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from airflow_dify.testing import FakeApp, FakeDify, Fault
from tests.airflow_run import run_batch_dag
from tests.sql_fixtures import SqlDb, unique_table

pytestmark = pytest.mark.usefixtures("airflow_db")
TRACE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDify]:
    with FakeDify([FakeApp("chat", name="Traced")]) as fake:
        conn = {"conn_type": "dify", "host": fake.url, "password": fake.app("chat").key}
        monkeypatch.setenv("AIRFLOW_CONN_DIFY_TEST", json.dumps(conn))
        yield fake


def test_every_rows_trace_id_finds_its_call_in_dify_and_its_ledger_entry(
    sql_db: SqlDb, fake: FakeDify
) -> None:
    table, book = unique_table("traced"), unique_table("ledger")
    sql_db.create_prompts(table, [(i, f"Question {i}") for i in range(1, 31)])
    # A 503 then a retry: both attempts carry the row's one trace id.
    fake.faults.add(Fault("status", path="/chat-messages", status=503, on=[4]))
    try:
        state, _ = run_batch_dag(
            f"traced_{sql_db.kind}",
            table=table,
            sql_conn_id="sql_test",
            dify_conn_id="dify_test",
            ledger_table=book,
            max_concurrency=4,
        )
        rows = {r["id"]: r for r in sql_db.records(f"SELECT id, trace_id, message_id, prompt FROM {table}")}
        entries = sql_db.records(f"SELECT row_id, trace_id, message_id FROM {book}")
    finally:
        sql_db.drop(table)
        sql_db.drop(book)
    assert state == "success"
    calls = [r for r in fake.requests if r.path == "/chat-messages"]
    by_trace: dict[str, list] = {}
    for call in calls:
        by_trace.setdefault(call.trace_id, []).append(call)
    traces = {r["trace_id"] for r in rows.values()}
    assert len(traces) == 30 and all(t and TRACE.match(t) for t in traces)
    assert all(t.startswith(f"traced_{sql_db.kind}-batch-") and "-t1-" in t for t in traces)
    for row in rows.values():
        found = by_trace[row["trace_id"]]
        assert all(c.body["query"] == row["prompt"] for c in found)  # the row's own call
        assert found[-1].response["message_id"] == row["message_id"]
    assert sorted(len(v) for v in by_trace.values())[-1] == 2  # the retried row: two attempts, one id
    assert {(e["row_id"], e["trace_id"]) for e in entries} == {
        (str(i), r["trace_id"]) for i, r in rows.items()
    }
