"""DifyBatchOperator: prompt rows of a SQL table -> Dify -> answers, usage and cost in the same table."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseHook, BaseOperator

from airflow_dify.batch.commits import DEFAULT_COMMIT_ROWS, DEFAULT_COMMIT_SECONDS
from airflow_dify.batch.engine import StopSignal
from airflow_dify.batch.options import DEFAULT_MAX_PROMPT_CHARS, BatchOptions, option_names, shard_from
from airflow_dify.batch.run import run_batch
from airflow_dify.batch.summary import BatchSummary
from airflow_dify.batch.trace import task_prefix
from airflow_dify.hooks.dify import DifyHook
from airflow_dify.operators.connect import batch_client, hook_dialect, sql_hook_for
from airflow_dify.operators.errors import DifyBatchFailedError, DifyBatchKilledError, raise_for_summary
from airflow_dify.operators.files import open_object_storage
from airflow_dify.operators.lineage import default_outlets, operator_lineage, table_ref
from airflow_dify.sql.claims import ClaimOwner
from airflow_dify.sql.ledger import DEFAULT_LEDGER_TABLE, LedgerContext
from airflow_dify.sql.table import SqlTable

if TYPE_CHECKING:
    from airflow.sdk import Context


__all__ = ["DifyBatchFailedError", "DifyBatchKilledError", "DifyBatchOperator"]


class DifyBatchOperator(BaseOperator):
    """Answer every pending row of a SQL table with a Dify app and write the results back.

    Rows are read in keyset-paged chunks, called concurrently under the connection's shared
    rate-limit pool, and written back as they complete, so a re-run resumes where the last stopped.

    Lineage: unless ``outlets`` is given, the table is declared as an outlet Asset (URI from the SQL
    connection, e.g. ``postgres://host:5432/db/public/prompts``; see
    :func:`airflow_dify.operators.lineage.dify_answers_asset`) and each successful run emits an
    asset event whose ``extra`` is the run summary. ``outlets=[]`` opts out (no connection lookup
    at parse time). With the openlineage provider installed, the table is reported as input and
    output with the summary as the ``difyBatch`` run facet.

    Killing the task (SIGTERM, ``execution_timeout``) stops new calls; calls already running finish
    and are saved, unstarted rows stay pending, and the task fails so a retry resumes.

    :param table: table or view holding the prompts (``schema.table`` allowed); results are written
        to it unless ``results_table`` is given.
    :param results_table: write results to this table of the same connection instead (created when
        missing, keyed by ``id_column``); ``table`` is then only read and may be a view, a dbt model
        or a table you do not own.
    :param sql_conn_id: any common-sql connection (SQLite, PostgreSQL, ...).
    :param dify_conn_id: the ``dify`` connection (API base URL + key or OAuth2).
    :param id_column: unique, non-NULL key used for paging and updates.
    :param query_column: column holding the chat/completion query.
    :param query_template: alternative to ``query_column``: a per-row template, Jinja
        (``{{ title }}: {{ body }}``) or ``str.format`` (``{title}: {body}``) over the row's columns.
    :param input_columns: Dify input variable -> column, sent as ``inputs`` (required for workflows).
    :param file_columns: Dify file input variable -> column holding an ``http(s)`` URL (sent as
        ``remote_url``), a local path or an object-storage path (``s3://``, ``gs://``, ``abfs://``,
        read through ``ObjectStoragePath``) or the bytes (BLOB), or a list of them (JSON array) for
        a ``file-list`` input; files are checked against GET /parameters, then uploaded once
        (``POST /files/upload``) under the row's user and sent as ``local_file``.
    :param app_mode: ``chat`` | ``completion`` | ``workflow``; default: the connection's, else GET /info.
    :param user: Dify end-user id sent with every call; default ``airflow-<dag_id>``.
    :param max_concurrency: concurrent calls (may only tighten the connection's limit).
    :param requests_per_minute: request budget (may only tighten the connection's limit).
    :param tokens_per_minute: token budget (may only tighten the connection's limit).
    :param pool_name: share a budget by name instead of by connection identity.
    :param chunk_size: rows per read page.
    :param redo: ``pending`` (status NULL), ``failed`` (also failed rows, default), ``all``, or
        ``changed`` (pending rows plus rows whose query/inputs changed since answered: ``input_hash``).
    :param where: extra SQL filter, e.g. ``"lang = ?"`` (the SQL connection's paramstyle).
    :param where_parameters: bound parameters for ``where`` (list, or dict for named style).
    :param result_columns: rename result columns, e.g. ``{"answer": "raw_answer"}``.
    :param output_columns: answers as typed columns: output name -> column. For workflow apps the
        names are keys of the workflow's outputs; for chat/completion apps the answer is parsed as
        JSON (a fenced ```json block too). ``"scores.risk"`` reaches into objects.
    :param output_schema: a JSON Schema subset (an object whose ``properties`` are string,
        integer, number, boolean, array or object; ``required``; ``enum``) that types the output
        columns and validates every answer. An answer that does not fit fails its row, naming the
        field; its raw text stays in ``answer`` and ``redo="failed"`` asks again. Without
        ``output_columns`` every property becomes a column of its own name.
    :param workflow_id: run this published version of a workflow or chatflow app; stored per row
        and part of ``input_hash``, so switching it makes every row "changed".
    :param max_failed_ratio: fail the task when failed/processed rows exceeds this (0 = any failure).
    :param max_prompt_chars: longer prompts fail their row without a call.
    :param null_as: render NULL template or input values as this text; default None: a row with a
        NULL in a column it sends fails without a call, naming the column.
    :param max_total_tokens: budget cap: no call starts once the next one could cross it; the
        rest stay pending and the summary says ``stopped: "budget"``.
    :param max_total_price: the same cap in money (the app's currency), as a decimal string or number.
    :param shard_index: with ``shard_count``, process only rows whose integer id modulo
        ``shard_count`` equals ``shard_index``: ``.partial(...).expand(shard_index=[0, 1, 2, 3])``.
    :param shard_count: number of shards the table is split into.
    :param response_mode: ``blocking`` or ``streaming``; default: blocking for chat and completion
        apps, streaming for agent apps (required) and workflows (only their streamed node events
        carry the price, and a broken stream is recovered with GET /workflows/run/{id} instead of
        running the workflow again).
    :param resend_maybe_billed: re-send a call after a timeout/504, when Dify may already have
        run and billed it (default False: the row fails with an error that says so).
    :param outage_seconds: stop when no call has reached Dify for this many seconds; the rows not
        answered stay pending and the task fails naming the cause (also on a revoked key, a
        disabled app or an exhausted quota, which stop it at once).
    :param user_per_row: chat apps: each row asks Dify as its own end user ``<user>-<row id>``, so
        a call that timed out (504/524, read timeout, broken stream) is found with GET
        /conversations + GET /messages and stored with its exact price instead of being asked
        (and paid) again; only a call Dify has no record of fails as "maybe billed". Give
        DifyFeedbackOperator the same setting.
    :param citations_column: RAG apps: store each answer's ``retriever_resources`` (document
        name, segment id, score, ...) as JSON in this column (created when missing).
    :param ledger_table: the usage ledger on the same SQL connection: one appended row per call
        Dify billed or may have billed (task try, row id, message/run id, tokens, exact price,
        outcome), written in the same transaction as the row's result; created when missing.
        Spend stays exact after answers are replaced. None: no ledger.
    :param commit_rows: answered rows written per transaction (default 64).
    :param commit_seconds: an answer waits at most this long to be written (default 0.5 s). A
        crash (even SIGKILL) loses at most ``max_concurrency + commit_rows - 1`` answers, reported
        as the summary's ``crash_bound``; the next run asks those rows again (``user_per_row``:
        looks them up instead).
    """

    template_fields: Sequence[str] = (
        "table",
        "results_table",
        "sql_conn_id",
        "dify_conn_id",
        "where",
        "where_parameters",
        "input_columns",
        "file_columns",
        "user",
        "shard_index",
        "shard_count",
        "workflow_id",
        "ledger_table",
        # A cap from an upstream task, e.g. an approved estimate (dags/example_dify_approved_batch.py).
        "max_total_price",
    )
    template_fields_renderers = {
        "where": "sql",
        "input_columns": "json",
        "file_columns": "json",
        "where_parameters": "json",
    }
    ui_color = "#e6f0ff"
    ui_fgcolor = "#1c3d7a"

    def __init__(
        self,
        *,
        table: str,
        sql_conn_id: str,
        dify_conn_id: str = DifyHook.default_conn_name,
        results_table: str | None = None,
        id_column: str = "id",
        query_column: str | None = "prompt",
        query_template: str | None = None,
        input_columns: Mapping[str, str] | None = None,
        file_columns: Mapping[str, str] | None = None,
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
        output_columns: Mapping[str, str] | None = None,
        output_schema: Mapping[str, Any] | None = None,
        workflow_id: str | None = None,
        max_failed_ratio: float = 0.0,
        max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
        null_as: str | None = None,
        max_total_tokens: int | None = None,
        max_total_price: str | float | Decimal | None = None,
        shard_index: int | None = None,
        shard_count: int | None = None,
        response_mode: str | None = None,
        resend_maybe_billed: bool = False,
        outage_seconds: float = 60.0,
        ledger_table: str | None = DEFAULT_LEDGER_TABLE,
        user_per_row: bool = False,
        citations_column: str | None = None,
        commit_rows: int = DEFAULT_COMMIT_ROWS,
        commit_seconds: float = DEFAULT_COMMIT_SECONDS,
        **kwargs: Any,
    ) -> None:
        if "outlets" not in kwargs:  # an explicit outlets (even []) wins over the derived Asset
            kwargs["outlets"] = default_outlets(sql_conn_id, table)
        super().__init__(**kwargs)
        self.table = table
        self.results_table = results_table
        self.sql_conn_id = sql_conn_id
        self.dify_conn_id = dify_conn_id
        self.id_column = id_column
        self.ledger_table = ledger_table
        self.shard_index = shard_index
        self.shard_count = shard_count
        # Every other argument is a BatchOptions field, kept under its own name for templating.
        arguments = locals()
        for name in _OPTION_ARGUMENTS:
            setattr(self, name, arguments[name])
        self.input_columns = dict(input_columns or {})
        self.file_columns = dict(file_columns or {})
        self._options(None)  # bad arguments fail at parse time, naming the argument
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
        return sql_hook_for(self.sql_conn_id)

    def _options(self, context: Context | None) -> BatchOptions:
        """The run's options from the (rendered) arguments; before rendering, templated ones wait."""
        values = {name: getattr(self, name) for name in _OPTION_ARGUMENTS}
        if context is None:
            values = {k: v for k, v in values.items() if k not in self.template_fields}
            return BatchOptions(**values)
        values["user"] = values["user"] or f"airflow-{context['dag'].dag_id}"
        values["shard"] = shard_from(self.shard_index, self.shard_count)
        ti = context["ti"]
        map_index = ti.map_index if ti.map_index is not None else -1
        values["trace_prefix"] = task_prefix(ti.dag_id, ti.task_id, ti.run_id, map_index, ti.try_number)
        values["file_opener"] = open_object_storage  # s3://, gs://, ... paths of file_columns
        return BatchOptions(**values)

    def _table(self, context: Context) -> SqlTable:
        dialect = hook_dialect(self.sql_hook)
        ti = context["ti"]
        # Claims are owned by this task instance: its next try takes over what a crashed try held.
        map_index = ti.map_index if ti.map_index is not None else -1
        owner = ClaimOwner.for_task(ti.dag_id, ti.task_id, ti.run_id, map_index, ti.try_number)
        return SqlTable(
            self.sql_hook.get_conn,
            self.table,
            dialect=dialect,
            id_column=self.id_column,
            columns=self._options(None).result_columns,
            results_table=self.results_table,
            owner=owner,
            ledger_table=self.ledger_table or None,
            ledger_context=LedgerContext(
                dag_id=ti.dag_id,
                run_id=ti.run_id,
                task_id=ti.task_id,
                map_index=map_index,
                try_number=ti.try_number,
            ),
        )

    def execute(self, context: Context) -> dict[str, Any]:
        with (
            batch_client(self.dify_hook, self._options(context)) as (client, options),
            self._table(context) as table,
        ):
            summary = run_batch(table, table, client, options, stop=self._stop, logger=self.log)
        return self._report(context, summary, options)

    def _report(self, context: Context, summary: BatchSummary, options: BatchOptions) -> dict[str, Any]:
        """Summary to XCom (also when failing), the verdict, then the asset events."""
        result = summary.to_dict()
        self._summary = result
        context["ti"].xcom_push(key="summary", value=result)
        if summary.stopped == "budget":
            self.log.warning(
                "Stopped on budget (%s): %s rows left pending; raise the cap or re-run to continue.",
                summary.stopped_reason,
                f"{summary.rows_selected - summary.processed:,}",
            )
        raise_for_summary(summary, options.max_failed_ratio)
        for outlet in self.outlets:
            if isinstance(outlet, Asset):  # consumers (e.g. a cost report) read the totals from the event
                context["outlet_events"][outlet].extra = dict(result)
        return result

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


#: Arguments that are BatchOptions fields, kept as attributes of the same name (templating renders them).
_OPTION_ARGUMENTS = tuple(
    name for name in inspect.signature(DifyBatchOperator.__init__).parameters if name in option_names()
)
