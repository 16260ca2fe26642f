"""SIGTERM mid-run: calls in flight finish and are saved, no row is half-written, the rest stay pending.

A subprocess runs the DAG with ``dag.test()``, which executes the task through Airflow 3's task
runner, the same code path that installs the SIGTERM handler calling ``on_kill`` on workers.
FakeDify (in this process) answers slowly so the batch is mid-way when the signal arrives.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from airflow_dify.testing import FakeDify
from tests.airflow_run import popen_logged, run_batch_dag, write_dag
from tests.sql_fixtures import SqlDb, unique_table

REPO = Path(__file__).resolve().parents[2]
ROWS = 40
CONCURRENCY = 4
LATENCY = 1.5  # seconds per call: the whole batch takes ~15 s, the kill lands in the first few
GENERATION_PATHS = {"/chat-messages", "/completion-messages", "/workflows/run"}
RESULT_COLUMNS = "answer, error, prompt_tokens, completion_tokens, total_tokens, message_id, answered_at"

RUNNER = """
import json
from pathlib import Path
from tests.airflow_run import load_dag, xcom
dag = load_dag(Path({dag_path!r}))
dr = dag.test()
ti = next(t for t in dr.get_task_instances() if t.task_id == "batch")
summary = xcom(dag.dag_id, dr.run_id, key="summary")
print("RESULT " + json.dumps({{"state": str(ti.state), "summary": summary}}))
"""


def saved_rows(path: Path, table: str) -> int:
    """Rows with a result, or -1 while the status column does not exist yet."""
    try:
        with closing(sqlite3.connect(path, timeout=5)) as db:
            return db.execute(f"SELECT COUNT(*) FROM {table} WHERE status IS NOT NULL").fetchone()[0]
    except sqlite3.OperationalError:
        return -1


def generation_calls(fake: FakeDify) -> int:
    return sum(1 for r in fake.requests if r.path in GENERATION_PATHS and r.status == 200)


@pytest.mark.usefixtures("airflow_db")
def test_sigterm_mid_run_saves_finished_calls_and_leaves_the_rest_pending(
    sqlite_db: SqlDb, fake_dify: FakeDify, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_dify.latency = LATENCY
    dify = {"conn_type": "dify", "host": fake_dify.url, "password": fake_dify.app("chat").key}
    monkeypatch.setenv("AIRFLOW_CONN_DIFY_TEST", json.dumps({**dify, "extra": {"app_mode": "chat"}}))
    table = unique_table()
    sqlite_db.create_prompts(table, [(i, f"question {i}") for i in range(1, ROWS + 1)])
    kwargs = {
        "table": table,
        "sql_conn_id": "sql_test",
        "dify_conn_id": "dify_test",
        "max_concurrency": CONCURRENCY,
        "chunk_size": 10,
    }
    dag_path = write_dag(f"kill_{table}", kwargs)
    log = tmp_path / "run.log"
    proc = popen_logged(
        [sys.executable, "-c", RUNNER.format(dag_path=str(dag_path))], log, cwd=REPO, env=dict(os.environ)
    )
    try:
        deadline = time.monotonic() + 120
        while saved_rows(sqlite_db.sqlite_path, table) < CONCURRENCY:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no rows saved in time"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    out = log.read_text(errors="replace")
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert lines, out[-6000:]
    result = json.loads(lines[-1][len("RESULT ") :])

    # The task fails (so a retry resumes) after saving what finished.
    assert result["state"] == "failed"
    summary = result["summary"]
    assert summary["stopped"] == "killed"
    rows = sqlite_db.records(f"SELECT id, status, {RESULT_COLUMNS} FROM {table} ORDER BY id")
    done = [r for r in rows if r["status"] is not None]
    pending = [r for r in rows if r["status"] is None]
    assert len(done) == summary["processed"] and summary["succeeded"] == len(done)
    assert 0 < len(done) < ROWS and len(pending) == ROWS - len(done)
    # Every answer Dify returned (and billed) was written back: nothing paid for is lost.
    assert generation_calls(fake_dify) == len(done)
    # No half-written row: a result is complete, a pending row has no result column set.
    for row in done:
        assert row["status"] == "succeeded" and row["error"] is None
        assert row["answer"] and row["message_id"] and row["answered_at"]
        assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"] > 0
    assert all(
        value is None for row in pending for name, value in row.items() if name not in ("id", "status")
    )

    # A re-run (the retry) does only the pending rows: every row answered, none paid twice.
    fake_dify.latency = 0.0
    state, rerun = run_batch_dag(f"kill_{table}", **kwargs)
    assert state == "success" and rerun["succeeded"] == len(pending)
    assert generation_calls(fake_dify) == ROWS
    assert sqlite_db.query(f"SELECT COUNT(*) FROM {table} WHERE status = 'succeeded'") == [(ROWS,)]
