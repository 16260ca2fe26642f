"""A pilot run: answer a random sample of the rows a batch would do, then project the rest's cost.

1. Pre-flight (GET /info, /parameters: free) tells the app's mode, so prompts are built exactly
   as the batch would send them (:class:`~airflow_dify.batch.rows.PromptBuilder`).
2. One read-only pass over the batch's own selection (``redo``, ``where``, shard), through a
   source that does not claim (``SqlTable(claims=False)``): each row's prompt length is tallied
   (count and sum, never the rows) and a uniform random sample of ids is kept by reservoir
   sampling (seeded). Rows that cannot be sent (NULL prompt, too long, ...) would fail without a
   call: they cost nothing and are neither sampled nor projected.
3. The sample is answered by :func:`~airflow_dify.batch.run.run_batch` itself, restricted to its
   ids (:func:`~airflow_dify.sql.selection.only_ids_where`), so claims, budget, ledger and
   write-back all apply: the answers are kept and the full batch skips those rows.
4. :func:`~airflow_dify.batch.estimate.project` fits the sample and projects the rest.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from airflow_dify.batch.engine import StopSignal
from airflow_dify.batch.errors import EstimateError, RowError
from airflow_dify.batch.estimate import (
    DEFAULT_RESAMPLES,
    Estimate,
    LengthTally,
    SampleRow,
    check_settings,
    decimal_text,
    project,
)
from airflow_dify.batch.options import BatchOptions
from airflow_dify.batch.preflight import preflight
from airflow_dify.batch.rows import Prompt, PromptBuilder
from airflow_dify.batch.run import ResultSink, RowSource, SupportsBatch, run_batch
from airflow_dify.batch.summary import BatchSummary
from airflow_dify.outcome import SUCCEEDED, RowOutcome
from airflow_dify.sql.dialects import Dialect, quote_identifier
from airflow_dify.sql.selection import only_ids_where

log = logging.getLogger("airflow_dify.batch")

DEFAULT_SAMPLE_ROWS = 50
#: Sample ids are bound as one ``IN (...)`` list: keep it far below every driver's parameter limit.
MAX_SAMPLE_ROWS = 1000
#: Sample rows shown with the projection (the approval screen).
SHOWN_ANSWERS = 10
PROMPT_EXCERPT = 160
ANSWER_EXCERPT = 240


class PilotTable(RowSource, ResultSink, Protocol):
    """A SQL source and sink (:class:`~airflow_dify.sql.table.SqlTable`): the pilot restricts a run
    to chosen ids with a ``where`` in the table's own dialect."""

    id_column: str
    dialect_name: str

    @property
    def dialect(self) -> Dialect: ...


class ReadOnlySource(RowSource, Protocol):
    """The same selection, read without claiming (``SqlTable(claims=False)``)."""

    claims: bool


@dataclass
class PilotResult:
    """What a pilot did: the sample run's summary, the projection, the first sample answers."""

    summary: BatchSummary
    estimate: Estimate | None  # None when the sample run was stopped (breaker, kill)
    currency: str | None = None
    unsendable: int = 0
    answers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The XCom value: the projection's numbers (prices as strings), currency, sample answers."""
        numbers = self.estimate.to_dict() if self.estimate is not None else {}
        if numbers:  # what the batch will select: rows that fail without a call cost nothing
            numbers["pending"] += self.unsendable
        return {
            **numbers,
            "currency": self.currency,
            "unsendable": self.unsendable,
            "sample_failed": self.summary.failed,
            "answers": self.answers,
        }


def prompt_length(prompt: Prompt) -> int:
    """Characters sent: the query plus every input value as text."""
    return len(prompt.query or "") + sum(len(str(v)) for v in prompt.inputs.values())


class Reservoir:
    """A uniform random sample of at most ``size`` items from a stream of unknown length
    (Algorithm R): every item seen has the same chance ``size / seen`` of being kept."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size, self.rng = size, rng
        self.items: list[Any] = []
        self.seen = 0

    def offer(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
            return
        slot = self.rng.randrange(self.seen)
        if slot < self.size:
            self.items[slot] = item


class RecordingSink:
    """Passes every group to ``sink`` and keeps the saved outcomes by row id."""

    def __init__(self, sink: ResultSink) -> None:
        self.sink = sink
        self.outcomes: dict[Any, RowOutcome] = {}

    def bind_app(self, app_mode: str, workflow_id: str | None) -> None:
        self.sink.bind_app(app_mode, workflow_id)

    def write_results(self, outcomes: Sequence[RowOutcome], ledger_only: Sequence[RowOutcome] = ()) -> None:
        self.sink.write_results(outcomes, ledger_only)
        for outcome in outcomes:
            self.outcomes[outcome.row_id] = outcome


@dataclass(frozen=True)
class _Sampled:
    row_id: Any
    length: int
    excerpt: str


def check_pilot(sample_rows: Any, confidence: Any, redo: str = "failed") -> None:
    """ValueError naming the setting (called at DAG parse time by the operator)."""
    if isinstance(sample_rows, bool) or not isinstance(sample_rows, int) or sample_rows < 1:
        raise ValueError(f"sample_rows must be an integer >= 1, got {sample_rows!r}")
    if sample_rows > MAX_SAMPLE_ROWS:
        raise ValueError(f"sample_rows must be at most {MAX_SAMPLE_ROWS:,} (a pilot), got {sample_rows:,}")
    check_settings(confidence)
    if redo == "all":
        raise ValueError(
            'redo="all" asks every row again, the sample too, so a pilot would be paid twice; '
            'estimate (and run) with redo="pending", "failed" or "changed"'
        )


def run_pilot(
    table: PilotTable,
    reader: ReadOnlySource,
    client: SupportsBatch,
    options: BatchOptions,
    *,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    confidence: float = 0.9,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    stop: StopSignal | None = None,
    logger: Any = None,
) -> PilotResult:
    """Answer a random sample of what ``options`` selects in ``table``; project the rest.

    ``reader`` is the same table opened without claims (it only reads). Raises
    :class:`~airflow_dify.batch.errors.EstimateError` when every sampled row failed.
    """
    logger = logger or log
    check_pilot(sample_rows, confidence, options.redo)
    if reader.claims:
        raise ValueError("reader must be a source that does not claim rows (SqlTable(claims=False))")
    files = options.file_columns
    app = preflight(client, options.app_mode, options.input_columns, logger, file_columns=files)
    builder = PromptBuilder.for_options(options, app.mode, reader.id_column, app_name=app.name)
    reader.prepare(builder.read_columns, builder.current_hash, outputs=options.outputs().column_kinds())
    rng = random.Random(seed)
    tally, reservoir, unsendable = _scan(reader, builder, options, Reservoir(sample_rows, rng), stop)
    logger.info(
        "Pilot: %s row(s) to do (%s that cannot be sent), %s characters of prompt in all; sampling %s",
        f"{tally.count + unsendable:,}",
        f"{unsendable:,}",
        f"{tally.total:,}",
        f"{len(reservoir.items):,}",
    )
    picked = sorted(reservoir.items, key=lambda s: s.row_id)
    recorder = RecordingSink(table)
    if picked:
        q_id = quote_identifier(table.id_column, "id_column", dialect=table.dialect_name)
        where, params = only_ids_where(
            table.dialect, q_id, [s.row_id for s in picked], options.where, options.where_parameters
        )
        summary = run_batch(
            table,
            recorder,
            client,
            options.replace(where=where, where_parameters=params),
            stop=stop,
            logger=logger,
        )
    else:
        summary = BatchSummary()
    result = PilotResult(summary, None, unsendable=unsendable)
    if summary.stopped in ("breaker", "killed"):
        return result
    done = [(s, recorder.outcomes[s.row_id]) for s in picked if s.row_id in recorder.outcomes]
    # Failed sample rows are asked again by a batch with redo="failed": they stay in the rest.
    again = options.redo == "failed"
    left = [s.length for s, o in done if o.status == SUCCEEDED or not again]
    sample = [_sample_row(s, o) for s, o in done]
    result.currency = _currency(o for _, o in done)
    result.estimate = project(
        sample, tally.without(left), confidence=confidence, seed=seed, resamples=resamples
    )
    result.answers = [_shown(s, o) for s, o in done[:SHOWN_ANSWERS]]
    return result


def _scan(
    reader: ReadOnlySource,
    builder: PromptBuilder,
    options: BatchOptions,
    reservoir: Reservoir,
    stop: StopSignal | None,
) -> tuple[LengthTally, Reservoir, int]:
    tally, unsendable = LengthTally(), 0
    for chunk in reader.iter_chunks(options.chunk_size, **options.selection()):
        if stop is not None and stop.reason is not None:
            raise EstimateError(f"pilot stopped ({stop.reason}) while reading the rows; nothing was called")
        for row in chunk:
            try:
                prompt = builder.build(row)
            except RowError:
                unsendable += 1  # fails without a call in the batch: costs nothing
                continue
            length = prompt_length(prompt)
            tally.add(length)
            reservoir.offer(_Sampled(prompt.row_id, length, _excerpt(_prompt_text(prompt), PROMPT_EXCERPT)))
    return tally, reservoir, unsendable


def _prompt_text(prompt: Prompt) -> str:
    inputs = ", ".join(f"{k}={v}" for k, v in prompt.inputs.items())
    return " | ".join(part for part in (prompt.query or "", inputs) if part)


def _excerpt(text: Any, limit: int) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _sample_row(sampled: _Sampled, outcome: RowOutcome) -> SampleRow:
    return SampleRow(
        length=sampled.length,
        tokens=int(outcome.total_tokens or 0),
        price=outcome.total_price if outcome.total_price is not None else Decimal(0),
        succeeded=outcome.status == SUCCEEDED,
    )


def _currency(outcomes: Any) -> str | None:
    seen = {o.currency for o in outcomes if o.currency and o.total_price is not None}
    if len(seen) > 1:
        raise EstimateError(f"the sample was billed in several currencies ({sorted(seen)}): no one total")
    return next(iter(seen), None)


def _shown(sampled: _Sampled, outcome: RowOutcome) -> dict[str, Any]:
    price = outcome.total_price
    return {
        "id": _json_id(sampled.row_id),
        "prompt": sampled.excerpt,
        "answer": _excerpt(outcome.answer if outcome.status == SUCCEEDED else outcome.error, ANSWER_EXCERPT),
        "status": outcome.status,
        "total_tokens": outcome.total_tokens,
        "total_price": decimal_text(price) if price is not None else None,
    }


def _json_id(value: Any) -> Any:
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else str(value)


__all__ = [
    "DEFAULT_SAMPLE_ROWS",
    "MAX_SAMPLE_ROWS",
    "PilotResult",
    "RecordingSink",
    "Reservoir",
    "check_pilot",
    "prompt_length",
    "run_pilot",
]
