"""``dify_answer_dataframe``: the DataFrame path from inside a ``@task``, with the connection's pool.

::

    @task
    def classify(df: pd.DataFrame) -> pd.DataFrame:
        return dify_answer_dataframe(df, dify_conn_id="dify_default", query_column="text")

It builds the client and the shared rate-limit pool from :class:`DifyHook` exactly like
:class:`DifyBatchOperator` (same pool key, retries and budgets), runs
:func:`airflow_dify.batch.dataframe.answer_dataframe`, logs the summary and, inside a task, pushes
it to XCom under ``summary`` (the operator's key).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pandas as pd

from airflow_dify.batch.dataframe import answer_dataframe
from airflow_dify.batch.rows import DEFAULT_MAX_PROMPT_CHARS
from airflow_dify.client.models import MODE_FAMILY
from airflow_dify.hooks.dify import DifyHook
from airflow_dify.operators.dify import DEFAULT_MAX_CONCURRENCY, DifyBatchFailedError

log = logging.getLogger("airflow_dify.operators.dataframe")


def _task_context() -> Any:
    """The running task's context, or None outside a task (plain script, notebook)."""
    try:
        from airflow.sdk import get_current_context

        return get_current_context()
    except Exception:  # noqa: BLE001 - no context is a normal case, not an error
        return None


def _resolve_mode(hook: DifyHook, client: Any, app_mode: str | None) -> str:
    mode = app_mode or hook.settings.app_mode
    if mode is None:
        info = client.info()
        log.info("Dify app %r reports mode %r", info.name, info.mode)
        mode = info.mode
    if mode not in MODE_FAMILY:
        raise ValueError(f"Dify app mode {mode!r} is not supported (expected one of {sorted(MODE_FAMILY)})")
    return mode


def dify_answer_dataframe(
    df: pd.DataFrame,
    dify_conn_id: str = DifyHook.default_conn_name,
    *,
    app_mode: str | None = None,
    query_column: str | None = "prompt",
    query_template: str | None = None,
    input_columns: Mapping[str, str] | None = None,
    user: str | None = None,
    max_concurrency: int | None = None,
    requests_per_minute: float | None = None,
    tokens_per_minute: int | None = None,
    pool_name: str | None = None,
    chunk_size: int = 1000,
    redo: str = "failed",
    result_columns: Mapping[str, str] | None = None,
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
    response_mode: str | None = None,
    max_total_tokens: int | None = None,
    max_total_price: str | Decimal | None = None,
    max_failed_ratio: float | None = None,
    return_summary: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, dict[str, Any]]:
    """Answer every row of ``df`` through the ``dify`` connection; return the frame with results.

    Arguments are those of :class:`~airflow_dify.operators.dify.DifyBatchOperator` (the limits may
    only tighten the connection's) and of :func:`~airflow_dify.batch.dataframe.answer_dataframe`.

    :param max_failed_ratio: raise :class:`DifyBatchFailedError` when failed/processed exceeds it.
        Default None: never raise, because raising would discard answers already paid for; check
        the ``status`` column instead (the summary is in XCom either way).
    :param return_summary: return ``(frame, summary dict)`` instead of the frame.
    """
    context = _task_context()
    hook = DifyHook(dify_conn_id=dify_conn_id)
    pool = hook.get_pool(
        max_concurrency=max_concurrency,
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
        pool_name=pool_name,
    )
    concurrency = pool.settings.max_concurrency or DEFAULT_MAX_CONCURRENCY
    try:
        client = hook.get_client(pool=pool, pool_size=concurrency)
        mode = _resolve_mode(hook, client, app_mode)
        if user is None:
            dag_id = getattr(context.get("dag"), "dag_id", None) if context else None
            user = f"airflow-{dag_id}" if dag_id else "airflow-dify"
        out, summary = answer_dataframe(
            df,
            client,
            app_mode=mode,
            query_column=query_column,
            query_template=query_template,
            input_columns=input_columns,
            user=user,
            max_concurrency=concurrency,
            chunk_size=chunk_size,
            redo=redo,
            result_columns=result_columns,
            max_prompt_chars=max_prompt_chars,
            response_mode=response_mode,
            max_total_tokens=max_total_tokens,
            max_total_price=max_total_price,
        )
    finally:
        hook.close()
        pool.close()
    result = summary.to_dict()
    log.info("Dify DataFrame batch summary: %s", result)
    if context is not None and "ti" in context:
        context["ti"].xcom_push(key="summary", value=result)
    if max_failed_ratio is not None and summary.failed_ratio() > max_failed_ratio:
        raise DifyBatchFailedError(
            f"{summary.failed:,} of {summary.processed:,} processed rows failed "
            f"({summary.failed_ratio():.1%} > max_failed_ratio {max_failed_ratio:.1%}); "
            f"most common errors: {summary.top_errors()}."
        )
    return (out, result) if return_summary else out


__all__ = ["dify_answer_dataframe"]
