"""Errors of the SQL toolkit: a table or setting that cannot be used, results that cannot be written."""

from __future__ import annotations

from airflow_dify.errors import AirflowDifyError


class SqlTableError(AirflowDifyError, ValueError):
    """The table, its columns or a setting cannot be used (bad identifier, missing column, bad ids).

    Raised before any Dify call is made, so a misconfigured batch costs nothing.
    """


class SqlWriteError(AirflowDifyError, RuntimeError):
    """A chunk of results could not be written back after all retries.

    The message names the table, the first row id of the chunk and the driver's error class
    (and SQLSTATE when known), never row values: those may be prompts or answers. The driver's
    exception is chained as ``__cause__`` for debugging.
    """
