"""Budget cap and secret hygiene through real dag.test() runs against FakeDify."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from airflow_dify.client import clear_token_cache
from airflow_dify.testing import FakeDify, Fault
from tests.airflow_run import run_batch_dag
from tests.sql_fixtures import SqlDb, unique_table

pytestmark = pytest.mark.usefixtures("airflow_db")


def _conn(monkeypatch: pytest.MonkeyPatch, fake: FakeDify, **conn: object) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DIFY_TEST", json.dumps({"conn_type": "dify", "host": fake.url, **conn}))


def test_budget_cap_stops_within_one_in_flight_window(
    sqlite_db: SqlDb, fake_dify: FakeDify, monkeypatch: pytest.MonkeyPatch
) -> None:
    _conn(monkeypatch, fake_dify, password=fake_dify.app("chat").key)
    table = unique_table()
    sqlite_db.create_prompts(table, [(i, f"budget prompt {i:04d}") for i in range(1, 301)])
    cap, concurrency = 2_000, 4
    state, summary = run_batch_dag(
        "op_budget",
        table=table,
        sql_conn_id="sql_test",
        dify_conn_id="dify_test",
        app_mode="chat",
        max_concurrency=concurrency,
        max_total_tokens=cap,
    )
    assert state == "success"
    assert summary["stopped"] == "budget" and "max_total_tokens=2,000" in summary["stopped_reason"]
    answered = [r for r in fake_dify.requests if r.path == "/chat-messages" and r.status == 200]
    spent = [r.response["metadata"]["usage"]["total_tokens"] for r in answered]
    per_call = max(spent)
    assert summary["total_tokens"] == sum(spent)
    assert cap - per_call * (concurrency + 1) <= sum(spent) <= cap + per_call * concurrency
    statuses = sqlite_db.query(f"SELECT status FROM {table}")
    assert sum(1 for (s,) in statuses if s == "succeeded") == len(spent)
    assert sum(1 for (s,) in statuses if s is None) == 300 - len(spent)  # the rest stay pending


@pytest.mark.parametrize("auth", ["api_key", "oauth2"])
def test_no_secret_in_logs_exceptions_xcom_or_table(
    auth: str,
    sqlite_db: SqlDb,
    fake_dify: FakeDify,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    airflow_home: Path,
) -> None:
    clear_token_cache()
    key = fake_dify.app("chat").key
    secret = "client-secret-value-8f2a91"
    if auth == "oauth2":
        fake_dify.add_oauth_client("leakcheck", secret, app_mode="chat")
        fake_dify.token_ttl = 1
        fake_dify.latency = 0.02
        _conn(
            monkeypatch,
            fake_dify,
            extra={
                "auth_type": "oauth2",
                "token_url": fake_dify.token_url,
                "client_id": "leakcheck",
                "client_secret": secret,
            },
        )
    else:
        _conn(monkeypatch, fake_dify, password=f"Bearer {key}")
    fake_dify.faults.add(Fault("status", status=500, code="internal_server_error", every=7))
    fake_dify.faults.add(Fault("status", status=401, code="unauthorized", on=[15]))
    fake_dify.faults.add(Fault("status", status=400, code="invalid_param", on=[20, 21]))
    table = unique_table()
    sqlite_db.create_prompts(table, [(i, f"secret check {i}") for i in range(1, 81)])
    caplog.set_level(logging.DEBUG)
    state, summary = run_batch_dag(
        f"op_secrets_{auth}",
        table=table,
        sql_conn_id="sql_test",
        dify_conn_id="dify_test",
        app_mode="chat",
        max_concurrency=4,
        max_failed_ratio=0.5,
    )
    if auth == "api_key":
        # A 401 for a static key means it was revoked: every row would get it, so the run stops.
        assert state == "failed" and summary["stopped"] == "breaker", summary
    else:
        assert state == "success", summary  # a 401 for a token: refreshed once, the run goes on
        assert summary["failed"] >= 1  # failures and retries really happened
    out, err = capfd.readouterr()
    task_logs = "".join(p.read_text(errors="replace") for p in (airflow_home / "logs").rglob("*.log"))
    haystack = "\n".join(
        [
            caplog.text,
            out,
            err,
            task_logs,
            json.dumps(summary),
            repr(sqlite_db.query(f"SELECT * FROM {table}")),
        ]
        + [repr(r.exc_info) for r in caplog.records if r.exc_info]
    )
    tokens = fake_dify.issued_tokens
    if auth == "oauth2":
        assert len(tokens) >= 2, "the run should have refreshed its token"
    for value in [key, secret, *tokens]:
        assert value not in haystack, f"secret leaked ({value[:4]}...)"
    assert "retrying" in caplog.text  # the retry warnings were captured and scanned
