"""Classify support tickets with a Dify app, straight from and back into a SQL table.

Runs as-is against FakeDify + SQLite (``make demo``) and against a real Dify when the
``dify_default`` connection points there. Connections used:
- ``dify_default``: type ``dify``; host = https://api.dify.ai/v1 (or self-hosted /v1), password = app key.
- ``support_db``: any SQL connection holding the ``support_tickets`` table (id, subject, body).

Re-running the DAG only calls Dify for rows not answered yet (and failed ones): it resumes.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from airflow_dify.operators.dify import DifyBatchOperator

with DAG(
    dag_id="example_dify_batch",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    tags=["dify", "example"],
    doc_md=__doc__,
):
    DifyBatchOperator(
        task_id="classify_tickets",
        sql_conn_id="support_db",
        dify_conn_id="dify_default",
        table="support_tickets",
        id_column="id",
        query_template=(
            "Classify this support ticket as billing, bug, account or other. Subject: {subject}. Body: {body}"
        ),
        app_mode="chat",
        max_concurrency=8,
        requests_per_minute=3000,
        chunk_size=50,
        max_failed_ratio=0.02,
    )
