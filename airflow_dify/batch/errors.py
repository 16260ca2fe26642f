"""Errors of the batch engine."""

from __future__ import annotations

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


__all__ = ["PreflightError", "RowError"]
