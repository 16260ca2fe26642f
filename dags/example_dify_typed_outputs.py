"""Triage support tickets into typed columns: category, priority, needs_human, summary, tags.

The Dify chat app is prompted to answer with one JSON object; ``output_schema`` turns its fields
into typed columns of ``support_tickets_triage`` (created next to the read-only source table) and
checks every answer. An answer that is not valid JSON, misses ``category`` or says ``"priority":
"high"`` fails its row with the field named; the raw answer stays in ``answer`` (it was paid for)
and the next run asks again (``redo="failed"``). Connections: ``dify_default`` (type ``dify``) and
``support_db`` (any SQL connection with ``support_tickets(id, subject, body)``).

For a Dify *workflow* app, the same ``output_schema`` maps the workflow's outputs (``data.outputs``,
or the one object an LLM node's structured output returns) instead of parsing the answer.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from airflow_dify.operators.dify import DifyBatchOperator

TRIAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "bug", "account", "other"]},
        "priority": {"type": "integer"},  # 1 (urgent) .. 4 (whenever)
        "needs_human": {"type": "boolean"},
        "summary": {"type": "string"},
        "tags": {"type": "array"},
    },
    "required": ["category", "priority"],
}

PROMPT = (
    "Triage this support ticket. Answer with only a JSON object with the keys category (billing, "
    "bug, account or other), priority (1-4, 1 = urgent), needs_human (true/false), summary (one "
    "sentence) and tags (a list of short words).\nSubject: {subject}\nBody: {body}"
)

with DAG(
    dag_id="example_dify_typed_outputs",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    tags=["dify", "example"],
    doc_md=__doc__,
) as dag:
    DifyBatchOperator(
        task_id="triage_tickets",
        sql_conn_id="support_db",
        dify_conn_id="dify_default",
        table="support_tickets",
        results_table="support_tickets_triage",
        query_template=PROMPT,
        output_schema=TRIAGE_SCHEMA,
        max_concurrency=8,
        max_failed_ratio=0.05,  # a few unusable answers do not fail the task; they are re-asked next run
    )
