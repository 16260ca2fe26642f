"""The DataFrame path: a pandas frame in, the same frame with the result columns added out.

It runs the one batch path (:func:`airflow_dify.batch.run.run_batch`: same engine, pool, retries,
budget and summary as the SQL path) over a :class:`FrameRows` source/sink. Rows are read chunk by
chunk with ``df.iloc[start:stop, columns].itertuples()`` (only the prompt columns of one chunk are
touched at a time) and each outcome is written by position into preallocated column arrays, so
memory grows by the result columns only, never by a copy of the frame per chunk.

Resume works like on a table: pass a frame returned by an earlier run and ``redo`` picks the rows
to do from its ``status`` (and ``input_hash``) columns; rows not redone keep their results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from airflow_dify.batch.engine import StopSignal
from airflow_dify.batch.options import BatchOptions
from airflow_dify.batch.run import SupportsBatch, run_batch
from airflow_dify.batch.summary import BatchSummary
from airflow_dify.outcome import (
    ATTEMPT_FIELDS,
    FAILED,
    HASH_KEY,
    REDO_MODES,
    STATUS_KEY,
    ResultColumns,
    RowOutcome,
)

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
    """A DataFrame as the batch's row source and result sink; rows are identified by position.

    :param df: the input frame; never modified.
    :param columns: names of the result columns.
    """

    id_column = POSITION_KEY

    def __init__(
        self,
        df: pd.DataFrame,
        columns: ResultColumns = ResultColumns(),  # noqa: B008 - frozen dataclass, safe default
    ) -> None:
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
        if not df.columns.is_unique:
            raise ValueError("the DataFrame has duplicate column names; rename them first")
        self.df = df
        self.columns = columns
        self.read_columns: list[str] = []
        self._read_idx: list[int] = []
        self.current_hash: Callable[[Mapping[str, Any]], str | None] | None = None
        self.skipped_unchanged = 0
        self.skipped_claimed = 0  # a frame belongs to one run: nothing to claim
        # Preallocated result arrays, seeded with earlier results so rows not redone keep them.
        self.arrays: dict[str, np.ndarray] = {f: self._seeded(name) for f, name in columns.items()}
        #: Output column -> JSON type (None: untyped); their arrays are ``outputs``.
        self.output_kinds: dict[str, str | None] = {}
        self.outputs: dict[str, np.ndarray] = {}

    def _seeded(self, name: str) -> np.ndarray:
        """A result array holding the frame's earlier results, so rows not redone keep them."""
        arr = np.full(len(self.df), None, dtype=object)
        if name in self.df.columns:
            arr[:] = [None if _missing(v) else v for v in self.df[name].tolist()]
        return arr

    def prepare(
        self,
        read_columns: Sequence[str],
        current_hash: Callable[[Mapping[str, Any]], str | None],
        outputs: Mapping[str, str | None] | None = None,
    ) -> None:
        """Take the batch's prompt columns (each must exist in the frame) and its output columns."""
        clash = sorted(set(outputs or {}) & {name for _, name in self.columns.items()})
        if clash:
            raise ValueError(
                f"output_columns: {clash} are already result columns; map those outputs to other names"
            )
        self.output_kinds = dict(outputs or {})
        self.outputs = {name: self._seeded(name) for name in self.output_kinds}
        missing = [c for c in read_columns if c not in self.df.columns]
        if missing:
            raise ValueError(
                f"the DataFrame has no column(s) {missing}; columns: {list(self.df.columns)[:20]}"
            )
        self.read_columns = list(read_columns)
        self._read_idx = [self.df.columns.get_loc(c) for c in self.read_columns]
        self.current_hash = current_hash

    def heartbeat(self) -> None:
        return None

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
        current = self.current_hash
        if redo == "changed" and current is None:
            raise ValueError('redo="changed" needs prepare() with a current_hash')
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
                if (
                    current is not None
                    and redo == "changed"
                    and status[pos] is not None
                    and stored[pos] == current(row)
                ):
                    self.skipped_unchanged += 1
                    continue
                page.append(row)
            yield page

    # -- results ------------------------------------------------------------------------------
    def bind_app(self, app_mode: str, workflow_id: str | None) -> None:
        """The DataFrame path keeps no usage ledger: the frame's own columns are its record."""

    def write_results(self, outcomes: Sequence[RowOutcome], ledger_only: Sequence[RowOutcome] = ()) -> None:
        arrays = self.arrays
        for outcome in outcomes:
            pos = outcome.row_id
            if outcome.keeps_prior_answer:  # a failed re-run never replaces a stored answer
                for fieldname in ATTEMPT_FIELDS:
                    arrays[fieldname][pos] = getattr(outcome, fieldname)
                continue
            for fieldname, value in outcome.column_values().items():
                arrays[fieldname][pos] = value
            if self.outputs and (outcome.outputs is not None or outcome.status == FAILED):
                for name, arr in self.outputs.items():
                    arr[pos] = (outcome.outputs or {}).get(name)

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
        for name, arr in self.outputs.items():
            out[name] = _typed(arr, self.output_kinds[name], out.index)
        return out


def _typed(arr: np.ndarray, kind: str | None, index: pd.Index) -> pd.Series:
    """An output column as its JSON type: nullable Int64 / boolean, exact Decimal numbers, else objects."""
    if kind == "integer":
        return pd.Series(pd.array(arr, dtype="Int64"), index=index)
    if kind == "boolean":
        return pd.Series(pd.array(arr, dtype="boolean"), index=index)
    if kind == "number":
        numbers = [v if v is None or isinstance(v, Decimal) else Decimal(str(v)) for v in arr]
        return pd.Series(numbers, index=index, dtype=object)
    return pd.Series(arr, index=index, dtype=object)


def answer_dataframe(
    df: pd.DataFrame,
    client: SupportsBatch,
    options: BatchOptions | None = None,
    *,
    stop: StopSignal | None = None,
    logger: Any = None,
    **option_overrides: Any,
) -> tuple[pd.DataFrame, BatchSummary]:
    """Answer every row of ``df`` with a Dify app; return (frame with result columns, summary).

    :param client: a :class:`~airflow_dify.client.DifyClient` (its pool and retry policy apply).
    :param options: the run's :class:`~airflow_dify.batch.options.BatchOptions`; default: a chat
        app, chunks of 1,000 rows, user ``airflow-dify``.
    :param stop: set it from another thread to stop starting calls.
    :param option_overrides: any BatchOptions field, e.g. ``app_mode="chat"``,
        ``query_column="text"``, ``redo="changed"``, ``max_total_price="5.00"``.

    Rows are identified by position, so error messages say ``row 17`` for the 18th row.
    ``summary.to_dict()`` is the same JSON the operator pushes to XCom. ``where`` and ``shard``
    are SQL options: filter the frame before passing it instead.
    """
    base = options or BatchOptions(app_mode="chat", chunk_size=1000, max_failed_ratio=None)
    opts = base.replace(**option_overrides) if option_overrides else base
    rows = FrameRows(df, opts.result_columns)
    summary = run_batch(rows, rows, client, opts, stop=stop, logger=logger or log)
    return rows.result_frame(), summary


__all__ = ["POSITION_KEY", "FrameRows", "answer_dataframe"]
