"""Trace ids: every call carries an ``X-Trace-Id`` that names the Airflow task try and the row.

Dify accepts 1-128 characters of ``[A-Za-z0-9_-]`` and uses the id for its own logs and for the
Langfuse/LangSmith trace of the call, so searching a row's ``trace_id`` there finds its call. The
id is ``<prefix>-<row key>``: the prefix names the run (``<dag>-<task>-<run hash>-t<try>`` from
the operator, ``run-<random>`` for a plain script), the row key is the id itself when it is short
and plain, else a hash of it. Retries of one row's call keep its id: they are the same call.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

_ALLOWED = re.compile(r"[^A-Za-z0-9_-]")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_TRY_SUFFIX = re.compile(r"-t\d+$")
MAX_PREFIX = 80


def _clean(text: str) -> str:
    return _ALLOWED.sub("_", text)


def task_prefix(dag_id: str, task_id: str, run_id: str, map_index: int, try_number: int) -> str:
    """The prefix of one Airflow task try: readable names, a hash for the run, the try."""
    run = hashlib.sha256(f"{run_id}\0{map_index}".encode()).hexdigest()[:8]
    head = _clean(f"{dag_id}-{task_id}")[: MAX_PREFIX - 16]
    return f"{head}-{run}-t{int(try_number)}"


def script_prefix() -> str:
    return f"run-{uuid.uuid4().hex[:12]}"


def check_prefix(prefix: str) -> str:
    """``prefix`` if Dify would accept it (with room for a row key); ValueError naming it if not."""
    if not prefix or len(prefix) > MAX_PREFIX or _ALLOWED.search(prefix):
        raise ValueError(f"trace_prefix must be 1-{MAX_PREFIX} characters of letters, digits, '_' or '-'")
    return prefix


def for_try(prefix: str, try_number: int | None) -> str:
    """``prefix`` as the task try ``try_number`` had it (a crashed try's calls carried that id)."""
    if try_number is None or not _TRY_SUFFIX.search(prefix):
        return prefix
    return _TRY_SUFFIX.sub(f"-t{int(try_number)}", prefix)


def row_key(row_id: Any) -> str:
    """The row id when it is short and plain, else ``h`` + 16 hex digits of its hash."""
    key = str(row_id)
    if not _PLAIN_KEY.match(key):
        key = "h" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return key


def row_trace_id(prefix: str, row_id: Any) -> str:
    return f"{prefix}-{row_key(row_id)}"


__all__ = ["check_prefix", "for_try", "row_key", "row_trace_id", "script_prefix", "task_prefix"]
