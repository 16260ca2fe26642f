"""``run_batch``: the one batch path. Rows from a source -> Dify calls under the pool -> a sink.

Every entry point (the operator, the DataFrame functions, the benchmarks) calls this function:
it resolves the app's mode, binds the prompt columns to the source, runs the calls with at most
``max_concurrency`` calls in flight, and writes results in group commits of ``commit_rows`` or
after ``commit_seconds`` (see :mod:`airflow_dify.batch.commits`), so a crash loses at most
``max_concurrency + commit_rows - 1`` answered rows and a slow call never holds finished rows back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from itertools import chain
from typing import Any, Protocol

from airflow_dify.batch.async_twin import async_client_for, check_transport
from airflow_dify.batch.breaker import CircuitBreaker
from airflow_dify.batch.budget import BudgetGuard
from airflow_dify.batch.calls import SupportsCall, make_row_caller
from airflow_dify.batch.collector import quiet_collector
from airflow_dify.batch.commits import GroupCommit, save_margin
from airflow_dify.batch.engine import CallPool, StopSignal
from airflow_dify.batch.errors import PreflightError
from airflow_dify.batch.file_inputs import FileInputs
from airflow_dify.batch.options import BatchOptions
from airflow_dify.batch.preflight import SupportsInfo, preflight_app
from airflow_dify.batch.rows import PromptBuilder
from airflow_dify.batch.summary import BatchSummary, ProgressReporter
from airflow_dify.outcome import RowOutcome

log = logging.getLogger("airflow_dify.batch")
#: Dify modes whose published versions ``workflow_id`` can pin.
VERSIONED_MODES = ("workflow", "advanced-chat")


class RowSource(Protocol):
    """Where prompts come from (a SQL table, a DataFrame)."""

    id_column: str

    @property
    def skipped_unchanged(self) -> int:
        """Rows ``redo="changed"`` read but left alone: their content is unchanged."""

    @property
    def skipped_claimed(self) -> int:
        """Rows passed over because another live run had claimed them."""

    def prepare(
        self,
        read_columns: Sequence[str],
        current_hash: Callable[[Mapping[str, Any]], str | None],
        outputs: Mapping[str, str | None] | None = None,
    ) -> None:
        """Bind the prompt columns, check what can be checked, create the result (and output) columns."""

    def count_todo(self, redo: str, where: str | None, where_parameters: Any, shard: Any) -> int: ...

    def iter_chunks(
        self, chunk_size: int, redo: str, where: str | None, where_parameters: Any, shard: Any
    ) -> Iterator[list[dict[str, Any]]]: ...

    def heartbeat(self) -> None:
        """Called often while the run is alive: renew whatever keeps other runs off our rows."""


class ResultSink(Protocol):
    """Where outcomes go: one call per group commit."""

    def bind_app(self, app_mode: str, workflow_id: str | None) -> None:
        """The app this run calls (after pre-flight), for the usage ledger."""

    def write_results(self, outcomes: Sequence[RowOutcome], ledger_only: Sequence[RowOutcome] = ()) -> None:
        """Store ``outcomes``; ``ledger_only`` rows stay as they are, but their calls may have been
        billed: record those in the usage ledger (in the same transaction)."""


class SupportsBatch(SupportsCall, SupportsInfo, Protocol):
    """What a batch needs of a client: generation calls and the two pre-flight GETs."""


def run_batch(
    source: RowSource,
    sink: ResultSink,
    client: SupportsBatch,
    options: BatchOptions,
    *,
    stop: StopSignal | None = None,
    logger: Any = None,
) -> BatchSummary:
    """Answer every row ``source`` selects for ``options`` and write each outcome to ``sink``.

    Returns the totals of what was saved. Nothing is raised for failed rows (they are outcomes);
    bad settings and unusable tables raise before the first call.
    """
    logger = logger or log
    check_transport(client)
    app, parameters = preflight_app(
        client, options.app_mode, options.input_columns, logger, file_columns=options.file_columns
    )
    files = FileInputs.for_options(client, app.name, parameters, options)
    mode = app.mode
    builder = PromptBuilder.for_options(options, mode, source.id_column, app_name=app.name)
    outputs = options.outputs()
    if options.workflow_id and mode not in VERSIONED_MODES:
        raise PreflightError(
            f"workflow_id is set, but app {app.name!r} is a {mode!r} app, which has no workflow versions "
            f"(only {' and '.join(VERSIONED_MODES)} apps do); drop workflow_id; no row was called"
        )
    columns = dict(outputs.column_kinds())
    if options.citations_column:
        columns[options.citations_column] = "array"  # a JSON column, like an array output
    source.prepare(builder.read_columns, builder.current_hash, outputs=columns)
    sink.bind_app(mode, options.workflow_id)
    logger.info(
        "Dify batch: mode=%s, max_concurrency=%s, chunk_size=%s, redo=%s",
        mode,
        options.concurrency,
        options.chunk_size,
        options.redo,
    )
    budget = BudgetGuard(options.max_total_tokens, options.max_total_price)
    row_options: dict[str, Any] = {
        "user": options.user,
        "response_mode": options.response_mode,
        "app_mode": mode,
        "workflow_id": options.workflow_id,
        "outputs": outputs or None,
        "trace_prefix": options.trace_prefix,
        "user_per_row": options.user_per_row,
        "citations_column": options.citations_column,
        "files": files,
    }
    may_start = budget.may_start if budget.active else None
    aclient, aclose = async_client_for(client, options.concurrency)
    call_row = make_row_caller(aclient, client, builder, **row_options)
    with quiet_collector():
        summary = drive(
            source,
            sink,
            budget.wrap(call_row) if budget.active else call_row,
            options,
            may_start=may_start,
            stop=stop,
            logger=logger,
            on_close=aclose,
        )
    if summary.stopped == "budget":
        summary.stopped_reason = budget.reason
    summary.skipped_claimed = source.skipped_claimed
    if summary.skipped_claimed:
        logger.warning(
            "%s row(s) were claimed by another run and left to it; they are done by that run, or by "
            "the next one once its claims expire",
            f"{summary.skipped_claimed:,}",
        )
    if options.redo == "changed":
        summary.skipped_unchanged = source.skipped_unchanged
        logger.info(
            "redo=changed: %s row(s) unchanged since answered, skipped", f"{source.skipped_unchanged:,}"
        )
    return summary


def drive(
    source: RowSource,
    sink: ResultSink,
    call_row: Any,
    options: BatchOptions,
    *,
    may_start: Callable[[Mapping[str, Any]], bool] | None = None,
    stop: StopSignal | None = None,
    logger: Any = None,
    on_close: Callable[[], Awaitable[None]] | None = None,
) -> BatchSummary:
    """The loop: keep the call pool full, hand completions to the group commit, flush when due.

    Runs on the caller's thread (every SQL read and write happens here); the calls run on the
    pool's event loop. ``on_close`` is awaited there once the calls are over (close sessions).
    """
    logger = logger or log
    stop = stop or StopSignal()
    select = options.selection()
    summary = BatchSummary(rows_selected=source.count_todo(**select))
    logger.info("Selected %s row(s) to process (redo=%s)", f"{summary.rows_selected:,}", options.redo)
    progress = ProgressReporter(logger, summary, options.progress_seconds)
    rows = chain.from_iterable(source.iter_chunks(options.chunk_size, **select))
    summary.crash_bound = options.concurrency + options.commit_rows - 1
    calls: CallPool[Mapping[str, Any]] = CallPool(
        call_row,
        max_concurrency=options.concurrency,
        ahead=options.concurrency,
        unsaved_limit=summary.crash_bound,
        save_margin=save_margin(options.concurrency, options.commit_rows),
        hold=options.commit_seconds / 4,
        stop=stop,
        may_start=may_start,
        urgent=CircuitBreaker.watches,
        on_close=on_close,
    )
    breaker = CircuitBreaker(threshold=options.breaker_threshold, outage_seconds=options.outage_seconds)
    commit = GroupCommit(sink, summary, rows=options.commit_rows, seconds=options.commit_seconds)

    def take(outcomes: list[RowOutcome]) -> None:
        saved, held = [], []  # held back rows stay pending; their calls may be billed
        for o in outcomes:
            if not breaker.holds_back(o):
                saved.append(o)
            elif o.maybe_billed or o.earlier_maybe_billed:
                held.append(o)
        commit.add(saved, held, since=calls.oldest_end)
        calls.release(len(outcomes) - len(saved) - len(held))  # not billed: nothing to save
        summary.left_pending += len(outcomes) - len(saved)
        if breaker.trip is not None:
            stop.stop("breaker")
        calls.resume()  # the breaker has seen every error handed over: calls may start (or drain)

    try:
        while True:
            if not breaker.wary or not calls.outstanding:
                breaker.wary = False  # what was handed over before an error is all back: refill
                calls.fill(rows)
            if calls.finished:
                break
            outcomes = calls.wait(timeout=commit.wait_limit(0.5))
            if outcomes:
                take(outcomes)
            if commit.due() or (commit.pending and calls.saving_due):
                calls.release(commit.flush())  # saved: room under the crash bound again
            source.heartbeat()
            progress.tick()
        commit.flush()
    finally:
        try:
            commit.flush()  # an error is on its way out: still save every answer we hold
        finally:
            calls.close()  # lets the running calls end: their answers are paid for
            _save_late(calls, take, commit, logger)
    summary.stopped = stop.reason if stop.reason not in (None, "closed") else None
    if breaker.trip is not None:
        summary.stopped_reason = breaker.message(summary.rows_selected - summary.processed)
    summary.finished = time.monotonic()
    progress.final()
    return summary


def _save_late(
    calls: CallPool[Any], take: Callable[[list[RowOutcome]], None], commit: GroupCommit, logger: Any
) -> None:
    """After close(): answers of calls that were running when ``drive`` stopped on an error (a
    page that cannot be read, a bug) are still saved. Never raises: the error on its way out is
    the one to report."""
    try:
        while late := calls.wait(timeout=0):
            take(late)
        if commit.pending:
            logger.warning("saving %d answer(s) of calls that ended after the run stopped", commit.pending)
            commit.flush()
    except Exception as exc:  # noqa: BLE001 - the first error is the one that propagates
        logger.error(
            "%d answer(s) could not be saved after the run stopped (%s); a re-run asks those rows again",
            commit.pending,
            type(exc).__name__,
        )


__all__ = ["ResultSink", "RowSource", "SupportsBatch", "drive", "run_batch"]
