"""No re-pay on chat timeouts, and RAG citations: real dag.test() runs against FakeDify.

FakeDify's ``billed_504`` fault does the work, bills it and stores the message, then answers 504
like a gateway that gave up: the client never sees the answer. With ``user_per_row`` the row's
conversation is looked up instead of the call being sent again.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from airflow_dify.batch.recovery import row_user
from airflow_dify.client import DifyClient
from airflow_dify.testing import FakeApp, FakeDify, Fault
from tests.airflow_run import run_batch_dag
from tests.sql_fixtures import SqlDb, unique_table

pytestmark = pytest.mark.usefixtures("airflow_db")


def cite(query: str | None, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    n = int((query or "0").split()[1].rstrip(":"))
    return [
        {
            "position": 1,
            "dataset_name": "Handbook",
            "document_name": f"policy-{n % 5}.pdf",
            "segment_id": f"seg-{n}",
            "score": round(0.5 + n / 1000, 3),
            "content": f"Refunds take {n} days.",
        },
    ]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDify]:
    with FakeDify([FakeApp("chat", name="Support RAG", citations=cite)]) as fake:
        conn = {"conn_type": "dify", "host": fake.url, "password": fake.app("chat").key}
        monkeypatch.setenv("AIRFLOW_CONN_DIFY_TEST", json.dumps(conn))
        yield fake


def test_504_after_answer_on_30_of_200_rows_finds_the_answers_and_asks_nobody_twice(
    sql_db: SqlDb, fake: FakeDify
) -> None:
    table, book = unique_table("recover"), unique_table("ledger")
    sql_db.create_prompts(table, [(i, f"Question {i}: how long do refunds take?") for i in range(1, 201)])
    spoiled = set(random.Random(18).sample(range(1, 201), 30))
    fake.faults.add(Fault("billed_504", path="/chat-messages", on=spoiled))
    try:
        state, summary = run_batch_dag(
            f"recover_{sql_db.kind}",
            table=table,
            sql_conn_id="sql_test",
            dify_conn_id="dify_test",
            ledger_table=book,
            user_per_row=True,
            max_concurrency=8,
            citations_column="citations",
        )
        rows = sql_db.records(
            f"SELECT id, prompt, status, answer, message_id, total_price, citations FROM {table}"
        )
        ledger = sql_db.records(f"SELECT message_id, total_price, outcome FROM {book}")
    finally:
        sql_db.drop(table)
        sql_db.drop(book)
    assert state == "success" and summary["succeeded"] == 200, summary
    asks = [r for r in fake.requests if r.path == "/chat-messages"]
    assert len([r for r in asks if r.fault == "billed_504"]) == 30
    asked = Counter(r.body["query"] for r in asks)
    assert len(asked) == 200 and max(asked.values()) == 1  # 0 rows asked twice
    lookups = [r for r in fake.requests if r.path in ("/conversations", "/messages")]
    assert len(lookups) == 60  # one conversation and one message look-up per spoiled call
    answered = {r.body["query"]: r.response for r in asks}  # what FakeDify answered (and billed)
    bills = {b.message_id: b for b in fake.billing}
    for row in rows:
        truth = answered[row["prompt"]]
        assert row["status"] == "succeeded" and row["answer"] == truth["answer"], row["id"]
        assert row["message_id"] == truth["message_id"]
        assert Decimal(str(row["total_price"])) == bills[row["message_id"]].total_price
        cited = row["citations"] if isinstance(row["citations"], list) else json.loads(row["citations"])
        assert cited == cite(row["prompt"], {})  # the RAG citations, recovered rows included
    # The ledger is exact now: every billed call, spoiled or not, has its entry at Dify's price.
    assert {e["message_id"] for e in ledger} == set(bills) and len(ledger) == 200
    assert sum(Decimal(str(e["total_price"])) for e in ledger) == fake.billed_total()


def test_a_timeout_dify_has_no_record_of_fails_maybe_billed_and_is_not_resent(
    sqlite_db: SqlDb, fake: FakeDify
) -> None:
    table = unique_table("recover_none")
    sqlite_db.create_prompts(table, [(i, f"Question {i}: hi") for i in range(1, 11)])
    # A gateway 504 before Dify ran it: no conversation, nothing billed.
    fake.faults.add(Fault("status", path="/chat-messages", status=504, on=[3]))
    try:
        state, summary = run_batch_dag(
            "recover_none",
            table=table,
            sql_conn_id="sql_test",
            dify_conn_id="dify_test",
            user_per_row=True,
            max_failed_ratio=0.5,
        )
        failed = sqlite_db.records(f"SELECT id, error FROM {table} WHERE status = 'failed'")
    finally:
        sqlite_db.drop(table)
    assert state == "success" and summary["succeeded"] == 9 and len(failed) == 1, summary
    assert "may have run and been billed" in failed[0]["error"]
    assert len([r for r in fake.requests if r.path == "/chat-messages"]) == 10  # not re-sent
    assert [r.path for r in fake.requests if r.path == "/conversations"] == ["/conversations"]
    users = {r.body["user"] for r in fake.requests if r.path == "/chat-messages"}
    assert len(users) == 10 and all(u.startswith("airflow-recover_none-") for u in users)


def test_a_crashed_trys_paid_answers_are_found_and_stored_not_asked_again(
    sql_db: SqlDb, fake: FakeDify
) -> None:
    """SIGKILL leaves rows claimed, some of them asked and billed: the next try looks them up.

    Rows 1-40 are answered once. Then a try that "died" (its claims are written here the way a
    killed try leaves them) re-asked rows 1-10 with redo="all" and had rows 1-20 claimed. The next
    run must store rows 1-10 from Dify's record (no second call), tell rows 11-20 (claimed, never
    asked: their newest message is the first run's, already on the ledger) apart and ask them, and
    leave a ledger whose sum is Dify's invoice exactly.
    """
    table, book = unique_table("crash"), unique_table("ledger")
    prompts = {i: f"Question {i}: when do refunds arrive?" for i in range(1, 41)}
    sql_db.create_prompts(table, list(prompts.items()))
    common = dict(
        table=table, sql_conn_id="sql_test", dify_conn_id="dify_test", ledger_table=book,
        user="crash-test", user_per_row=True, max_concurrency=4,
    )  # fmt: skip
    try:
        state, first = run_batch_dag(f"crash_first_{sql_db.kind}", **common)
        assert state == "success" and first["succeeded"] == 40, first
        firsts = {r["id"]: r["message_id"] for r in sql_db.records(f"SELECT id, message_id FROM {table}")}
        with DifyClient(fake.url, fake.app("chat").key) as client:
            dead = {
                i: client.call("chat", query=prompts[i], inputs={}, user=row_user("crash-test", i))
                for i in range(1, 11)
            }
        sql_db.execute(f"UPDATE {table} SET claimed_by = 'deadbeef:1:0123', claimed_until = 1 WHERE id <= 20")
        state, second = run_batch_dag(f"crash_next_{sql_db.kind}", redo="all", **common)
        rows = {r["id"]: r for r in sql_db.records(f"SELECT id, answer, message_id, trace_id FROM {table}")}
        ledger = sql_db.records(f"SELECT row_id, message_id, total_price, outcome, error_code FROM {book}")
    finally:
        sql_db.drop(table)
        sql_db.drop(book)
    assert state == "success" and second["succeeded"] == 40, second
    again = [r for r in fake.requests if r.path == "/chat-messages" and "crash_next" in (r.trace_id or "")]
    asked = Counter(r.body["query"] for r in again)
    assert set(asked) == {prompts[i] for i in range(11, 41)} and max(asked.values()) == 1
    for i, result in dead.items():  # stored from Dify's record, with the dead try's trace id
        assert rows[i]["answer"] == result.answer and rows[i]["message_id"] == result.message_id, i
        assert rows[i]["trace_id"].endswith(f"-t1-{i}"), rows[i]["trace_id"]
    olds = set(firsts.values()) | {r.message_id for r in dead.values()}
    assert not olds & {rows[i]["message_id"] for i in range(11, 41)}  # asked anew, not mistaken
    lost = [e for e in ledger if e["error_code"] == "lost_in_crash"]
    assert sorted(int(e["row_id"]) for e in lost) == list(range(1, 21))
    assert all(e["outcome"] == "maybe_billed" and e["total_price"] is None for e in lost)
    by_message = Counter(e["message_id"] for e in ledger if e["message_id"] is not None)
    assert set(by_message) == {b.message_id for b in fake.billing} and max(by_message.values()) == 1
    assert sum(Decimal(str(e["total_price"])) for e in ledger if e["total_price"] is not None) == (
        fake.billed_total()
    )
