"""The contract between the engine and every row source / result sink: outcomes and column names.

Kept below both the engine (``batch/``) and the sinks (``sql/``, the DataFrame path) so neither
imports the other.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

SUCCEEDED = "succeeded"
FAILED = "failed"
#: Which rows a run selects: NULL status only, also failed ones, every row, or rows whose content
#: changed since they were answered (compared by ``input_hash``).
REDO_MODES = ("pending", "failed", "all", "changed")
#: Key under which sources put each row's current status value.
STATUS_KEY = "__status__"
#: Key under which sources put each row's stored input_hash (``redo="changed"``).
HASH_KEY = "__input_hash__"
#: Key under which a source marks a row that a crashed try had claimed and never wrote back.
TAKEN_OVER_KEY = "__taken_over__"


@dataclass(frozen=True)
class TakenOver:
    """A row a crashed try held: it may have asked Dify and been billed, the answer unseen.

    :param try_number: the dead try's number (its calls' trace ids name it), when known.
    :param known_messages: message ids the usage ledger already holds for the row, so an older
        answer is never mistaken for the lost call's.
    """

    try_number: int | None
    known_messages: frozenset[str]


@dataclass(frozen=True)
class ResultColumns:
    """Names of the columns written back; every one can be renamed by the user."""

    answer: str = "answer"
    status: str = "status"
    error: str = "error"
    prompt_tokens: str = "prompt_tokens"
    completion_tokens: str = "completion_tokens"
    total_tokens: str = "total_tokens"
    total_price: str = "total_price"
    currency: str = "currency"
    latency_ms: str = "latency_ms"
    message_id: str = "message_id"
    conversation_id: str = "conversation_id"
    answered_at: str = "answered_at"
    attempts: str = "attempts"
    #: The published workflow version that answered (workflow and chatflow apps).
    workflow_id: str = "workflow_id"
    #: sha256 of what was sent (app family, query, inputs): lets redo="changed" find edited rows.
    input_hash: str = "input_hash"
    #: The X-Trace-Id the row's call carried: finds it in Dify's logs and Langfuse/LangSmith traces.
    trace_id: str = "trace_id"

    @classmethod
    def with_overrides(cls, overrides: dict[str, str] | None) -> ResultColumns:
        overrides = dict(overrides or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"result_columns: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**overrides)

    def items(self) -> list[tuple[str, str]]:
        """(logical field, column name) in a stable order."""
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


@dataclass(kw_only=True)
class TokenTotals:
    """Token counts summed over rows (run summaries, the daily cost report)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add_tokens(self, prompt: Any, completion: Any, total: Any) -> None:
        """Add one row's counts; NULL counts as 0 (a failed call reports none)."""
        self.prompt_tokens += int(prompt or 0)
        self.completion_tokens += int(completion or 0)
        self.total_tokens += int(total or 0)

    def tokens(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class RowOutcome:
    """The settled result of one row: written back as one UPDATE."""

    row_id: Any
    status: str  # SUCCEEDED | FAILED
    answer: str | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    total_price: Decimal | None = None
    currency: str | None = None
    latency_ms: int | None = None
    message_id: str | None = None
    conversation_id: str | None = None
    answered_at: dt.datetime | None = None  # timezone-aware UTC
    attempts: int = 1
    workflow_id: str | None = None
    input_hash: str | None = None  # None when the row could not be turned into a request
    trace_id: str | None = None  # the X-Trace-Id the call was sent with (None: no call made)
    #: Dify error code for summaries ("too_many_requests", "invalid_param", ...); not a column.
    error_code: str | None = None
    #: True when the outcome is ambiguous: the request may have run and been billed.
    maybe_billed: bool = False
    #: The row's status before this run (from the source): a failure never replaces a success.
    prior_status: str | None = None
    #: "systemic" or "unavailable" when the error is not this row's own (see batch/breaker.py).
    failure: str | None = None
    #: Output column -> value, when the batch maps outputs to columns (see batch/outputs.py).
    outputs: Mapping[str, Any] | None = None
    #: The workflow run that answered (workflow and chatflow apps); ``message_id`` holds it for
    #: workflow apps, which have no message. Not a column: the usage ledger keeps it.
    workflow_run_id: str | None = None
    #: Earlier attempts of this call that may have been billed (re-sent after a timeout or 504):
    #: each is one ``maybe_billed`` entry in the usage ledger.
    earlier_maybe_billed: int = 0

    @property
    def keeps_prior_answer(self) -> bool:
        """A failed call on a row that already has an answer: sinks record only the attempt.

        Not when the failure is the new answer itself (``invalid_output``): that answer was paid
        for and asked for, so it is stored, raw, with the reason.
        """
        return (
            self.status == FAILED and self.prior_status == SUCCEEDED and self.error_code != "invalid_output"
        )

    def column_values(self) -> dict[str, Any]:
        """Logical field -> value, for the fields that are columns (see ResultColumns)."""
        return {name: getattr(self, name) for name in COLUMN_FIELDS}


#: Logical names of the result columns, in ResultColumns order (computed once: hot path).
COLUMN_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ResultColumns))
#: Fields an attempt on an already answered row may change (see ``keeps_prior_answer``).
ATTEMPT_FIELDS = ("error", "attempts")


def check_shard(shard: Any) -> tuple[int, int]:
    """``(index, count)`` with ``0 <= index < count``, or ValueError naming what is wrong."""
    try:
        index, count = shard
    except (TypeError, ValueError):
        raise ValueError(f"shard: expected (index, count), got {shard!r}") from None
    ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (index, count))
    if not ok or count < 1 or not 0 <= index < count:
        raise ValueError(f"shard: expected integers with 0 <= shard_index < shard_count, got {shard!r}")
    return index, count
