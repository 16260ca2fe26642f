"""The Dify side of a batch task: the connection's client under its shared rate-limit pool."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow.sdk import BaseHook

from airflow_dify.batch.options import DEFAULT_MAX_CONCURRENCY, BatchOptions
from airflow_dify.client import DifyClient
from airflow_dify.hooks.dify import DifyHook
from airflow_dify.sql.dialects import dialect_for


@contextmanager
def batch_client(hook: DifyHook, options: BatchOptions) -> Iterator[tuple[DifyClient, BatchOptions]]:
    """A client whose every attempt draws on the connection's pool, and the options as they apply.

    The pool is the connection's budget tightened (never loosened) by the options; the options
    come back with the concurrency the pool allows and the connection's ``app_mode`` when the
    caller gave none. Client and pool are closed on exit.
    """
    pool = hook.get_pool(
        max_concurrency=options.max_concurrency,
        requests_per_minute=options.requests_per_minute,
        tokens_per_minute=options.tokens_per_minute,
        pool_name=options.pool_name,
    )
    try:
        concurrency = pool.settings.max_concurrency or DEFAULT_MAX_CONCURRENCY
        client = hook.get_client(
            pool=pool, pool_size=concurrency, resend_maybe_billed=options.resend_maybe_billed
        )
        yield (
            client,
            options.replace(max_concurrency=concurrency, app_mode=options.app_mode or hook.settings.app_mode),
        )
    finally:
        hook.close()
        pool.close()


def hook_dialect(hook: Any) -> str:
    """The SQL dialect (``sqlite``, ``postgres``, ``mysql``, ``generic``) of a common-sql hook."""
    return dialect_for(getattr(hook, "conn_type", None))


def sql_hook_for(sql_conn_id: str) -> Any:
    """The common-sql hook of ``sql_conn_id``; TypeError when it is not a SQL (DbApiHook) connection."""
    hook = BaseHook.get_connection(sql_conn_id).get_hook()
    if not hasattr(hook, "get_conn") or not hasattr(hook, "get_records"):
        raise TypeError(f"sql_conn_id {sql_conn_id!r} is not a SQL (DbApiHook) connection")
    return hook
