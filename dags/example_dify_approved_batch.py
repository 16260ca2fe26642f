"""Estimate, approve, then spend: a pilot sample, a human approval, the full batch under a cap.

1. ``estimate`` (:class:`~airflow_dify.operators.estimate.DifyEstimateOperator`) answers a random
   sample of the pending tickets (kept: the batch skips them) and projects the tokens and price of
   the rest with a 90 % interval (per-row cost ~ prompt length, bootstrap).
2. ``approve`` (Airflow's ``ApprovalOperator``, Airflow >= 3.1) shows the projection and the
   sample's answers under "Required actions" in the UI (or ``PATCH .../hitlDetails`` through the
   REST API). Nobody answering within a day counts as "Reject".
3. ``classify_tickets`` runs only when approved, with ``max_total_price`` = the interval's upper
   bound x ``margin`` (a DAG param, 1.2 by default): past it no call starts. Rejected: the batch is
   skipped, no further call is made and the rows stay pending.

Connections (as in example_dify_batch.py): ``dify_default`` (type ``dify``) and ``support_db``
(any SQL connection holding ``support_tickets``: id, subject, body). The table name can be set
with the ``DIFY_APPROVED_TABLE`` env var (read at parse time).
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Param

from airflow_dify.batch.estimate import price_cap
from airflow_dify.operators.dify import DifyBatchOperator
from airflow_dify.operators.estimate import DifyEstimateOperator

TABLE = os.environ.get("DIFY_APPROVED_TABLE", "support_tickets")
#: One set of arguments for both tasks: the estimate samples exactly what the batch would do.
BATCH = {
    "sql_conn_id": "support_db",
    "dify_conn_id": "dify_default",
    "table": TABLE,
    "id_column": "id",
    "query_template": (
        "Classify this support ticket as billing, bug, account or other. Subject: {subject}. Body: {body}"
    ),
    "app_mode": "chat",
    "max_concurrency": 8,
    "chunk_size": 100,
    "max_failed_ratio": 0.02,
}
ESTIMATE = "{% set e = ti.xcom_pull(task_ids='estimate') %}"
PCT = "{% set pct = (e.confidence * 100) | round | int %}"
BODY = (
    ESTIMATE
    + PCT
    + """
**{{ e.pending }}** rows still to answer in `"""
    + TABLE
    + """`, after a sample of **{{ e.sampled }}** (already answered, {{ e.sample_price }} {{ e.currency }}).

| | price ({{ e.currency }}) | tokens |
|---|---|---|
| projected for the rest | **{{ e.projected_price }}** | {{ e.projected_tokens }} |
| {{ pct }} % interval | {{ e.low }} – {{ e.high }} | {{ e.tokens_low }} – {{ e.tokens_high }} |
| with the sample | {{ e.projected_total_price }} | {{ e.projected_total_tokens }} |

Approving runs the batch with `max_total_price` = {{ e.high }} x {{ params.margin }}
= **{{ price_cap(e.high, params.margin) }} {{ e.currency }}** (no call starts past it).

Model: {{ e.model }} (per-row price and tokens ~ prompt length), {{ e.interval_method }}.

Sample answers:

| id | prompt | answer |
|---|---|---|
{% for a in e.answers %}| {{ a.id }} | {{ a.prompt | cell }} | {{ a.answer | cell }} |
{% endfor %}"""
)

with DAG(
    dag_id="example_dify_approved_batch",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={"margin": Param(1.2, type="number", minimum=1.0, description="cap = upper bound x margin")},
    user_defined_macros={"price_cap": price_cap},
    user_defined_filters={"cell": lambda text: str(text).replace("|", "/")},  # a markdown table cell
    tags=["dify", "example", "approval"],
    doc_md=__doc__,
):
    estimate = DifyEstimateOperator(task_id="estimate", sample_rows=50, confidence=0.9, **BATCH)
    approve = ApprovalOperator(
        task_id="approve",
        subject=ESTIMATE + "Spend about {{ e.projected_price }} {{ e.currency }} on {{ e.pending }} rows?",
        body=BODY,
        defaults="Reject",
        response_timeout=dt.timedelta(days=1),
    )
    batch = DifyBatchOperator(
        task_id="classify_tickets",
        max_total_price="{{ price_cap(ti.xcom_pull(task_ids='estimate')['high'], params.margin) }}",
        **BATCH,
    )
    estimate >> approve >> batch
