"""The operator holds a batch to requests_per_minute and max_concurrency, as FakeDify counts them."""

from __future__ import annotations

import json

import pytest

from airflow_dify.testing import FakeDify
from tests.airflow_run import run_batch_dag
from tests.sql_fixtures import SqlDb, unique_table

pytestmark = pytest.mark.usefixtures("airflow_db")


def test_operator_respects_rpm_and_concurrency(sqlite_db: SqlDb, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeDify(latency=0.05) as fake:
        conn = {
            "conn_type": "dify",
            "host": fake.url,
            "password": fake.app("chat").key,
            "extra": {"max_concurrency": 8, "requests_per_minute": 1200},
        }
        monkeypatch.setenv("AIRFLOW_CONN_DIFY_TEST", json.dumps(conn))
        table = unique_table()
        sqlite_db.create_prompts(table, [(i, f"limited {i}") for i in range(1, 61)])
        # The operator may only tighten the connection's limits.
        state, summary = run_batch_dag(
            "op_limits",
            table=table,
            sql_conn_id="sql_test",
            dify_conn_id="dify_test",
            app_mode="chat",
            max_concurrency=3,
            requests_per_minute=600,
        )
        stats = fake.stats()
        starts = sorted(r.started for r in fake.requests if r.path == "/chat-messages")
    assert state == "success" and summary["succeeded"] == 60
    assert stats["max_concurrency_seen"] <= 3
    assert stats["worst_1s"] <= 11  # 600/min = 10/s, +1 for timing jitter at the window edge
    assert starts[-1] - starts[0] >= 59 / 10 * 0.95  # not faster than the limit allows
