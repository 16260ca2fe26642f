"""Table batch: read pending rows in chunks, call concurrently, write outcomes back per chunk."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from itertools import chain
from typing import Any, Protocol

from airflow_dify.batch.engine import StopSignal, run_concurrently
from airflow_dify.batch.outcome import RowOutcome
from airflow_dify.batch.summary import BatchSummary, ProgressReporter

log = logging.getLogger("airflow_dify.batch")


class RowSource(Protocol):
    def count_todo(
        self, redo: str = ..., where: str | None = ..., where_parameters: Any = ..., shard: Any = ...
    ) -> int: ...

    def iter_chunks(
        self,
        chunk_size: int,
        redo: str = ...,
        where: str | None = ...,
        where_parameters: Any = ...,
        shard: Any = ...,
    ) -> Iterator[list[dict[str, Any]]]: ...

    def write_results(self, outcomes: list[RowOutcome]) -> None: ...


def run_table_batch(
    table: RowSource,
    call_row: Callable[[Mapping[str, Any]], RowOutcome],
    *,
    max_concurrency: int,
    chunk_size: int = 100,
    redo: str = "failed",
    where: str | None = None,
    where_parameters: Any = None,
    shard: tuple[int, int] | None = None,
    stop: StopSignal | None = None,
    may_start: Callable[[Mapping[str, Any]], bool] | None = None,
    flush_seconds: float = 5.0,
    progress_seconds: float = 5.0,
    logger: Any = None,
) -> BatchSummary:
    """Process every row to do; a crash loses at most the rows in flight and the unflushed chunk."""
    logger = logger or log
    stop = stop or StopSignal()
    select = {"redo": redo, "where": where, "where_parameters": where_parameters, "shard": shard}
    summary = BatchSummary(rows_selected=table.count_todo(**select))
    logger.info("Selected %s row(s) to process (redo=%s)", f"{summary.rows_selected:,}", redo)
    progress = ProgressReporter(logger, summary, progress_seconds)
    rows = chain.from_iterable(table.iter_chunks(chunk_size, **select))
    pending: list[RowOutcome] = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal pending, last_flush
        if pending:
            table.write_results(pending)
            for outcome in pending:
                summary.add(outcome)
            pending = []
        last_flush = time.monotonic()

    outcomes = run_concurrently(
        rows, call_row, max_concurrency=max_concurrency, stop=stop, may_start=may_start, poll_interval=0.5
    )
    try:
        for outcome in outcomes:
            if outcome is not None:
                pending.append(outcome)
            if len(pending) >= chunk_size or (pending and time.monotonic() - last_flush >= flush_seconds):
                flush()
                progress.tick()
    finally:
        outcomes.close()
    flush()
    summary.stopped = stop.reason if stop.reason not in (None, "closed") else None
    summary.finished = time.monotonic()
    progress.final()
    return summary
