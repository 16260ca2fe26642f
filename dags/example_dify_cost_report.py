"""Daily Dify cost report for finance: the usage ledger -> summary table + PNG chart.

Reads the usage ledger that ``DifyBatchOperator`` appends to (one row per billed call, with its
exact price; answers replaced by later runs stay counted), or, with ``ledger_table`` empty, the
usage columns of the answered tables (only each row's current answer), and writes one row per UTC
day, table, app and currency into ``summary_table``: rows, succeeded/failed counts,
prompt/completion/total tokens, exact Decimal price total, p50/p95 latency. Re-running replaces
the reported range (idempotent). The chart (tokens and cost per day, stacked by table or app) is
written to ``chart_path``.

Trigger with a config to change the defaults, e.g.::

    airflow dags trigger example_dify_cost_report --conf '{"tables": {"support_tickets": "classifier"}}'

Params:
- ``sql_conn_id``: the SQL connection holding the answered tables (and the summary table).
- ``estimates_table``: pilot estimates (``DifyEstimateOperator``) drawn beside what their DAG run
  then spent (from the ledger); empty = no such panel.
- ``ledger_table``: the usage ledger (``DifyBatchOperator(ledger_table=...)``); empty = read the
  tables' result columns instead.
- ``tables``: ``{"table": "app label", ...}`` or a list of table names; with the ledger, an empty
  label (or a list) labels spend ``<dag_id>/<app_mode>``, and ``{}`` reports every table.
- ``summary_table``: where the daily rows go (created when missing).
- ``days_back``: report only the last N UTC days (including today); null = every day.
- ``chart_path``: PNG path; empty = ``$AIRFLOW_HOME/reports/<summary_table>.png``.
- ``stack_by``: ``table_name`` or ``app``.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task

with DAG(
    dag_id="example_dify_cost_report",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    tags=["dify", "example", "finance"],
    doc_md=__doc__,
    params={
        "sql_conn_id": Param("support_db", type="string"),
        "ledger_table": Param("dify_usage_ledger", type="string"),
        "estimates_table": Param("dify_estimates", type="string"),
        "tables": Param({"support_tickets": "ticket-classifier"}, type=["object", "array"]),
        "summary_table": Param("dify_cost_daily", type="string"),
        "days_back": Param(None, type=["null", "integer"], minimum=1),
        "chart_path": Param("", type="string"),
        "stack_by": Param("table_name", enum=["table_name", "app"]),
    },
) as dag:

    @task
    def cost_report(params: dict[str, Any] | None = None) -> dict[str, Any]:
        from airflow.sdk import BaseHook

        from airflow_dify.report.chart import render_cost_chart
        from airflow_dify.report.cost import CostReport
        from airflow_dify.report.usage import totals
        from airflow_dify.sql.dialects import dialect_for

        assert params is not None
        hook = BaseHook.get_connection(params["sql_conn_id"]).get_hook()
        dialect = dialect_for(getattr(hook, "conn_type", None))
        since = None
        if params.get("days_back"):
            since = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=int(params["days_back"]) - 1)
        chart_path = params.get("chart_path") or str(
            Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser()
            / "reports"
            / f"{params['summary_table']}.png"
        )
        with CostReport(hook.get_conn, dialect=dialect, summary_table=params["summary_table"]) as report:
            tables = params["tables"]
            if params.get("ledger_table"):
                labels = tables if isinstance(tables, dict) else dict.fromkeys(tables, "")
                days = report.run_ledger(params["ledger_table"], apps=labels or None, since=since)
                names = sorted({r.table_name for r in days} | set(labels))
            else:
                report.run(tables, since=since)
                names = list(tables)
            stored = report.load(names, since=since)
            pilots = []
            if params.get("ledger_table") and params.get("estimates_table"):
                pilots = report.projections(params["ledger_table"], params["estimates_table"])
        png = render_cost_chart(stored, chart_path, stack_by=params["stack_by"], projections=pilots)
        return {
            **totals(stored),
            "summary_table": params["summary_table"],
            "summary_rows": len(stored),
            "days": len({r.date for r in stored}),
            "chart_path": str(png),
            "pilots": [
                {
                    "label": p.label,
                    "projected": str(p.projected),
                    "low": str(p.low),
                    "high": str(p.high),
                    "actual": str(p.actual),
                    "inside": p.inside,
                }
                for p in pilots
            ],
        }

    cost_report()
