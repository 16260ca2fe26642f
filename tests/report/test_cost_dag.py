"""dags/example_dify_cost_report.py through dag.test(): from answered tables' result columns, and
from the usage ledger (spend stays exact after answers are replaced)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from airflow_dify.batch.options import BatchOptions
from airflow_dify.batch.run import run_batch
from airflow_dify.client import DifyClient
from airflow_dify.sql.ledger import LedgerContext
from airflow_dify.sql.table import SqlTable
from airflow_dify.testing import FakeDify
from tests.airflow_run import load_dag, xcom
from tests.report.report_helpers import connector, make_answered_table, source_truth
from tests.sql_fixtures import SqlDb, unique_table

pytestmark = pytest.mark.usefixtures("airflow_db")

EXAMPLE = Path(__file__).resolve().parents[2] / "dags" / "example_dify_cost_report.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Kept after the run so a person can look at the chart the test produced.
CHART_COPY = Path(os.environ.get("DIFY_TEST_CHART_DIR", "/tmp")) / "dify_cost_report_{kind}.png"


def answer_with_fake(
    sql_db: SqlDb, fake: FakeDify, table: str, n: int, *, ledger: str | None = None, redo: str = "failed"
) -> None:
    """A table answered for real: FakeDify calls through the same runner the operator uses."""
    if redo != "all":
        sql_db.create_prompts(
            table, [(i, f"Summarise review {i}: " + "good " * (i % 50)) for i in range(1, n + 1)]
        )
    context = LedgerContext(dag_id="reviews_dag", run_id="r1", task_id="t")
    with (
        DifyClient(fake.url, fake.app("chat").key) as client,
        SqlTable(
            connector(sql_db), table, dialect=sql_db.kind, ledger_table=ledger, ledger_context=context
        ) as sink,
    ):
        options = BatchOptions(app_mode="chat", user="u", max_concurrency=8, redo=redo)
        summary = run_batch(sink, sink, client, options)
    assert summary.succeeded == n


def test_cost_report_dag_on_answered_tables(sql_db: SqlDb, fake_dify: FakeDify, tmp_path: Path) -> None:
    synthetic, live, summary = unique_table("tickets"), unique_table("reviews"), unique_table("cost")
    today = dt.datetime.now(dt.timezone.utc).date()
    # 16 days of history up to yesterday; the report asks for the last 14 days (today included).
    make_answered_table(sql_db, synthetic, n=900, days=16, seed=7, start=today - dt.timedelta(days=16))
    answer_with_fake(sql_db, fake_dify, live, 120)
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dag = load_dag(Path(shutil.copy(EXAMPLE, dags / EXAMPLE.name)))
    chart = tmp_path / "reports" / "cost.png"
    conf = {
        "sql_conn_id": "sql_test",
        "tables": {synthetic: "ticket-classifier", live: "review-summariser"},
        "summary_table": summary,
        "chart_path": str(chart),
        "days_back": 14,
        "ledger_table": "",  # the tables' own result columns
    }
    try:
        dr = dag.test(run_conf=conf)
        ti = next(t for t in dr.get_task_instances() if t.task_id == "cost_report")
        assert str(ti.state) == "success"
        result = xcom("example_dify_cost_report", dr.run_id, task_id="cost_report")
        stored = sql_db.records(
            "SELECT table_name, currency, row_count, failed_count, total_tokens, total_price, date "
            f"FROM {summary}"
        )
        since = today - dt.timedelta(days=13)
        truth = {t: source_truth(sql_db, t, since) for t in (synthetic, live)}
    finally:
        for t in (synthetic, live, summary):
            sql_db.drop(t)

    for table in (synthetic, live):
        rows = [r for r in stored if r["table_name"] == table]
        assert sum(r["row_count"] for r in rows) == sum(g["rows"] for g in truth[table].values())
        assert sum(r["failed_count"] for r in rows) == sum(g["failed"] for g in truth[table].values())
        assert sum(r["total_tokens"] for r in rows) == sum(g["total"] for g in truth[table].values())
        stored_price = sum(Decimal(str(r["total_price"])) for r in rows)
        assert stored_price == sum(g["price"] for g in truth[table].values())
    days = {r["date"] if isinstance(r["date"], str) else r["date"].isoformat() for r in stored}
    assert days == {(since + dt.timedelta(days=i)).isoformat() for i in range(14)}
    all_price = sum((g["price"] for t in truth.values() for g in t.values()), Decimal(0))
    assert Decimal(result["total_price_by_currency"]["USD"]) == all_price
    in_range = sum(g["rows"] for t in truth.values() for g in t.values())
    assert 120 < in_range < 1020  # the two oldest days are outside days_back
    assert result["rows"] == in_range and result["days"] == 14 and result["chart_path"] == str(chart)

    data = chart.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    shutil.copy(chart, str(CHART_COPY).format(kind=sql_db.kind))


def test_cost_report_from_the_ledger_counts_replaced_answers(
    sql_db: SqlDb, fake_dify: FakeDify, tmp_path: Path
) -> None:
    """Answered twice (``redo="all"`` replaces every answer): the tables' columns hold one run's
    price, the ledger-based report holds both, to the digit of FakeDify's invoice."""
    table, book, summary = unique_table("reviews"), unique_table("ledger"), unique_table("cost")
    answer_with_fake(sql_db, fake_dify, table, 60, ledger=book)
    answer_with_fake(sql_db, fake_dify, table, 60, ledger=book, redo="all")
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dag = load_dag(Path(shutil.copy(EXAMPLE, dags / EXAMPLE.name)))
    chart = tmp_path / "cost.png"
    conf = {
        "sql_conn_id": "sql_test",
        "tables": {},
        "ledger_table": book,
        "summary_table": summary,
        "chart_path": str(chart),
        "stack_by": "app",
    }
    try:
        dr = dag.test(run_conf=conf)
        result = xcom("example_dify_cost_report", dr.run_id, task_id="cost_report")
        stored = sql_db.records(f"SELECT table_name, app, row_count, total_price FROM {summary}")
        current = sum(Decimal(str(r[0])) for r in sql_db.query(f"SELECT total_price FROM {table}"))
    finally:
        for t in (table, book, summary):
            sql_db.drop(t)
    assert Decimal(result["total_price_by_currency"]["USD"]) == fake_dify.billed_total()
    assert {(r["table_name"], r["app"]) for r in stored} == {(table, "reviews_dag/chat")}
    assert sum(r["row_count"] for r in stored) == 120 == len(fake_dify.billing)
    assert current < fake_dify.billed_total()  # the table alone would under-report the spend
    assert chart.read_bytes()[:8] == PNG_MAGIC
