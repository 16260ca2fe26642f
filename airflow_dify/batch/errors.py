"""Errors of the batch engine."""

from __future__ import annotations

from typing import Any

from airflow_dify.errors import AirflowDifyError


class RowError(AirflowDifyError, ValueError):
    """The row cannot be sent; the message names the row and the column at fault.

    :param code: a short code for summaries (``empty_prompt``, ``template_error``, ...).
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class PreflightError(AirflowDifyError, ValueError):
    """A check before the first generation call failed: nothing was called or written."""


class EstimateError(AirflowDifyError, ValueError):
    """A pilot sample cannot support a projection (nothing sampled, every sampled row failed)."""


class FeedbackStoppedError(AirflowDifyError, RuntimeError):
    """Sending reviews stopped at an error every feedback would get (refused credentials, Dify
    unreachable after retries); what was sent is recorded, the rest is sent by the next run.

    :param summary: the run's totals so far (a ``FeedbackSummary``).
    """

    def __init__(self, message: str, summary: Any) -> None:
        self.summary = summary
        super().__init__(message)


__all__ = ["EstimateError", "FeedbackStoppedError", "PreflightError", "RowError"]
