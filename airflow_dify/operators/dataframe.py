"""``dify_answer_dataframe``: the DataFrame path from inside a ``@task``, with the connection's pool.

::

    @task
    def classify(df: pd.DataFrame) -> pd.DataFrame:
        return dify_answer_dataframe(df, dify_conn_id="dify_default", query_column="text")

It builds the client and the shared rate-limit pool from :class:`DifyHook` exactly like
:class:`DifyBatchOperator` (same pool key, retries and budgets), runs the one batch path over the
frame, logs the summary and, inside a task, pushes it to XCom under ``summary`` (the operator's key).
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from airflow_dify.batch.dataframe import FrameRows
from airflow_dify.batch.options import BatchOptions
from airflow_dify.batch.run import run_batch
from airflow_dify.hooks.dify import DifyHook
from airflow_dify.operators.connect import batch_client
from airflow_dify.operators.errors import raise_for_summary

log = logging.getLogger("airflow_dify.operators.dataframe")


def _task_context() -> Any:
    """The running task's context, or None outside a task (plain script, notebook)."""
    try:
        from airflow.sdk import get_current_context

        return get_current_context()
    except Exception:  # noqa: BLE001 - no context is a normal case, not an error
        return None


def dify_answer_dataframe(
    df: pd.DataFrame,
    dify_conn_id: str = DifyHook.default_conn_name,
    *,
    max_failed_ratio: float | None = None,
    return_summary: bool = False,
    **options: Any,
) -> pd.DataFrame | tuple[pd.DataFrame, dict[str, Any]]:
    """Answer every row of ``df`` through the ``dify`` connection; return the frame with results.

    :param options: any :class:`~airflow_dify.batch.options.BatchOptions` field, as for
        :class:`~airflow_dify.operators.dify.DifyBatchOperator` (the limits may only tighten the
        connection's); default chunks of 1,000 rows, user ``airflow-<dag_id>``.
    :param max_failed_ratio: raise :class:`DifyBatchFailedError` when failed/processed exceeds it.
        Default None: never raise, because raising would discard answers already paid for; check
        the ``status`` column instead (the summary is in XCom either way).
    :param return_summary: return ``(frame, summary dict)`` instead of the frame.
    """
    context = _task_context()
    if options.get("user") is None:
        dag_id = getattr(context.get("dag"), "dag_id", None) if context else None
        options["user"] = f"airflow-{dag_id}" if dag_id else "airflow-dify"
    wanted = BatchOptions(**{"chunk_size": 1000, **options, "max_failed_ratio": max_failed_ratio})
    rows = FrameRows(df, wanted.result_columns)
    with batch_client(DifyHook(dify_conn_id=dify_conn_id), wanted) as (client, run_options):
        summary = run_batch(rows, rows, client, run_options, logger=log)
    result = summary.to_dict()
    log.info("Dify DataFrame batch summary: %s", result)
    if context is not None and "ti" in context:
        context["ti"].xcom_push(key="summary", value=result)
    raise_for_summary(summary, max_failed_ratio)
    out = rows.result_frame()
    return (out, result) if return_summary else out


__all__ = ["dify_answer_dataframe"]
