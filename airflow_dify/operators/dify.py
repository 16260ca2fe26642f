"""DifyBatchOperator: prompt rows of a SQL table -> Dify -> answers, usage and cost in the same table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseHook, BaseOperator

from airflow_dify.batch.budget import BudgetGuard
from airflow_dify.batch.calls import make_row_caller
from airflow_dify.batch.engine import StopSignal
from airflow_dify.batch.outcome import ResultColumns
from airflow_dify.batch.rows import DEFAULT_MAX_PROMPT_CHARS, PromptBuilder
from airflow_dify.batch.runner import run_table_batch
from airflow_dify.batch.sql_table import SqlTable
from airflow_dify.client.models import MODE_FAMILY
from airflow_dify.errors import AirflowDifyError
from airflow_dify.hooks.dify import DifyHook
from airflow_dify.operators.lineage import default_outlets, operator_lineage, table_ref

if TYPE_CHECKING:
    from airflow.sdk import Context

REDO_MODES = ("pending", "failed", "all", "changed")
DEFAULT_MAX_CONCURRENCY = 8
_DIALECTS = {"sqlite": "sqlite", "postgres": "postgres", "postgresql": "postgres"}


class DifyBatchFailedError(AirflowDifyError, RuntimeError):
    """Too many rows failed; their results are already written back."""


class DifyBatchKilledError(AirflowDifyError, RuntimeError):
    """The task was killed mid-run; finished rows are saved, the rest stay pending for a retry."""


class DifyBatchOperator(BaseOperator):
    """Answer every pending row of a SQL table with a Dify app and write the results back.

    Rows are read in keyset-paged chunks, called concurrently under the connection's shared
    rate-limit pool, and written back chunk by chunk, so a re-run resumes where the last stopped.

    Lineage: unless ``outlets`` is given, the table is declared as an outlet Asset (URI from the SQL
    connection, e.g. ``postgres://host:5432/db/public/prompts``; see
    :func:`airflow_dify.operators.lineage.dify_answers_asset`) and each successful run emits an
    asset event whose ``extra`` is the run summary. ``outlets=[]`` opts out (no connection lookup
    at parse time). With the openlineage provider installed, the table is reported as input and
    output with the summary as the ``difyBatch`` run facet.

    Killing the task (SIGTERM, ``execution_timeout``) stops new calls; calls already running finish
    and are saved, unstarted rows stay pending, and the task fails so a retry resumes.

    :param table: table holding the prompts (``schema.table`` allowed); results are written to it.
    :param sql_conn_id: any common-sql connection (SQLite, PostgreSQL, ...).
    :param dify_conn_id: the ``dify`` connection (API base URL + key or OAuth2).
    :param id_column: unique, non-NULL key used for paging and updates.
    :param query_column: column holding the chat/completion query.
    :param query_template: alternative to ``query_column``: a per-row template, Jinja
        (``{{ title }}: {{ body }}``) or ``str.format`` (``{title}: {body}``) over the row's columns.
    :param input_columns: Dify input variable -> column, sent as ``inputs`` (required for workflows).
    :param app_mode: ``chat`` | ``completion`` | ``workflow``; default: the connection's, else GET /info.
    :param user: Dify end-user id sent with every call; default ``airflow-<dag_id>``.
    :param max_concurrency: concurrent calls (may only tighten the connection's limit).
    :param requests_per_minute: request budget (may only tighten the connection's limit).
    :param tokens_per_minute: token budget (may only tighten the connection's limit).
    :param pool_name: share a budget by name instead of by connection identity.
    :param chunk_size: rows per read page and per write-back transaction.
    :param redo: ``pending`` (status NULL), ``failed`` (also failed rows, default), ``all``, or
        ``changed`` (pending rows plus rows whose query/inputs changed since answered: ``input_hash``).
    :param where: extra SQL filter, e.g. ``"lang = ?"`` (the SQL connection's paramstyle).
    :param where_parameters: bound parameters for ``where`` (list, or dict for named style).
    :param result_columns: rename result columns, e.g. ``{"answer": "category"}``.
    :param max_failed_ratio: fail the task when failed/processed rows exceeds this (0 = any failure).
    :param max_prompt_chars: longer prompts fail their row without a call.
    :param max_total_tokens: budget cap: no call starts once the next one could cross it; the
        rest stay pending and the summary says ``stopped: "budget"``.
    :param max_total_price: the same cap in money (the app's currency), as a decimal string or number.
    :param shard_index: with ``shard_count``, process only rows whose integer id modulo
        ``shard_count`` equals ``shard_index``: ``.partial(...).expand(shard_index=[0, 1, 2, 3])``.
    :param shard_count: number of shards the table is split into.
    :param response_mode: ``blocking`` (default; streaming for agent apps) or ``streaming``:
        recommended for workflows that may outlive a gateway's ~60 s timeout, because a broken
        stream is recovered with GET /workflows/run/{id} instead of running the workflow again.
    :param resend_maybe_billed: re-send a call after a timeout/504, when Dify may already have
        run and billed it (default False: the row fails with an error that says so).
    """

    template_fields: Sequence[str] = (
        "table",
        "sql_conn_id",
        "dify_conn_id",
        "where",
        "where_parameters",
        "input_columns",
        "user",
        "shard_index",
        "shard_count",
    )
    template_fields_renderers = {"where": "sql", "input_columns": "json", "where_parameters": "json"}
    ui_color = "#e6f0ff"
    ui_fgcolor = "#1c3d7a"

    def __init__(
        self,
        *,
        table: str,
        sql_conn_id: str,
        dify_conn_id: str = DifyHook.default_conn_name,
        id_column: str = "id",
        query_column: str | None = "prompt",
        query_template: str | None = None,
        input_columns: Mapping[str, str] | None = None,
        app_mode: str | None = None,
        user: str | None = None,
        max_concurrency: int | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: int | None = None,
        pool_name: str | None = None,
        chunk_size: int = 100,
        redo: str = "failed",
        where: str | None = None,
        where_parameters: Any = None,
        result_columns: Mapping[str, str] | None = None,
        max_failed_ratio: float = 0.0,
        max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
        max_total_tokens: int | None = None,
        max_total_price: str | float | Decimal | None = None,
        shard_index: int | None = None,
        shard_count: int | None = None,
        response_mode: str | None = None,
        resend_maybe_billed: bool = False,
        **kwargs: Any,
    ) -> None:
        if "outlets" not in kwargs:  # an explicit outlets (even []) wins over the derived Asset
            kwargs["outlets"] = default_outlets(sql_conn_id, table)
        super().__init__(**kwargs)
        if redo not in REDO_MODES:
            raise ValueError(f"redo must be one of {', '.join(REDO_MODES)}, got {redo!r}")
        if app_mode is not None and app_mode not in MODE_FAMILY:
            raise ValueError(f"app_mode must be one of chat, completion, workflow, got {app_mode!r}")
        if not 0.0 <= max_failed_ratio <= 1.0:
            raise ValueError(f"max_failed_ratio must be between 0 and 1, got {max_failed_ratio}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.table = table
        self.sql_conn_id = sql_conn_id
        self.dify_conn_id = dify_conn_id
        self.id_column = id_column
        self.query_column = query_column
        self.query_template = query_template
        self.input_columns = dict(input_columns or {})
        self.app_mode = app_mode
        self.user = user
        self.max_concurrency = max_concurrency
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.pool_name = pool_name
        self.chunk_size = chunk_size
        self.redo = redo
        self.where = where
        self.where_parameters = where_parameters
        self.result_columns = ResultColumns.with_overrides(result_columns)
        self.max_failed_ratio = max_failed_ratio
        self.max_prompt_chars = max_prompt_chars
        self.max_total_tokens = max_total_tokens
        self.max_total_price = str(max_total_price) if max_total_price is not None else None
        self.shard_index = shard_index
        self.shard_count = shard_count
        if response_mode not in (None, "blocking", "streaming"):
            raise ValueError(f"response_mode must be blocking or streaming, got {response_mode!r}")
        self.response_mode = response_mode
        self.resend_maybe_billed = resend_maybe_billed
        self._stop = StopSignal()
        self._summary: dict[str, Any] | None = None

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"<{name} {self.task_id!r}: {self.sql_conn_id}:{self.table} -> {self.dify_conn_id}>"

    @cached_property
    def dify_hook(self) -> DifyHook:
        return DifyHook(dify_conn_id=self.dify_conn_id)

    @cached_property
    def sql_hook(self) -> Any:
        hook = BaseHook.get_connection(self.sql_conn_id).get_hook()
        if not hasattr(hook, "get_conn") or not hasattr(hook, "get_records"):
            raise TypeError(f"sql_conn_id {self.sql_conn_id!r} is not a SQL (DbApiHook) connection")
        return hook

    def _dialect(self) -> str:
        conn_type = getattr(self.sql_hook, "conn_type", None) or ""
        return _DIALECTS.get(conn_type, "generic")

    def _mode(self, client: Any) -> str:
        """The app's Dify mode: the argument, else the connection's, else GET /info."""
        mode = self.app_mode or self.dify_hook.settings.app_mode
        if mode is None:
            info = client.info()
            self.log.info("Dify app %r reports mode %r", info.name, info.mode)
            mode = info.mode
        if mode not in MODE_FAMILY:
            raise ValueError(
                f"Dify app mode {mode!r} is not supported (expected one of {sorted(MODE_FAMILY)})"
            )
        return mode

    def execute(self, context: Context) -> dict[str, Any]:
        hook = self.dify_hook
        pool = hook.get_pool(
            max_concurrency=self.max_concurrency,
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
            pool_name=self.pool_name,
        )
        concurrency = pool.settings.max_concurrency or DEFAULT_MAX_CONCURRENCY
        client = hook.get_client(
            pool=pool, pool_size=concurrency, resend_maybe_billed=self.resend_maybe_billed
        )
        table: SqlTable | None = None
        try:
            mode = self._mode(client)
            family = MODE_FAMILY[mode]
            builder = PromptBuilder(
                family=family,
                id_column=self.id_column,
                query_column=self.query_column,
                query_template=self.query_template,
                input_columns=self.input_columns,
                max_prompt_chars=self.max_prompt_chars,
            )
            table = SqlTable(
                self.sql_hook.get_conn,
                self.table,
                dialect=self._dialect(),
                id_column=self.id_column,
                read_columns=builder.read_columns,
                columns=self.result_columns,
                current_hash=builder.current_hash,
            )
            table.validate()
            table.check_unique_ids()
            added = table.ensure_result_columns()
            if added:
                self.log.info("Added result column(s) to %s: %s", self.table, ", ".join(added))
            user = self.user or f"airflow-{context['dag'].dag_id}"
            self.log.info(
                "Dify batch on %s: mode=%s, max_concurrency=%s, rpm=%s, tpm=%s, chunk_size=%s",
                self.table,
                family,
                concurrency,
                pool.settings.requests_per_minute,
                pool.settings.tokens_per_minute,
                self.chunk_size,
            )
            budget = BudgetGuard(
                self.max_total_tokens, Decimal(self.max_total_price) if self.max_total_price else None
            )
            call_row = make_row_caller(
                client, builder, user=user, response_mode=self.response_mode, app_mode=mode
            )
            summary = run_table_batch(
                table,
                budget.wrap(call_row) if budget.active else call_row,
                may_start=budget.may_start if budget.active else None,
                shard=self._shard(),
                max_concurrency=concurrency,
                chunk_size=self.chunk_size,
                redo=self.redo,
                where=self.where,
                where_parameters=self.where_parameters,
                stop=self._stop,
                logger=self.log,
            )
        finally:
            hook.close()
            pool.close()
            if table is not None:
                table.close()
        result = summary.to_dict()
        if self.redo == "changed":
            result["skipped_unchanged"] = table.skipped_unchanged if table is not None else 0
        if summary.stopped == "budget":
            result["stopped_reason"] = budget.reason
        self._summary = result
        context["ti"].xcom_push(key="summary", value=result)
        if summary.stopped == "killed":
            raise DifyBatchKilledError(
                f"Killed: {summary.processed:,} finished row(s) saved, "
                f"{summary.rows_selected - summary.processed:,} left pending for the next try."
            )
        if summary.stopped == "budget":
            self.log.warning(
                "Stopped on budget (%s): %s rows left pending; raise the cap or re-run to continue.",
                budget.reason,
                f"{summary.rows_selected - summary.processed:,}",
            )
        if summary.failed_ratio() > self.max_failed_ratio:
            raise DifyBatchFailedError(
                f"{summary.failed:,} of {summary.processed:,} processed rows failed "
                f"({summary.failed_ratio():.1%} > max_failed_ratio {self.max_failed_ratio:.1%}); "
                f"most common errors: {summary.top_errors()}. Results are saved; re-run to retry failed rows."
            )
        for outlet in self.outlets:
            if isinstance(outlet, Asset):  # consumers (e.g. a cost report) read the totals from the event
                context["outlet_events"][outlet].extra = dict(result)
        return result

    def _shard(self) -> tuple[int, int] | None:
        if self.shard_count is None and self.shard_index is None:
            return None
        if self.shard_count is None or self.shard_index is None:
            raise ValueError("shard_index and shard_count must be given together")
        count, index = int(self.shard_count), int(self.shard_index)
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"shard_index must be in [0, shard_count={count}), got {index}")
        return index, count

    def on_kill(self) -> None:
        """Stop starting calls. Airflow 3 calls this from its SIGTERM handler while execute() runs:
        execute() then saves the calls in flight and raises DifyBatchKilledError."""
        self._stop.stop("killed")

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the table as input and output, the run summary as a run facet."""
        try:
            ref = table_ref(BaseHook.get_connection(self.sql_conn_id), self.table)
        except Exception as err:  # lineage must never fail a finished task
            self.log.warning("No OpenLineage datasets for %s: %s", self.table, type(err).__name__)
            return None
        return operator_lineage(ref, self._summary)
