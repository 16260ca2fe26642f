"""Fail fast: errors every row would get stop the run early; the pre-flight stops it before any call.

Real ``dag.test()`` runs of DifyBatchOperator against FakeDify, 500 rows, max_concurrency 8.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import pytest

from airflow_dify.testing import FakeApp, FakeDify, Fault
from tests.airflow_run import run_batch_dag
from tests.sql_fixtures import SqlDb, unique_table

pytestmark = pytest.mark.usefixtures("airflow_db")

ROWS = 500
CONCURRENCY = 8
GENERATION = {"/chat-messages", "/completion-messages", "/workflows/run"}


def generation(fake: FakeDify) -> list[Any]:
    return [r for r in fake.requests if r.path in GENERATION]


def kwargs(table: str, **extra: Any) -> dict[str, Any]:
    base = {"table": table, "sql_conn_id": "sql_test", "dify_conn_id": "dify_test", "app_mode": "chat"}
    return {**base, "max_concurrency": CONCURRENCY, "chunk_size": 50, **extra}


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (
            Fault("status", status=401, code="unauthorized", message="Access token is invalid", after=40),
            "unauthorized",
        ),
        (
            Fault("status", status=400, code="provider_quota_exceeded", message="quota exceeded", after=20),
            "provider_quota_exceeded",
        ),
        (
            Fault("status", status=429, code="rate_limit_error", message="plan quota", after=20),
            "rate_limit_error",
        ),
    ],
    ids=["key-revoked-at-41", "provider-quota-at-21", "plan-quota-at-21"],
)
def test_an_error_every_row_would_get_stops_the_run(
    fault: Fault, code: str, sqlite_db: SqlDb, fake_dify: FakeDify, dify_conn
) -> None:
    table = unique_table()
    sqlite_db.create_prompts(table, [(i, f"question {i}") for i in range(1, ROWS + 1)])
    fake_dify.faults.add(fault)
    state, summary = run_batch_dag(f"fail_fast_{code}", **kwargs(table))
    assert state == "failed" and summary["stopped"] == "breaker"
    assert code in summary["stopped_reason"] and "fix:" in summary["stopped_reason"]
    records = generation(fake_dify)
    first = next(i for i, r in enumerate(records) if r.status >= 400)
    # A revoked key: only the calls already in flight; an error that needs 3: the rows handed over.
    bound = CONCURRENCY - 1 if code == "unauthorized" else 2 * CONCURRENCY
    assert len(records) - first - 1 <= bound, f"{len(records) - first - 1} calls after the first error"
    pending = sqlite_db.query(f"SELECT COUNT(*) FROM {table} WHERE status IS NULL")[0][0]
    assert pending >= 400 and sqlite_db.query(f"SELECT COUNT(*) FROM {table} WHERE status = 'failed'") == [
        (0,)
    ]
    assert f"{pending:,} row(s) left pending" in summary["stopped_reason"]

    fake_dify.faults.clear()
    fake_dify.reset()
    state, again = run_batch_dag(f"fail_fast_{code}_again", **kwargs(table))
    assert state == "success" and again["succeeded"] == pending
    asked = Counter(r.body["query"] for r in generation(fake_dify))
    assert len(asked) == pending and max(asked.values()) == 1  # exactly the pending rows, once each
    assert sqlite_db.query(f"SELECT COUNT(*) FROM {table} WHERE status = 'succeeded'") == [(ROWS,)]


def test_dify_gone_for_good_ends_the_task_within_two_minutes(
    sqlite_db: SqlDb, fake_dify: FakeDify, dify_conn
) -> None:
    table = unique_table()
    sqlite_db.create_prompts(table, [(i, f"question {i}") for i in range(1, ROWS + 1)])
    fake_dify.latency = 0.02
    killed: dict[str, float] = {}

    def kill_after_100() -> None:
        deadline = time.monotonic() + 120
        while fake_dify.calls() < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        killed["at"] = time.monotonic()
        fake_dify.stop()  # the port closes: every later call is refused

    threading.Thread(target=kill_after_100, daemon=True).start()
    state, summary = run_batch_dag("dify_gone", **kwargs(table))
    ended = time.monotonic()
    assert state == "failed" and summary["stopped"] == "breaker"
    assert "no call reached Dify" in summary["stopped_reason"]
    assert ended - killed["at"] < 120, f"took {ended - killed['at']:.0f} s after the kill"
    # Only calls cut off in flight by the kill failed ("may have been billed": never re-sent blindly).
    failed = sqlite_db.query(f"SELECT COUNT(*) FROM {table} WHERE status = 'failed'")[0][0]
    assert failed == summary["maybe_billed"] <= CONCURRENCY
    pending = sqlite_db.query(f"SELECT COUNT(*) FROM {table} WHERE status IS NULL")[0][0]
    assert pending == ROWS - summary["succeeded"] - failed and pending >= 300
    assert f"{pending:,} row(s) left pending" in summary["stopped_reason"]
    print(f"\nDify gone: task ended {ended - killed['at']:.0f} s after the kill, {pending} rows pending")


def test_a_wrong_key_with_app_mode_given_makes_no_call(
    sqlite_db: SqlDb, fake_dify: FakeDify, monkeypatch
) -> None:
    table = unique_table()
    sqlite_db.create_prompts(table, [(i, f"question {i}") for i in range(1, 21)])
    before = sqlite_db.query(f"SELECT * FROM {table} ORDER BY id")
    conn = {
        "conn_type": "dify",
        "host": fake_dify.url,
        "password": "app-" + "W" * 24,
        "extra": {"app_mode": "chat"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_DIFY_TEST", json.dumps(conn))
    state, _ = run_batch_dag("wrong_key", **kwargs(table))
    assert state == "failed" and fake_dify.calls() == 0
    assert any(r.path == "/info" and r.status == 401 for r in fake_dify.requests)
    assert sqlite_db.query(f"SELECT * FROM {table} ORDER BY id") == before  # not even a column added


def test_an_unmapped_required_input_makes_no_call_and_names_it(
    sqlite_db: SqlDb, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    app = FakeApp(mode="chat", inputs=[{"variable": "customer_tier", "required": True}, "language"])
    with FakeDify(apps=[app]) as fake:
        conn = {"conn_type": "dify", "host": fake.url, "password": app.key}
        monkeypatch.setenv("AIRFLOW_CONN_DIFY_TEST", json.dumps(conn))
        table = unique_table()
        sqlite_db.create_prompts(table, [(i, f"question {i}") for i in range(1, 21)])
        state, _ = run_batch_dag("unmapped_input", **kwargs(table, input_columns={"language": "prompt"}))
        assert state == "failed" and fake.calls() == 0
    out, err = capfd.readouterr()
    assert "customer_tier" in out + err and "no row was called" in out + err
