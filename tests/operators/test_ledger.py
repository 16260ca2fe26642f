"""The usage ledger against FakeDify's invoice: real dag.test() runs on SQLite, PostgreSQL, MySQL.

FakeDify bills every generation it does the work for (its ``billing`` log, like a provider's
invoice); the ledger must hold one entry per such call with exactly its price, across a first run
with 504s, a ``redo="all"`` run that replaces every answer, and re-sent timeouts. The SIGKILL +
retry case runs on a real scheduler in tests/system/test_crash_retry.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from airflow_dify.testing import FakeApp, FakeDify, Fault
from tests.airflow_run import run_batch_dag
from tests.sql_fixtures import SqlDb, unique_table

pytestmark = pytest.mark.usefixtures("airflow_db")

ROWS = 40


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDify]:
    apps = [
        FakeApp("chat", name="Ledger chat"),
        FakeApp("workflow", name="Ledger flow", inputs=["ticket"]),
    ]
    with FakeDify(apps) as fake:
        yield fake


def use_app(fake: FakeDify, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    conn = {"conn_type": "dify", "host": fake.url, "password": fake.app(mode).key}
    monkeypatch.setenv("AIRFLOW_CONN_DIFY_TEST", json.dumps(conn))


def price(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def ledger(sql_db: SqlDb, name: str) -> list[dict[str, Any]]:
    rows = sql_db.records(f"SELECT * FROM {name}")
    return [{k.lower(): v for k, v in r.items()} for r in rows]


def late_504_bills(fake: FakeDify) -> list:
    """Calls the fake did the work for and billed, then answered 504: the client never saw a price."""
    spoiled = {r.seq for r in fake.requests if r.fault == "billed_504"}
    return [b for b in fake.billing if b.seq in spoiled]


def test_ledger_equals_the_invoice_over_504s_a_redo_all_and_resent_timeouts(
    sql_db: SqlDb, fake: FakeDify, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_app(fake, "chat", monkeypatch)
    table, book = unique_table("ledger_src"), unique_table("ledger")
    sql_db.create_prompts(table, [(i, f"Question {i}: how do refunds work?") for i in range(1, ROWS + 1)])
    base = {
        "table": table,
        "sql_conn_id": "sql_test",
        "dify_conn_id": "dify_test",
        "ledger_table": book,
        "max_concurrency": 4,
        "chunk_size": 10,
        "max_failed_ratio": 1.0,
    }
    # Run 1: two gateway 504s (Dify never ran them: not billed, but the client cannot know).
    fake.faults.add(Fault("status", path="/chat-messages", status=504, on=[3, 11]))
    try:
        state, first = run_batch_dag(f"ledger_first_{sql_db.kind}", **base)
        assert state == "success" and first["succeeded"] == ROWS - 2 and first["failed"] == 2, first
        after_first = ledger(sql_db, book)
        # Run 2: every answer replaced; 504s re-sent this time: one early (not billed) and one
        # late (billed by Dify, then 504: the price of that call is unknown to the client).
        fake.faults.add(Fault("status", path="/chat-messages", status=504, on=[ROWS + 5]))
        fake.faults.add(Fault("billed_504", path="/chat-messages", on=[ROWS + 9]))
        state, second = run_batch_dag(
            f"ledger_redo_{sql_db.kind}", **base, redo="all", resend_maybe_billed=True
        )
        assert state == "success" and second["succeeded"] == ROWS, second
        entries = ledger(sql_db, book)
        results = sql_db.records(f"SELECT id, total_price, message_id FROM {table}")
    finally:
        sql_db.drop(table)
        sql_db.drop(book)

    kinds = Counter(e["outcome"] for e in after_first)
    assert kinds == {"succeeded": ROWS - 2, "maybe_billed": 2}, kinds
    assert all(price(e["total_price"]) is None for e in after_first if e["outcome"] == "maybe_billed")

    kinds = Counter((e["outcome"], e["error_code"]) for e in entries)
    assert kinds[("succeeded", None)] == 2 * ROWS - 2
    assert kinds[("maybe_billed", "retried")] == 2  # the two re-sent 504s of run 2
    # ... and run 1's two 504s, not re-sent: their rows failed "maybe billed".
    assert sum(n for (o, c), n in kinds.items() if o == "maybe_billed" and c != "retried") == 2
    assert sum(kinds.values()) == 2 * ROWS + 2

    # Every call the client saw billed has exactly one entry, with Dify's exact price.
    billed = {b.message_id: b for b in fake.billing}
    seen = Counter(e["message_id"] for e in entries if e["message_id"] is not None)
    assert all(n == 1 for n in seen.values())
    late = late_504_bills(fake)
    assert len(late) == 1 and set(seen) == set(billed) - {b.message_id for b in late}
    for e in entries:
        if e["message_id"] is not None:
            assert price(e["total_price"]) == billed[e["message_id"]].total_price, e
    total = sum((price(e["total_price"]) or Decimal(0) for e in entries), Decimal(0))
    assert total == fake.billed_total() - late[0].total_price
    # The answers were replaced: the results hold only run 2's prices; the ledger holds both runs.
    current = sum((price(r["total_price"]) or Decimal(0) for r in results), Decimal(0))
    assert current < total and {r["message_id"] for r in results} <= set(seen)

    # Who and what, on every entry.
    runs = {e["run_id"] for e in entries}
    assert len(runs) == 2 and {e["dag_id"] for e in entries} == {
        f"ledger_first_{sql_db.kind}",
        f"ledger_redo_{sql_db.kind}",
    }
    assert {e["task_id"] for e in entries} == {"batch"} and {int(e["try_number"]) for e in entries} == {1}
    assert {e["source_table"] for e in entries} == {table} and {e["app_mode"] for e in entries} == {"chat"}
    assert {e["row_id"] for e in entries} == {str(i) for i in range(1, ROWS + 1)}


def test_workflow_runs_are_ledgered_by_run_id_at_their_node_price(
    sql_db: SqlDb, fake: FakeDify, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_app(fake, "workflow", monkeypatch)
    table, book = unique_table("ledger_wf"), unique_table("ledger")
    sql_db.create_prompts(table, [(i, f"Ticket {i}: printer on fire") for i in range(1, 21)])
    try:
        state, summary = run_batch_dag(
            f"ledger_wf_{sql_db.kind}",
            table=table,
            sql_conn_id="sql_test",
            dify_conn_id="dify_test",
            input_columns={"ticket": "prompt"},
            ledger_table=book,
        )
        entries = ledger(sql_db, book)
    finally:
        sql_db.drop(table)
        sql_db.drop(book)
    assert state == "success" and summary["succeeded"] == 20, summary
    billed = {b.workflow_run_id: b for b in fake.billing}
    assert len(billed) == 20 and {e["workflow_run_id"] for e in entries} == set(billed)
    assert all(e["message_id"] is None and e["app_mode"] == "workflow" for e in entries)
    assert all(e["workflow_id"] == fake.app("workflow").workflow_id for e in entries)
    for e in entries:
        assert price(e["total_price"]) == billed[e["workflow_run_id"]].total_price
    assert sum((price(e["total_price"]) for e in entries), Decimal(0)) == fake.billed_total()
