"""BatchOptions: everything one batch run is told, checked once, shared by every entry point.

The operator, the DataFrame functions and the benchmarks all build one of these and hand it to
:func:`airflow_dify.batch.run.run_batch`; adding an option means a field here, the operator's
signature and docstring, and the code that uses it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from airflow_dify.batch.commits import DEFAULT_COMMIT_ROWS, DEFAULT_COMMIT_SECONDS
from airflow_dify.batch.files import Opener, check_file_columns
from airflow_dify.batch.outputs import OutputSpec
from airflow_dify.batch.trace import check_prefix
from airflow_dify.client.models import MODE_FAMILY
from airflow_dify.outcome import REDO_MODES, ResultColumns, check_shard

DEFAULT_MAX_PROMPT_CHARS = 100_000
#: Concurrency when neither the connection nor the caller sets one.
DEFAULT_MAX_CONCURRENCY = 8
RESPONSE_MODES = ("blocking", "streaming")


@dataclass(frozen=True)
class BatchOptions:
    """Options of one batch run; invalid values raise ValueError naming the option.

    What each row sends:

    :param app_mode: Dify app mode (``chat``, ``advanced-chat``, ``agent-chat``, ``completion``,
        ``workflow``); None = ask Dify (GET /info) at the start of the run.
    :param query_column: column holding the chat/completion query.
    :param query_template: per-row template instead of ``query_column`` (Jinja or ``str.format``).
    :param input_columns: Dify input variable -> column (required for workflows).
    :param file_columns: Dify file input variable -> column holding a URL (sent as ``remote_url``),
        a local or object-storage path or bytes (uploaded, sent as ``local_file``), or a list of
        them (see :mod:`airflow_dify.batch.file_inputs`).
    :param file_opener: opens object-storage paths of ``file_columns`` (the operator passes
        Airflow's ``ObjectStoragePath``); None: fsspec when installed.
    :param user: Dify end-user id sent with every call.
    :param response_mode: ``blocking`` or ``streaming``; None = blocking, streaming where required.
    :param max_prompt_chars: longer prompts fail their row without a call.
    :param null_as: text that NULL template/input values render as; None: such a row fails.
    :param output_columns: output name (workflow output, or key of a JSON answer) -> column.
    :param output_schema: JSON Schema subset that types the output columns and checks answers.
    :param workflow_id: run this published workflow version (workflow and chatflow apps).
    :param user_per_row: chat apps: each row asks as ``<user>-<row id>``, so a call that timed out
        is found (GET /conversations, GET /messages) and stored instead of asked again.
    :param citations_column: RAG apps: store the answer's ``retriever_resources`` (document,
        segment, score) as JSON in this column.
    :param trace_prefix: start of every call's X-Trace-Id (the operator names the task try);
        None: ``run-<random>``.

    Which rows:

    :param redo: ``pending``, ``failed``, ``all`` or ``changed``.
    :param where: extra SQL filter (SQL sources only); ``where_parameters`` its bound values.
    :param shard: ``(index, count)``: only this shard's rows (SQL sources only).
    :param chunk_size: rows read per page.

    Results, limits and money:

    :param result_columns: rename result columns, e.g. ``{"answer": "category"}``.
    :param max_concurrency: calls at once; None = the connection's limit, else 8.
    :param requests_per_minute: tighten the connection's request budget.
    :param tokens_per_minute: tighten the connection's token budget.
    :param pool_name: share a rate-limit budget by name instead of by connection identity.
    :param max_total_tokens: budget cap in tokens; rows never started stay pending.
    :param max_total_price: budget cap in money (decimal string or number).
    :param max_failed_ratio: the caller fails when failed/processed exceeds it (None = never).
    :param resend_maybe_billed: re-send calls that may already have run and been billed.
    :param outage_seconds: stop when no call has reached Dify for this long (rows stay pending).
    :param breaker_threshold: stop after this many errors every row would get (401/403: the first).
    :param progress_seconds: seconds between progress log lines.
    :param commit_rows: answered rows written per transaction (at most; see batch/commits.py).
    :param commit_seconds: an answer waits at most this long for its commit. A crash loses at most
        ``max_concurrency + commit_rows - 1`` answered rows (the summary's ``crash_bound``).
    """

    app_mode: str | None = None
    query_column: str | None = "prompt"
    query_template: str | None = None
    input_columns: Mapping[str, str] = field(default_factory=dict)
    file_columns: Mapping[str, str] = field(default_factory=dict)
    file_opener: Opener | None = None
    user: str = "airflow-dify"
    response_mode: str | None = None
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS
    null_as: str | None = None
    output_columns: Mapping[str, str] = field(default_factory=dict)
    output_schema: Mapping[str, Any] | None = None
    workflow_id: str | None = None
    trace_prefix: str | None = None
    user_per_row: bool = False
    citations_column: str | None = None
    redo: str = "failed"
    where: str | None = None
    where_parameters: Any = None
    shard: tuple[int, int] | None = None
    chunk_size: int = 100
    result_columns: ResultColumns = field(default_factory=ResultColumns)
    max_concurrency: int | None = None
    requests_per_minute: float | None = None
    tokens_per_minute: int | None = None
    pool_name: str | None = None
    max_total_tokens: int | None = None
    max_total_price: Decimal | None = None
    max_failed_ratio: float | None = 0.0
    resend_maybe_billed: bool = False
    outage_seconds: float = 60.0
    breaker_threshold: int = 3
    progress_seconds: float = 5.0
    commit_rows: int = DEFAULT_COMMIT_ROWS
    commit_seconds: float = DEFAULT_COMMIT_SECONDS

    def __post_init__(self) -> None:
        # Coerce the friendly forms callers pass (a mapping of renames, a price as text).
        if not isinstance(self.result_columns, ResultColumns):
            renames = dict(self.result_columns or {})
            object.__setattr__(self, "result_columns", ResultColumns.with_overrides(renames))
        object.__setattr__(self, "input_columns", dict(self.input_columns or {}))
        object.__setattr__(self, "file_columns", dict(self.file_columns or {}))
        object.__setattr__(self, "output_columns", dict(self.output_columns or {}))
        object.__setattr__(self, "max_total_price", _price(self.max_total_price))
        if self.shard is not None:
            object.__setattr__(self, "shard", check_shard(self.shard))
        self._check()

    def _check(self) -> None:
        if self.app_mode is not None and self.app_mode not in MODE_FAMILY:
            raise ValueError(f"app_mode must be one of {', '.join(MODE_FAMILY)}, got {self.app_mode!r}")
        if self.redo not in REDO_MODES:
            raise ValueError(f"redo must be one of {', '.join(REDO_MODES)}, got {self.redo!r}")
        if self.response_mode not in (None, *RESPONSE_MODES):
            raise ValueError(f"response_mode must be blocking or streaming, got {self.response_mode!r}")
        ratio = self.max_failed_ratio
        if ratio is not None and not 0.0 <= ratio <= 1.0:
            raise ValueError(f"max_failed_ratio must be between 0 and 1, got {ratio}")
        _positive("chunk_size", self.chunk_size)
        _positive("commit_rows", self.commit_rows)
        seconds = self.commit_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= 60:
            raise ValueError(f"commit_seconds must be a number of seconds between 0 and 60, got {seconds!r}")
        _positive("max_prompt_chars", self.max_prompt_chars)
        if self.max_concurrency is not None:
            _positive("max_concurrency", self.max_concurrency)
        if self.max_total_tokens is not None:
            _positive("max_total_tokens", self.max_total_tokens)
        OutputSpec(self.output_columns, self.output_schema)  # raises ValueError naming the problem
        check_file_columns(self.file_columns, self.input_columns, self.file_opener)
        if self.workflow_id is not None and (
            not isinstance(self.workflow_id, str) or not self.workflow_id.strip()
        ):
            raise ValueError("workflow_id must be the id of a published workflow version")
        if self.citations_column is not None:
            if not isinstance(self.citations_column, str) or not self.citations_column.strip():
                raise ValueError("citations_column must be a column name")
            if self.citations_column in self.output_columns.values():
                raise ValueError(f"citations_column {self.citations_column!r} is also an output column")
        if self.trace_prefix is not None:
            check_prefix(self.trace_prefix)
        if not isinstance(self.user, str) or not self.user.strip():
            raise ValueError("user must be a non-empty end-user id, e.g. 'airflow-<dag_id>'")

    def replace(self, **changes: Any) -> BatchOptions:
        """A copy with ``changes`` applied (checked again)."""
        return dataclasses.replace(self, **changes)

    @property
    def concurrency(self) -> int:
        """Calls at once: the option, else the default."""
        return self.max_concurrency or DEFAULT_MAX_CONCURRENCY

    def outputs(self) -> OutputSpec:
        """The output columns these options ask for (empty without output_columns/output_schema)."""
        return OutputSpec(self.output_columns, self.output_schema)

    def selection(self) -> dict[str, Any]:
        """The row-selection arguments of a source's ``count_todo``/``iter_chunks``."""
        return {name: getattr(self, name) for name in ("redo", "where", "where_parameters", "shard")}


def option_names() -> tuple[str, ...]:
    """Field names, for entry points that take options as keyword arguments."""
    return tuple(f.name for f in dataclasses.fields(BatchOptions))


def shard_from(index: Any, count: Any) -> tuple[int, int] | None:
    """``(index, count)`` from the operator's two arguments (both or neither)."""
    if index is None and count is None:
        return None
    if index is None or count is None:
        raise ValueError("shard_index and shard_count must be given together")
    return check_shard((int(index), int(count)))


def _price(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        price = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"max_total_price must be a decimal amount, got {value!r}") from None
    if not price.is_finite() or price < 0:
        raise ValueError(f"max_total_price must be a finite amount >= 0, got {value!r}")
    return price


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_PROMPT_CHARS",
    "BatchOptions",
    "option_names",
    "shard_from",
]
