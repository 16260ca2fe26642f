"""SIGKILL a batch task mid-run on a real scheduler: Airflow's retry finishes it by itself.

LocalExecutor, PostgreSQL metadata and data, FakeDify in this process. The task (retries=1, no
retry delay) writes its pid and try number to a file; once 30 rows are answered the test kills
that process with SIGKILL, as the OOM killer would. Airflow marks the try failed and starts the
next one, which takes over the claims of the try that died (same task instance) instead of
waiting out their lease. Each row asks as its own Dify end user (``user_per_row``), so the new
try looks up what the dead one had asked: those answers are stored from Dify's record, not asked
again. Checked: the run succeeds, every row is answered, no row is asked twice, every call Dify
billed has exactly one usage-ledger entry at its price, and the ledger's sum is Dify's invoice.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import pytest

from airflow_dify.testing import FakeDify
from scripts.system_seed import prompt_for, seed
from tests.system.airflow_api import AirflowApi, wait_for
from tests.system.cluster import (
    TABLE,
    _pg,
    base_env,
    free_port,
    metadata,
    phase_env,
    start_airflow,
    task_log_tails,
)
from tests.system.processes import Processes

pytestmark = [pytest.mark.system, pytest.mark.postgres, pytest.mark.timeout(420)]
__all__ = ["metadata"]  # the module-scoped fixture, used by name

DAG_ID = "dify_crash_retry"
ROWS = 120
CONCURRENCY = 4
DAG = """
import datetime as dt
import os

from airflow.sdk import DAG

from airflow_dify.operators.dify import DifyBatchOperator


class PidBatch(DifyBatchOperator):
    def execute(self, context):
        with open(os.environ["DIFY_CRASH_PID_FILE"], "a") as out:
            out.write(f"{{os.getpid()}} {{context['ti'].try_number}}\\n")
        return super().execute(context)


with DAG({dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False):
    PidBatch(
        task_id="answer", table={table!r}, sql_conn_id="dify_sql", dify_conn_id="dify_default",
        app_mode="chat", max_concurrency={concurrency}, chunk_size=10, outlets=[], user_per_row=True,
        retries=1, retry_delay=dt.timedelta(seconds=0),
    )
"""


def _answered(dsn_db: str) -> int:
    import psycopg

    with closing(_pg(dsn_db)) as db:
        try:
            return db.execute(f"SELECT COUNT(*) FROM {TABLE} WHERE status = 'succeeded'").fetchone()[0]
        except psycopg.errors.UndefinedColumn:  # the task has not added its result columns yet
            return 0


def test_sigkill_then_airflows_own_retry_finishes_the_rows(metadata, tmp_path: Path) -> None:
    ids = seed(metadata.data_dsn, TABLE, ROWS)
    (metadata.dags / f"{DAG_ID}.py").write_text(
        DAG.format(dag_id=DAG_ID, table=TABLE, concurrency=CONCURRENCY)
    )
    pid_file = tmp_path / "pids"
    procs = Processes(tmp_path / "logs")
    api_port, log_port = free_port(), free_port()
    fake = FakeDify(latency=0.25)
    api = AirflowApi(api_port)
    run_id = f"crash_{uuid.uuid4().hex[:8]}"
    left: list[str] = []
    try:
        fake.start()
        extra = {"app_mode": "chat"}
        conn = json.dumps(
            {"conn_type": "dify", "host": fake.url, "password": fake.app("chat").key, "extra": extra}
        )
        env = {**base_env(), **phase_env(metadata, "LocalExecutor", api_port, log_port, conn)}
        env["DIFY_CRASH_PID_FILE"] = str(pid_file)
        start_airflow(procs, env, api_port, "local", "")
        alive = procs.check_alive
        wait_for("Airflow healthy", api.healthy, 150, check=alive)
        wait_for(f"DAG {DAG_ID} parsed", lambda: api.dag_ready(DAG_ID), 150, check=alive)
        api.unpause(DAG_ID)
        api.trigger(DAG_ID, run_id)
        wait_for("30 rows answered", lambda: _answered(metadata.data_db) >= 30 or None, 120, interval=0.05)
        pid, try_number = (int(v) for v in pid_file.read_text().split()[:2])
        assert try_number == 1
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        answered_at_kill = _answered(metadata.data_db)

        def finished() -> str | None:
            state = api.run_state(DAG_ID, run_id)
            return state if state in ("success", "failed") else None

        state = wait_for("the DAG run to finish", finished, 180, interval=1, check=alive)
        recovered_in = time.monotonic() - killed_at
        tries = [line.split() for line in pid_file.read_text().splitlines()]
        summary = api.xcom(DAG_ID, run_id, "answer", "return_value", -1)
    except BaseException:
        print(f"\n===== crash-retry failed; component logs =====\n{procs.tails()}", file=sys.stderr)
        print(task_log_tails(metadata), file=sys.stderr)
        raise
    finally:
        left = procs.stop_all()
        fake.stop()
    assert not left, f"processes left behind: {left}"
    assert state == "success"
    assert [t[1] for t in tries] == ["1", "2"]  # Airflow's own retry, no manual step
    assert answered_at_kill < ROWS and _answered(metadata.data_db) == ROWS
    asked = Counter(r.body["query"] for r in fake.requests if r.path == "/chat-messages" and r.body)
    assert set(asked) == {prompt_for(i) for i in ids}
    repeated = sum(asked.values()) - len(asked)
    assert repeated == 0, f"{repeated} request(s) repeated after the kill"
    # The retry took the dead try's claims over at once: it did not wait out their 60 s lease.
    assert summary["skipped_claimed"] == 0 and recovered_in < 60, (summary, recovered_in)
    found, ledger_sum = _check_ledger(metadata.data_db, fake)
    print(
        f"\nLEDGER sum {ledger_sum} == billed {fake.billed_total()} over {len(fake.billing)} calls; "
        f"{found} answer(s) of the killed try found in Dify"
    )
    print(
        f"\nCRASH killed at {answered_at_kill}/{ROWS} answered; retry done {recovered_in:.1f}s later; "
        f"{repeated} request(s) repeated (max_concurrency {CONCURRENCY})"
    )


def _check_ledger(data_db: str, fake: FakeDify) -> tuple[int, Decimal]:
    """Every bill has exactly one ledger entry by message id; the sum is the invoice."""
    with closing(_pg(data_db)) as db:
        entries = db.execute(
            "SELECT row_id, message_id, total_price, outcome, error_code, try_number, trace_id "
            "FROM dify_usage_ledger"
        ).fetchall()
    by_message = Counter(e[1] for e in entries if e[1] is not None)
    assert all(n == 1 for n in by_message.values()), "a call has two ledger entries"
    assert set(by_message) == {b.message_id for b in fake.billing}  # none lost in the kill
    ledger_sum = sum((Decimal(str(e[2])) for e in entries if e[2] is not None), Decimal(0))
    assert ledger_sum == fake.billed_total()
    lost_marks = {e[0] for e in entries if e[4] == "lost_in_crash" and e[5] == 1}
    # Answers the dead try paid for, stored by try 2 with the id their call carried (its t1 trace).
    found = [e for e in entries if e[3] == "succeeded" and e[5] == 2 and "-t1-" in (e[6] or "")]
    assert {e[0] for e in found} <= lost_marks
    return len(found), ledger_sum
