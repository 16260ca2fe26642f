"""Errors the Airflow tasks raise, and the verdict on a finished run that raises them."""

from __future__ import annotations

from airflow_dify.batch.summary import BatchSummary
from airflow_dify.errors import AirflowDifyError


class DifyBatchFailedError(AirflowDifyError, RuntimeError):
    """Too many rows failed; their results are already written back."""


class DifyBatchKilledError(AirflowDifyError, RuntimeError):
    """The task was killed mid-run; finished rows are saved, the rest stay pending for a retry."""


class DifyBatchStoppedError(DifyBatchFailedError):
    """An error every remaining row would get too (a revoked key, a quota, Dify down): the run
    stopped early; finished rows are saved, the rest stay pending for a run after the fix."""


def raise_for_summary(summary: BatchSummary, max_failed_ratio: float | None) -> None:
    """Fail the task after a kill, or when more rows failed than allowed (all results are saved)."""
    if summary.stopped == "breaker":
        raise DifyBatchStoppedError(summary.stopped_reason or "stopped by the circuit breaker")
    if summary.stopped == "killed":
        raise DifyBatchKilledError(
            f"Killed: {summary.processed:,} finished row(s) saved, "
            f"{summary.rows_selected - summary.processed:,} left pending for the next try."
        )
    if max_failed_ratio is not None and summary.failed_ratio() > max_failed_ratio:
        raise DifyBatchFailedError(
            f"{summary.failed:,} of {summary.processed:,} processed rows failed "
            f"({summary.failed_ratio():.1%} > max_failed_ratio {max_failed_ratio:.1%}); "
            f"most common errors: {summary.top_errors()}. Results are saved; re-run to retry failed rows."
        )


__all__ = ["DifyBatchFailedError", "DifyBatchKilledError", "DifyBatchStoppedError", "raise_for_summary"]
