"""The DataFrame path: a pandas frame in, the same frame with the result columns added out.

It runs the same batch runner as the SQL path (``run_table_batch``: same engine, pool, retries,
budget and summary) over a :class:`FrameRows` source/sink. Rows are read chunk by chunk with
``df.iloc[start:stop, columns].itertuples()`` (only the prompt columns of one chunk are touched at a
time) and each outcome is written by position into preallocated column arrays, so memory grows by
the result columns only, never by a copy of the frame per chunk.

Resume works like on a table: pass a frame returned by an earlier run and ``redo`` picks the rows
to do from its ``status`` (and ``input_hash``) columns; rows not redone keep their results.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from airflow_dify.batch.budget import BudgetGuard
from airflow_dify.batch.calls import SupportsCall, make_row_caller
from airflow_dify.batch.engine import StopSignal
from airflow_dify.batch.outcome import FAILED, ResultColumns, RowOutcome
from airflow_dify.batch.rows import DEFAULT_MAX_PROMPT_CHARS, PromptBuilder
from airflow_dify.batch.runner import run_table_batch
from airflow_dify.batch.sql_table import HASH_KEY, REDO_MODES, STATUS_KEY
from airflow_dify.client.models import MODE_FAMILY

if TYPE_CHECKING:
    from airflow_dify.batch.summary import BatchSummary

log = logging.getLogger("airflow_dify.batch")

#: Row key holding the 0-based position: outcomes are written back by position, not by index label.
POSITION_KEY = "__position__"
_INT_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "latency_ms", "attempts")


def _missing(value: Any) -> bool:
    # NaN/NA/NaT are how pandas spells NULL; sent as-is they would become the prompt "nan".
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value)


def _clean(value: Any) -> Any:
    if _missing(value):
        return None
    item = getattr(value, "item", None)  # numpy scalar -> Python (JSON-serialisable, hashes like SQL)
    return item() if callable(item) and type(value).__module__ == "numpy" else value


class FrameRows:
    """A DataFrame as the runner's row source and result sink (the ``RowSource`` protocol).

    :param df: the input frame; never modified.
    :param builder: the batch's prompt builder (its ``read_columns`` must exist in ``df``).
    :param columns: names of the result columns.
    """

    def __init__(
        self,
        df: pd.DataFrame,
        builder: PromptBuilder,
        columns: ResultColumns = ResultColumns(),  # noqa: B008 - frozen dataclass, safe default
    ) -> None:
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
        if not df.columns.is_unique:
            raise ValueError("the DataFrame has duplicate column names; rename them first")
        missing = [c for c in builder.read_columns if c not in df.columns]
        if missing:
            raise ValueError(f"the DataFrame has no column(s) {missing}; columns: {list(df.columns)[:20]}")
        self.df = df
        self.builder = builder
        self.columns = columns
        self.read_columns = list(builder.read_columns)
        self._read_idx = [df.columns.get_loc(c) for c in self.read_columns]
        self.skipped_unchanged = 0
        n = len(df)
        # Preallocated result arrays, seeded with earlier results so rows not redone keep them.
        self.arrays: dict[str, np.ndarray] = {}
        for fieldname, name in columns.items():
            arr = np.full(n, None, dtype=object)
            if name in df.columns:
                arr[:] = [None if _missing(v) else v for v in df[name].tolist()]
            self.arrays[fieldname] = arr

    # -- selection ----------------------------------------------------------------------------
    def _todo_mask(self, redo: str) -> np.ndarray:
        if redo not in REDO_MODES:
            raise ValueError(f"redo: {redo!r} is not one of {list(REDO_MODES)}")
        status = self.arrays["status"]
        if redo in ("all", "changed"):  # "changed" narrows per row while reading (hash in Python)
            return np.ones(len(status), dtype=bool)
        pending = np.fromiter((s is None for s in status), dtype=bool, count=len(status))
        if redo == "failed":
            pending |= status == FAILED
        return pending

    def count_todo(
        self, redo: str = "failed", where: Any = None, where_parameters: Any = None, shard: Any = None
    ) -> int:
        self._no_sql_filters(where, shard)
        return int(self._todo_mask(redo).sum())

    @staticmethod
    def _no_sql_filters(where: Any, shard: Any) -> None:
        if where is not None or shard is not None:
            raise ValueError("where/shard are SQL-table options; filter the DataFrame before passing it")

    def iter_chunks(
        self,
        chunk_size: int,
        redo: str = "failed",
        where: Any = None,
        where_parameters: Any = None,
        shard: Any = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Row dicts of the rows to do, ``chunk_size`` frame rows at a time, in frame order."""
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive integer, got {chunk_size!r}")
        self._no_sql_filters(where, shard)
        return self._chunks(chunk_size, redo, self._todo_mask(redo))

    def _chunks(self, chunk_size: int, redo: str, todo: np.ndarray) -> Iterator[list[dict[str, Any]]]:
        keys = self.read_columns
        status, stored = self.arrays["status"], self.arrays["input_hash"]
        current = self.builder.current_hash
        for start in range(0, len(self.df), chunk_size):
            stop = min(start + chunk_size, len(self.df))
            if not todo[start:stop].any():
                continue
            # A view of one chunk's prompt columns; itertuples yields Python scalars.
            part = self.df.iloc[start:stop, self._read_idx].itertuples(index=False, name=None)
            page: list[dict[str, Any]] = []
            for pos, values in enumerate(part, start):
                if not todo[pos]:
                    continue
                row = {POSITION_KEY: pos, STATUS_KEY: status[pos], HASH_KEY: stored[pos]}
                row.update(zip(keys, map(_clean, values), strict=True))
                if redo == "changed" and status[pos] is not None and stored[pos] == current(row):
                    self.skipped_unchanged += 1
                    continue
                page.append(row)
            yield page

    # -- results ------------------------------------------------------------------------------
    def write_results(self, outcomes: Sequence[RowOutcome]) -> None:
        arrays = self.arrays
        for outcome in outcomes:
            pos = outcome.row_id
            for fieldname, value in outcome.column_values().items():
                arrays[fieldname][pos] = value

    def result_frame(self) -> pd.DataFrame:
        """A new frame: the input's columns plus typed result columns (the input is not modified)."""
        out = self.df.copy(deep=False)
        for fieldname, name in self.columns.items():
            arr = self.arrays[fieldname]
            if fieldname in _INT_FIELDS:
                out[name] = pd.array(arr, dtype="Int64")
            elif fieldname == "answered_at":
                out[name] = pd.to_datetime(
                    pd.Series(arr, index=out.index, dtype=object), utc=True, format="mixed"
                )
            elif fieldname == "total_price":
                # Decimal objects: exact for finance (float would round); earlier results may be text.
                prices = [v if v is None or isinstance(v, Decimal) else Decimal(str(v)) for v in arr]
                out[name] = pd.Series(prices, index=out.index, dtype=object)
            else:
                out[name] = pd.Series(arr, index=out.index, dtype=object)
        return out


def answer_dataframe(
    df: pd.DataFrame,
    client: SupportsCall,
    *,
    app_mode: str = "chat",
    query_column: str | None = "prompt",
    query_template: str | None = None,
    input_columns: Mapping[str, str] | None = None,
    user: str = "airflow-dify",
    max_concurrency: int = 8,
    chunk_size: int = 1000,
    redo: str = "failed",
    result_columns: Mapping[str, str] | None = None,
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
    response_mode: str | None = None,
    max_total_tokens: int | None = None,
    max_total_price: str | Decimal | None = None,
    stop: StopSignal | None = None,
    logger: Any = None,
) -> tuple[pd.DataFrame, BatchSummary]:
    """Answer every row of ``df`` with a Dify app; return (frame with result columns, summary).

    :param client: a :class:`~airflow_dify.client.DifyClient` (its pool and retry policy apply).
    :param app_mode: Dify app mode (``chat``, ``advanced-chat``, ``agent-chat``, ``completion``,
        ``workflow``); agent modes are called with streaming.
    :param query_column: column holding the query (chat/completion).
    :param query_template: per-row template instead of ``query_column`` (Jinja or ``str.format``).
    :param input_columns: Dify input variable -> column (required for workflows).
    :param chunk_size: frame rows read per step; results are written as calls complete.
    :param redo: with a frame from an earlier run: ``pending``, ``failed`` (default), ``all``,
        ``changed`` (pending rows plus rows whose query/inputs no longer match ``input_hash``).
    :param result_columns: rename result columns, e.g. ``{"answer": "category"}``.
    :param max_total_tokens: budget cap; rows never started stay pending (status None).
    :param max_total_price: the same cap in money.
    :param stop: set it from another thread to stop starting calls.

    Rows are identified by position, so error messages say ``row 17`` for the 18th row.
    ``summary.to_dict()`` is the same JSON the operator pushes to XCom.
    """
    family = MODE_FAMILY.get(app_mode)
    if family is None:
        raise ValueError(f"app_mode must be one of {sorted(MODE_FAMILY)}, got {app_mode!r}")
    builder = PromptBuilder(
        family=family,
        id_column=POSITION_KEY,
        query_column=query_column,
        query_template=query_template,
        input_columns=input_columns,
        max_prompt_chars=max_prompt_chars,
    )
    rows = FrameRows(df, builder, ResultColumns.with_overrides(dict(result_columns or {})))
    budget = BudgetGuard(
        max_total_tokens, Decimal(str(max_total_price)) if max_total_price is not None else None
    )
    call_row = make_row_caller(client, builder, user=user, response_mode=response_mode, app_mode=app_mode)
    summary = run_table_batch(
        rows,
        budget.wrap(call_row) if budget.active else call_row,
        may_start=budget.may_start if budget.active else None,
        max_concurrency=max_concurrency,
        chunk_size=chunk_size,
        redo=redo,
        stop=stop,
        logger=logger or log,
    )
    if redo == "changed":
        (logger or log).info(
            "redo=changed: %s row(s) unchanged since answered, skipped", f"{rows.skipped_unchanged:,}"
        )
    return rows.result_frame(), summary


__all__ = ["POSITION_KEY", "FrameRows", "answer_dataframe"]
