"""dags/example_dify_approved_batch.py on a real Airflow: estimate, a human approval through the
REST API, then the capped batch; and a rejected run that spends nothing after its sample.

LocalExecutor, scheduler + dag-processor + api-server, PostgreSQL metadata and data, FakeDify in
this process. Run 1 (``margin`` 1.25 via the run's conf) is approved with
``PATCH /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/approve/-1/hitlDetails``: the batch must run
with ``max_total_price`` = the estimate's ``high`` x 1.25 (its rendered field) and answer every row.
Then new tickets arrive; run 2 is rejected: the batch is skipped, FakeDify gets no generation call
after the 50 sampled rows, and the new rows other than the sample stay pending.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from airflow_dify.batch.estimate import price_cap
from airflow_dify.testing import FakeDify
from tests.system.airflow_api import AirflowApi, wait_for
from tests.system.airflow_env import sql_connection
from tests.system.cluster import (
    ROOT,
    _pg,
    base_env,
    free_port,
    metadata,
    phase_env,
    start_airflow,
    task_log_tails,
)
from tests.system.processes import Processes

pytestmark = [pytest.mark.system, pytest.mark.postgres, pytest.mark.timeout(540)]
__all__ = ["metadata"]  # the module-scoped fixture, used by name

DAG_FILE = "example_dify_approved_batch.py"
DAG_ID = "example_dify_approved_batch"
TABLE = "approval_tickets"
FIRST_ROWS, NEW_ROWS, SAMPLE = 400, 300, 50
MARGIN = 1.25
STARTUP_TIMEOUT, WAIT_TIMEOUT, POLL_TIMEOUT = 150.0, 180.0, 30.0


def _tickets(first: int, count: int) -> list[tuple[int, str, str]]:
    """Subjects and bodies of varying length (the body 1..12 sentences)."""
    sentence = "The export page shows an error after I pick a date range and press download."
    return [
        (i, f"Ticket {i}: export fails", " ".join([sentence] * (1 + i % 12)))
        for i in range(first, first + count)
    ]


def _insert(dbname: str, rows: list[tuple[int, str, str]], create: bool = False) -> None:
    with closing(_pg(dbname)) as db:
        if create:
            db.execute(f"DROP TABLE IF EXISTS {TABLE}")
            db.execute(f"CREATE TABLE {TABLE} (id BIGINT PRIMARY KEY, subject TEXT, body TEXT)")
        with db.cursor() as cur:
            cur.executemany(f"INSERT INTO {TABLE} (id, subject, body) VALUES (%s, %s, %s)", rows)


def _statuses(dbname: str) -> dict[str | None, int]:
    with closing(_pg(dbname)) as db:
        return dict(db.execute(f"SELECT status, count(*) FROM {TABLE} GROUP BY status").fetchall())


class Run:
    """One DAG run driven through the REST API."""

    def __init__(self, api: AirflowApi, procs: Processes, margin: float) -> None:
        self.api, self.procs, self.check = api, procs, procs.check_alive
        self.run_id = f"approval_{uuid.uuid4().hex[:8]}"
        status, body = api.call(
            "POST",
            f"/api/v2/dags/{DAG_ID}/dagRuns",
            {"dag_run_id": self.run_id, "logical_date": None, "conf": {"margin": margin}},
        )
        assert status == 200, f"trigger -> {status}: {body}"

    @property
    def base(self) -> str:
        return f"/api/v2/dags/{DAG_ID}/dagRuns/{self.run_id}"

    def _get(self, path: str) -> Any:
        """GET, or None while the api-server is too busy to answer (its first execution-API call
        can hold its one worker for ~10 s on a loaded 2-core box); the waits bound the total."""
        try:
            status, body = self.api.call("GET", path, timeout=POLL_TIMEOUT)
        except OSError:
            return None
        assert status == 200, f"GET {path} -> {status}: {body}"
        return body

    def states(self) -> dict[str, str | None]:
        body = self._get(f"{self.base}/taskInstances")
        return {} if body is None else {t["task_id"]: t["state"] for t in body["task_instances"]}

    def await_approval(self) -> dict[str, Any]:
        """Wait until ``approve`` waits for a human; its HITL detail (subject, body, options)."""

        def waiting() -> bool:
            states = self.states()
            assert states.get("estimate") not in ("failed", "upstream_failed"), states
            return states.get("approve") == "awaiting_input"

        wait_for("the approval to wait for input", waiting, WAIT_TIMEOUT, check=self.check)
        # Airflow 3.3.2 race: the executor reports the parked workload as finished ("success");
        # if a response re-queues the task before the scheduler has taken that event, the
        # scheduler sees a queued task "finished" and fails it ("state changed externally").
        # A person never answers that fast; the test waits until the scheduler took the event.
        taken = f"TaskInstance Finished: dag_id={DAG_ID}, task_id=approve, run_id={self.run_id},"
        wait_for(
            "the scheduler to take the parked approval's event",
            lambda: self.procs.log_contains("scheduler", taken),
            WAIT_TIMEOUT,
            interval=0.5,
            check=self.check,
        )
        return self.api.get(f"{self.base}/taskInstances/approve/-1/hitlDetails")

    def respond(self, option: str) -> None:
        status, body = self.api.call(
            "PATCH", f"{self.base}/taskInstances/approve/-1/hitlDetails", {"chosen_options": [option]}
        )
        assert status == 200, f"respond {option} -> {status}: {body}"
        assert body["chosen_options"] == [option]

    def finish(self) -> str:
        def done() -> str | None:
            run = self._get(self.base)
            state = None if run is None else run["state"]
            return state if state in ("success", "failed") else None

        return wait_for("the DAG run to finish", done, WAIT_TIMEOUT, check=self.check)

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        return self.api.xcom(DAG_ID, self.run_id, task_id, key, -1)


def test_approved_run_spends_under_the_cap_rejected_run_spends_nothing_more(
    metadata: Any, tmp_path: Path
) -> None:
    shutil.copy(ROOT / "dags" / DAG_FILE, metadata.dags / DAG_FILE)
    _insert(metadata.data_db, _tickets(1, FIRST_ROWS), create=True)
    procs = Processes(tmp_path / "logs")
    api_port, log_port = free_port(), free_port()
    api = AirflowApi(api_port)
    fake = FakeDify(latency=0.02)
    left: list[str] = []
    try:
        fake.start()
        conn = json.dumps(
            {"conn_type": "dify", "host": fake.url, "password": fake.app("chat").key, "extra": {}}
        )
        env = {**base_env(), **phase_env(metadata, "LocalExecutor", api_port, log_port, conn)}
        env["AIRFLOW_CONN_SUPPORT_DB"] = sql_connection(metadata.data_db)
        env["DIFY_APPROVED_TABLE"] = TABLE
        start_airflow(procs, env, api_port, "local", "")
        alive = procs.check_alive
        wait_for("Airflow healthy", api.healthy, STARTUP_TIMEOUT, check=alive)
        wait_for(f"DAG {DAG_ID} parsed", lambda: api.dag_ready(DAG_ID), STARTUP_TIMEOUT, check=alive)
        api.unpause(DAG_ID)

        # Run 1: approve.
        first = Run(api, procs, MARGIN)
        detail = first.await_approval()
        est = first.xcom("estimate")
        calls_at_approval = fake.calls()
        first.respond("Approve")
        state1 = first.finish()
        states1 = first.states()
        batch = api.get(f"{first.base}/taskInstances/classify_tickets")
        summary1 = first.xcom("classify_tickets")
        statuses1 = _statuses(metadata.data_db)
        calls1 = fake.calls()

        # New tickets arrive; run 2: reject.
        _insert(metadata.data_db, _tickets(FIRST_ROWS + 1, NEW_ROWS))
        second = Run(api, procs, MARGIN)
        second.await_approval()
        est2 = second.xcom("estimate")
        calls_at_reject = fake.calls()
        second.respond("Reject")
        state2 = second.finish()
        time.sleep(5)  # a late call would show up here
        calls2 = fake.calls()
        states2 = second.states()
        statuses2 = _statuses(metadata.data_db)
    except BaseException:
        print(f"\n===== approval test failed; component logs =====\n{procs.tails()}", file=sys.stderr)
        print(task_log_tails(metadata), file=sys.stderr)
        raise
    finally:
        left = procs.stop_all()
        fake.stop()
    assert not left, f"processes left behind: {left}"

    # The approval screen showed the projection and the sample's answers.
    assert detail["options"] == ["Approve", "Reject"] and detail["defaults"] == ["Reject"]
    assert est["projected_price"] in detail["subject"]
    assert est["high"] in detail["body"] and est["answers"][0]["prompt"][:40] in detail["body"]
    assert est["sampled"] == SAMPLE and est["pending"] == FIRST_ROWS - SAMPLE
    assert calls_at_approval == SAMPLE  # only the sample was called before the approval

    # Approved: the batch ran with the approved cap and answered every row, each once.
    assert state1 == "success", states1
    assert states1 == {"estimate": "success", "approve": "success", "classify_tickets": "success"}
    cap = price_cap(est["high"], MARGIN)
    assert batch["rendered_fields"]["max_total_price"] == cap
    assert Decimal(cap) == Decimal(est["high"]) * Decimal(str(MARGIN))
    assert summary1["rows_selected"] == FIRST_ROWS - SAMPLE and summary1["stopped"] is None
    assert Decimal(summary1["total_price"]) <= Decimal(cap)
    assert statuses1 == {"succeeded": FIRST_ROWS} and calls1 == FIRST_ROWS

    # Rejected: the batch was skipped; no generation call after the sample; the rest stay pending.
    assert est2["sampled"] == SAMPLE and est2["pending"] == NEW_ROWS - SAMPLE
    assert calls_at_reject - calls1 == SAMPLE
    assert state2 == "success", states2
    assert states2 == {"estimate": "success", "approve": "success", "classify_tickets": "skipped"}
    assert calls2 == calls_at_reject
    assert statuses2 == {"succeeded": FIRST_ROWS + SAMPLE, None: NEW_ROWS - SAMPLE}
    actual = Decimal(summary1["total_price"])
    print(
        f"\nAPPROVAL run 1: sample {est['sampled']} ({est['sample_price']} USD), projected "
        f"{est['projected_price']} [{est['low']}, {est['high']}], cap {cap} (x{MARGIN}), actual {actual} "
        f"({'inside' if Decimal(est['low']) <= actual <= Decimal(est['high']) else 'OUTSIDE'} the interval); "
        f"run 2 rejected: {calls_at_reject - calls1} sample calls, {calls2 - calls_at_reject} after"
    )
