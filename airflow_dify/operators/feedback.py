"""DifyFeedbackOperator: analysts' verdicts in the results table -> Dify message feedback."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_dify.batch.errors import FeedbackStoppedError
from airflow_dify.batch.feedback import FeedbackSummary, send_feedback
from airflow_dify.hooks.dify import DifyHook
from airflow_dify.operators.connect import hook_dialect, sql_hook_for
from airflow_dify.outcome import ResultColumns
from airflow_dify.sql.reviews import ReviewColumns, ReviewTable

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["DifyFeedbackOperator", "FeedbackStoppedError"]


class DifyFeedbackOperator(BaseOperator):
    """Send the verdicts analysts wrote next to the answers back to Dify, each new or changed one once.

    Analysts set ``review_verdict`` (``like`` | ``dislike``; any case) and optionally
    ``review_note`` on answered rows; each run sends every verdict whose verdict + note differs
    from what it last sent (``POST /messages/{message_id}/feedbacks`` as the ``user`` who asked),
    records it in ``feedback_sent`` / ``feedback_sent_at``, and skips the rest, so re-runs send
    nothing new. Clearing a sent verdict revokes it (``rating: null``). Rows of a workflow app
    (no message to rate) or without an answer are counted as ``not_reviewable`` and named in the
    log. A deleted message (404) fails only its row (``feedback_error``); refused credentials
    stop the task at once; transient errors are retried with the connection's retry policy.

    The review columns are created when missing, in the table that holds the results.

    :param table: the table or view the batch answered (``schema.table`` allowed).
    :param sql_conn_id: the common-sql connection of the table.
    :param dify_conn_id: the ``dify`` connection of the app that answered.
    :param results_table: the results (and so the reviews) live there, as for the batch.
    :param id_column: the unique key of the rows.
    :param user: the Dify end-user id the answers were generated for; default ``airflow-<dag_id>``,
        the batch operator's default (Dify scopes each message to its user).
    :param user_per_row: the batch ran with ``user_per_row=True`` (each row asked as
        ``<user>-<row id>``): each feedback is sent as that row's user.
    :param review_columns: rename review columns, e.g. ``{"review_verdict": "verdict"}``; keys
        ``review_verdict``, ``review_note``, ``feedback_sent_at``, ``feedback_sent``, ``feedback_error``.
    :param result_columns: the batch's renamed result columns, if any (``message_id`` is read).
    :param max_concurrency: feedbacks in flight at once (may only tighten the connection's limit).
    :param chunk_size: rows per read page (recorded one transaction per page).
    :param where: extra SQL filter, as for the batch (on ``table`` when results live apart).
    :param where_parameters: bound parameters for ``where``.
    """

    template_fields: Sequence[str] = (
        "table",
        "results_table",
        "sql_conn_id",
        "dify_conn_id",
        "user",
        "where",
        "where_parameters",
    )
    template_fields_renderers = {"where": "sql", "where_parameters": "json"}
    ui_color = "#eaf7ea"
    ui_fgcolor = "#1f5a2a"

    def __init__(
        self,
        *,
        table: str,
        sql_conn_id: str,
        dify_conn_id: str = DifyHook.default_conn_name,
        results_table: str | None = None,
        id_column: str = "id",
        user: str | None = None,
        user_per_row: bool = False,
        review_columns: Mapping[str, str] | None = None,
        result_columns: Mapping[str, str] | None = None,
        max_concurrency: int = 4,
        chunk_size: int = 100,
        where: str | None = None,
        where_parameters: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.table = table
        self.sql_conn_id = sql_conn_id
        self.dify_conn_id = dify_conn_id
        self.results_table = results_table
        self.id_column = id_column
        self.user = user
        self.user_per_row = user_per_row
        self.where = where
        self.where_parameters = where_parameters
        # Bad names and numbers fail at parse time, naming the argument.
        self.review_columns = ReviewColumns.with_overrides(dict(review_columns or {}))
        self.result_columns = ResultColumns.with_overrides(dict(result_columns or {}))
        for name, value in (("max_concurrency", max_concurrency), ("chunk_size", chunk_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        self.max_concurrency = max_concurrency
        self.chunk_size = chunk_size

    def __repr__(self) -> str:
        where = f"{self.sql_conn_id}:{self.results_table or self.table}"
        return f"<{type(self).__name__} {self.task_id!r}: {where} -> {self.dify_conn_id}>"

    @cached_property
    def dify_hook(self) -> DifyHook:
        return DifyHook(dify_conn_id=self.dify_conn_id)

    @cached_property
    def sql_hook(self) -> Any:
        return sql_hook_for(self.sql_conn_id)

    def _reviews(self) -> ReviewTable:
        return ReviewTable(
            self.sql_hook.get_conn,
            self.table,
            dialect=hook_dialect(self.sql_hook),
            id_column=self.id_column,
            results_table=self.results_table,
            result_columns=self.result_columns,
            columns=self.review_columns,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        hook = self.dify_hook
        limit = hook.settings.max_concurrency
        concurrency = min(self.max_concurrency, limit) if limit else self.max_concurrency
        try:
            client = hook.get_client(pool_size=concurrency)
            with self._reviews() as reviews:
                summary = send_feedback(
                    reviews,
                    client,
                    user=self.user or f"airflow-{context['dag'].dag_id}",
                    user_per_row=self.user_per_row,
                    max_concurrency=concurrency,
                    page_size=self.chunk_size,
                    where=self.where,
                    where_parameters=self.where_parameters,
                    logger=self.log,
                )
        except FeedbackStoppedError as err:
            self._push(context, err.summary)
            raise
        finally:
            hook.close()
        return self._push(context, summary)

    def _push(self, context: Context, summary: FeedbackSummary) -> dict[str, Any]:
        result = summary.to_dict()
        context["ti"].xcom_push(key="summary", value=result)
        return result
