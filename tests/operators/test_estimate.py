"""DifyEstimateOperator through real ``dag.test()`` runs against FakeDify.

The headline check: 2,000 rows whose prompts vary 10x in length (50..500 characters) and whose
answers vary on top of that; the estimate answers a 50-row sample, then the full batch answers
the rest under ``max_total_price`` = high x 1.2. The projection's 90 % interval must contain
what the rest actually cost (and the tokens it used), and the sample must not be asked twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from airflow_dify.batch.estimate import price_cap
from airflow_dify.operators.estimate import DifyEstimateOperator
from airflow_dify.report.cost import CostReport
from airflow_dify.testing import FakeApp, FakeDify
from tests.airflow_run import load_dag, xcom
from tests.report.report_helpers import connector
from tests.sql_fixtures import SqlDb, unique_table

pytestmark = pytest.mark.usefixtures("airflow_db")

DAG = """\
import datetime as dt
import json

from airflow.sdk import DAG

from airflow_dify.batch.estimate import price_cap
from airflow_dify.operators.dify import DifyBatchOperator
from airflow_dify.operators.estimate import DifyEstimateOperator
from airflow_dify.report.cost import CostReport

KWARGS = json.loads({kwargs!r})
ESTIMATE = json.loads({estimate!r})

with DAG({dag_id!r}, schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False,
         user_defined_macros={{"price_cap": price_cap}}) as dag:
    estimate = DifyEstimateOperator(task_id="estimate", **ESTIMATE, **KWARGS)
    if {with_batch!r}:
        estimate >> DifyBatchOperator(
            task_id="batch",
            max_total_price="{{{{ price_cap(ti.xcom_pull(task_ids='estimate')['high'], 1.2) }}}}",
            **KWARGS,
        )
"""

WORDS = [
    "invoice",
    "refund",
    "login",
    "crash",
    "export",
    "account",
    "billing",
    "password",
    "update",
    "mobile",
    "report",
]


def _prompt(rng: random.Random, i: int) -> str:
    """A ticket of 50..500 characters (uniform), unique per id."""
    target = rng.randint(50, 500)
    text = f"Ticket {i}:"
    while len(text) < target:
        text += " " + rng.choice(WORDS)
    return text[:target]


def _answer(query: str | None, inputs: dict[str, Any]) -> str:
    """Longer tickets get longer answers, plus 0..300 characters that depend on nothing we know."""
    q = query or ""
    noise = int(hashlib.sha256(q.encode()).hexdigest()[:8], 16) % 300
    return "Category: other. " + q[: len(q) // 2] + " ." * (noise // 2)


def _fake() -> FakeDify:
    return FakeDify(apps=[FakeApp("chat", answer=_answer)])


def _use(fake: FakeDify, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "dify", "host": fake.url, "password": fake.app("chat").key}
    monkeypatch.setenv("AIRFLOW_CONN_DIFY_TEST", json.dumps(conn))


def _run(dag_id: str, kwargs: dict[str, Any], estimate: dict[str, Any], with_batch: bool) -> Any:
    path = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{dag_id}.py"
    text = DAG.format(
        dag_id=dag_id, kwargs=json.dumps(kwargs), estimate=json.dumps(estimate), with_batch=with_batch
    )
    path.write_text(text)
    dr = load_dag(path).test()
    return dr, {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def test_2000_rows_interval_contains_the_actual_cost_of_the_rest(
    sqlite_db: SqlDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(2026)
    table = unique_table("estimate")
    prompts = [(i, _prompt(rng, i)) for i in range(1, 2001)]
    sqlite_db.create_prompts(table, prompts)
    lengths = [len(p) for _, p in prompts]
    assert min(lengths) == 50 and max(lengths) == 500
    kwargs = {
        "table": table,
        "sql_conn_id": "sql_test",
        "dify_conn_id": "dify_test",
        "app_mode": "chat",
        "max_concurrency": 8,
        "chunk_size": 200,
    }
    with _fake() as fake:
        _use(fake, monkeypatch)
        dr, states = _run("op_estimate_2000", kwargs, {"sample_rows": 50, "seed": 7}, with_batch=True)
        est = xcom("op_estimate_2000", dr.run_id, task_id="estimate")
        summary = xcom("op_estimate_2000", dr.run_id, key="summary", task_id="batch")
        billed = fake.billed_total()
        calls = fake.calls("/chat-messages")
        queries = [r.body["query"] for r in fake.requests if r.path == "/chat-messages"]
    assert states == {"estimate": "success", "batch": "success"}
    actual_rest = Decimal(summary["total_price"])
    actual_tokens = summary["total_tokens"]
    low, high = Decimal(est["low"]), Decimal(est["high"])
    print(
        f"\nESTIMATE 2,000 rows (prompts {min(lengths)}..{max(lengths)} chars), sample {est['sampled']} "
        f"(price {est['sample_price']} {est['currency']}, {est['sample_tokens']} tokens), "
        f"pending {est['pending']}: projected {est['projected_price']} "
        f"[{est['low']}, {est['high']}] at {est['confidence']:.0%}, tokens {est['projected_tokens']} "
        f"[{est['tokens_low']}, {est['tokens_high']}]; ACTUAL rest {actual_rest} ({actual_tokens} tokens); "
        f"projected total {est['projected_total_price']}, actual total {billed}; "
        f"cap {price_cap(est['high'], 1.2)}; model {est['model']}"
    )
    assert est["sampled"] == 50 and est["pending"] == 1950 and summary["rows_selected"] == 1950
    assert est["model"] == "ols" and est["confidence"] == 0.9 and est["currency"] == "USD"
    assert low <= actual_rest <= high
    assert est["tokens_low"] <= actual_tokens <= est["tokens_high"]
    total_low, total_high = Decimal(est["sample_price"]) + low, Decimal(est["sample_price"]) + high
    assert total_low <= billed <= total_high
    assert billed == Decimal(est["sample_price"]) + actual_rest  # every call paid once
    assert calls == 2000 and len(set(queries)) == 2000  # the sample was not asked again
    assert summary["stopped"] is None  # the cap (high x 1.2) did not stop the batch
    # The approval screen's sample answers.
    assert len(est["answers"]) == 10
    assert all(a["status"] == "succeeded" and a["answer"].startswith("Category") for a in est["answers"])
    statuses = sqlite_db.query(f"SELECT count(*) FROM {table} WHERE status = 'succeeded'")
    assert statuses == [(2000,)]
    # The cost report draws this pilot beside the batch's ledgered spend on the rest.
    with CostReport(connector(sqlite_db), dialect="sqlite") as report:
        pilots = report.projections("dify_usage_ledger")
    pilots = [p for p in pilots if p.label.startswith("op_estimate_2000")]
    assert pilots and pilots[-1].actual == actual_rest and pilots[-1].inside
    assert (pilots[-1].low, pilots[-1].high) == (low, high)


def test_estimate_on_each_database_keeps_the_sample_and_claims_nothing_else(
    sql_db: SqlDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(3)
    table = unique_table("estimate")
    sql_db.create_prompts(table, [(i, _prompt(rng, i)) for i in range(1, 121)])
    kwargs = {"table": table, "sql_conn_id": "sql_test", "dify_conn_id": "dify_test", "app_mode": "chat"}
    dag_id = f"op_estimate_{sql_db.kind}"
    try:
        with _fake() as fake:
            _use(fake, monkeypatch)
            dr, states = _run(dag_id, kwargs, {"sample_rows": 15}, with_batch=False)
            est = xcom(dag_id, dr.run_id, task_id="estimate")
            sample_summary = xcom(dag_id, dr.run_id, key="summary", task_id="estimate")
            calls = fake.calls()
        rows = sql_db.records(f"SELECT id, status, claimed_by FROM {table}")
    finally:
        sql_db.drop(table)
    assert states == {"estimate": "success"}
    assert calls == 15 == est["sampled"] == sample_summary["succeeded"]
    assert sum(1 for r in rows if r["status"] == "succeeded") == 15
    assert all(r["claimed_by"] is None for r in rows)  # nothing left claimed: the batch may start
    assert est["pending"] == 105 and Decimal(est["low"]) <= Decimal(est["projected_price"])
    keys = {"sampled", "pending", "projected_tokens", "projected_price", "low", "high", "currency"}
    keys |= {"sample_price", "sample_tokens", "model", "confidence", "answers", "projected_total_price"}
    assert keys <= set(est)
    json.dumps(est)  # JSON-safe as it is


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"redo": "all"}, 'redo="all"'),
        ({"sample_rows": 0}, "sample_rows"),
        ({"sample_rows": 5000}, "sample_rows"),
        ({"confidence": 1.5}, "confidence"),
    ],
)
def test_bad_arguments_fail_at_parse_time(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DifyEstimateOperator(task_id="e", table="t", sql_conn_id="s", outlets=[], **kwargs)
