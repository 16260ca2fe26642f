"""Table batch: read pending rows in pages, call concurrently, save results as they complete.

Results are written in group commits: every outcome ready at that moment goes into one
transaction (at most ``max_concurrency`` rows), so at most ``max_concurrency`` answered rows can be
lost to a crash, and a slow call never holds finished rows back from the table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import chain
from typing import Any, Protocol

from airflow_dify.batch.engine import CallPool, StopSignal
from airflow_dify.batch.outcome import RowOutcome
from airflow_dify.batch.summary import BatchSummary, ProgressReporter

log = logging.getLogger("airflow_dify.batch")


class RowSource(Protocol):
    def count_todo(self, redo: str, where: str | None, where_parameters: Any, shard: Any) -> int: ...

    def iter_chunks(
        self, chunk_size: int, redo: str, where: str | None, where_parameters: Any, shard: Any
    ) -> Iterator[list[dict[str, Any]]]: ...

    def write_results(self, outcomes: Sequence[RowOutcome]) -> None: ...


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
    progress_seconds: float = 5.0,
    logger: Any = None,
) -> BatchSummary:
    """Process every row to do (or until stopped); returns the totals of what was saved."""
    logger = logger or log
    stop = stop or StopSignal()
    select = {"redo": redo, "where": where, "where_parameters": where_parameters, "shard": shard}
    summary = BatchSummary(rows_selected=table.count_todo(**select))
    logger.info("Selected %s row(s) to process (redo=%s)", f"{summary.rows_selected:,}", redo)
    progress = ProgressReporter(logger, summary, progress_seconds)
    rows = chain.from_iterable(table.iter_chunks(chunk_size, **select))
    calls = CallPool(call_row, max_concurrency=max_concurrency, stop=stop, may_start=may_start)
    try:
        while True:
            calls.fill(rows)
            if calls.finished:
                break
            outcomes = calls.wait(timeout=0.5)
            if outcomes:
                table.write_results(outcomes)
                calls.release(len(outcomes))
                for outcome in outcomes:
                    summary.add(outcome)
            progress.tick()
    finally:
        calls.close()
    summary.stopped = stop.reason if stop.reason not in (None, "closed") else None
    summary.finished = time.monotonic()
    progress.final()
    return summary
