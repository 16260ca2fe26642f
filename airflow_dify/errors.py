"""The one base class of every error this provider raises.

Each layer keeps its own errors in one module (``client/errors.py``, ``limits/base.py``,
``sql/errors.py``, ``batch/errors.py``, ``operators/errors.py``), all deriving from
:class:`AirflowDifyError`, so ``except AirflowDifyError`` catches anything the provider raised
on purpose and nothing else. Errors get their context (status, code, row, attempts) through their
constructors; code that needs a variant builds a new error instead of patching a raised one.
"""

from __future__ import annotations


class AirflowDifyError(Exception):
    """Base of every error raised by airflow-provider-dify."""


__all__ = ["AirflowDifyError"]
