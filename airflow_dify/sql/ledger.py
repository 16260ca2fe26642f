"""The usage ledger: one append-only row per Dify call that was billed or may have been.

Result columns say what a row's *current* answer cost; they are replaced when a row is asked
again. The ledger keeps every call: re-runs, ``redo="all"``, retries after a timeout and the
calls a crashed try left behind each add a row, and nothing is ever updated or deleted, so
``SUM(total_price)`` is what was spent. Entries are inserted in the same transaction as the
row's result (see :mod:`airflow_dify.sql.writer`), so the ledger and the results never disagree.

Outcomes:

- ``succeeded``: the call answered; usage and price are Dify's.
- ``failed``: the call ran and failed, and Dify reported what it used (a failed workflow run, an
  answer that did not fit ``output_schema``); usage and price are Dify's.
- ``maybe_billed``: the call may have run (timeout, 504, broken stream; or a crashed try had the
  row claimed and never wrote it back): price unknown (NULL), so the row says so instead of
  guessing. A call that Dify refused (4xx) or that never left is not billed and not recorded.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from airflow_dify.outcome import RowOutcome, TakenOver
from airflow_dify.sql.claims import batches
from airflow_dify.sql.connection import SqlConnection, error_brief
from airflow_dify.sql.errors import SqlTableError
from airflow_dify.sql.params import Params

log = logging.getLogger("airflow_dify.sql.table")

DEFAULT_LEDGER_TABLE = "dify_usage_ledger"
SUCCEEDED, FAILED, MAYBE_BILLED = "succeeded", "failed", "maybe_billed"
LEDGER_OUTCOMES = (SUCCEEDED, FAILED, MAYBE_BILLED)

#: Column -> (PostgreSQL, MySQL, SQLite) type. Prices are exact decimals (text on SQLite).
_COLUMNS: dict[str, tuple[str, str, str]] = {
    "entry_id": ("VARCHAR(32) PRIMARY KEY", "VARCHAR(32) PRIMARY KEY", "TEXT PRIMARY KEY"),
    "recorded_at": ("TIMESTAMP WITH TIME ZONE", "DATETIME(6)", "TEXT"),
    "dag_id": ("VARCHAR(250)", "VARCHAR(250)", "TEXT"),
    "run_id": ("VARCHAR(250)", "VARCHAR(250)", "TEXT"),
    "task_id": ("VARCHAR(250)", "VARCHAR(250)", "TEXT"),
    "map_index": ("INTEGER", "INTEGER", "INTEGER"),
    "try_number": ("INTEGER", "INTEGER", "INTEGER"),
    "source_table": ("VARCHAR(250)", "VARCHAR(250)", "TEXT"),
    "row_id": ("VARCHAR(250)", "VARCHAR(250)", "TEXT"),
    "app_mode": ("VARCHAR(32)", "VARCHAR(32)", "TEXT"),
    "workflow_id": ("VARCHAR(64)", "VARCHAR(64)", "TEXT"),
    "message_id": ("VARCHAR(64)", "VARCHAR(64)", "TEXT"),
    "workflow_run_id": ("VARCHAR(64)", "VARCHAR(64)", "TEXT"),
    "prompt_tokens": ("BIGINT", "BIGINT", "INTEGER"),
    "completion_tokens": ("BIGINT", "BIGINT", "INTEGER"),
    "total_tokens": ("BIGINT", "BIGINT", "INTEGER"),
    "total_price": ("NUMERIC(24,10)", "DECIMAL(24,10)", "TEXT"),
    "currency": ("VARCHAR(8)", "VARCHAR(8)", "TEXT"),
    "latency_ms": ("INTEGER", "INTEGER", "INTEGER"),
    "outcome": ("VARCHAR(16)", "VARCHAR(16)", "TEXT"),
    "error_code": ("VARCHAR(64)", "VARCHAR(64)", "TEXT"),
    "trace_id": ("VARCHAR(128)", "VARCHAR(128)", "TEXT"),
}
LEDGER_COLUMNS = tuple(_COLUMNS)
_DIALECT_INDEX = {"postgres": 0, "mysql": 1, "sqlite": 2}


@dataclass(frozen=True)
class LedgerContext:
    """Who made the calls: the same on every entry of one run (Airflow task try, or a script)."""

    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    try_number: int | None = None
    source_table: str | None = None
    app_mode: str | None = None
    #: The pinned workflow version (``workflow_id=``), when the run pins one.
    workflow_id: str | None = None


def entries(outcome: RowOutcome) -> list[dict[str, Any]]:
    """The ledger entries one outcome stands for: its earlier maybe-billed attempts, then itself.

    Varying fields only; :class:`Ledger` adds the run's context. Empty for a row that made no
    billable call (a bad prompt, a 4xx refusal).
    """
    retried = {"outcome": MAYBE_BILLED, "error_code": "retried", "trace_id": outcome.trace_id}
    earlier = [retried] * outcome.earlier_maybe_billed
    final = _final(outcome)
    return earlier if final is None else [*earlier, final]


def _final(outcome: RowOutcome) -> dict[str, Any] | None:
    if outcome.status == SUCCEEDED:
        kind = SUCCEEDED
    elif outcome.maybe_billed:
        kind = MAYBE_BILLED
    elif outcome.total_price is not None or outcome.total_tokens:
        kind = FAILED  # it ran and Dify reported what it used
    else:
        return None
    return {
        "outcome": kind,
        "error_code": outcome.error_code,
        "message_id": outcome.message_id if outcome.message_id != outcome.workflow_run_id else None,
        "workflow_run_id": outcome.workflow_run_id,
        "workflow_id": outcome.workflow_id,
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "total_tokens": outcome.total_tokens,
        "total_price": outcome.total_price,
        "currency": outcome.currency,
        "latency_ms": outcome.latency_ms,
        "trace_id": outcome.trace_id,
    }


class Ledger:
    """Inserts ledger entries on one connection; the caller owns the transaction."""

    def __init__(self, db: SqlConnection, table: str, context: LedgerContext) -> None:
        self.db, self.table, self.context = db, table, context
        self.q_table = db.dialect.quote(table, "ledger_table", qualified=True)
        self._sql = ""

    def bind_app(self, app_mode: str, workflow_id: str | None) -> None:
        """The app the run calls, known after pre-flight."""
        self.context = replace(self.context, app_mode=app_mode, workflow_id=workflow_id)

    def ensure(self) -> None:
        """Create the ledger when missing; refuse one that lacks a column (named), before any call."""
        index = _DIALECT_INDEX.get(self.db.dialect.name, 0)
        defs = ", ".join(f"{name} {types[index]}" for name, types in _COLUMNS.items())
        try:
            self.db.execute_commit(f"CREATE TABLE IF NOT EXISTS {self.q_table} ({defs})")
            probe = self.db.column_names(f"SELECT * FROM {self.q_table} WHERE 1=0")
        except Exception as exc:
            brief = error_brief(exc)
            raise SqlTableError(f"ledger_table {self.table!r}: cannot be created ({brief})") from exc
        missing = sorted(set(LEDGER_COLUMNS) - {c.lower() for c in probe})
        if missing:
            raise SqlTableError(
                f"ledger_table {self.table!r} exists without column(s) {missing}: it is not a usage "
                "ledger of this provider; pass another ledger_table="
            )

    def _insert(self) -> str:
        if not self._sql:
            params = Params(self.db.dialect, None)
            marks = ", ".join(params.add(None) for _ in LEDGER_COLUMNS)
            self._sql = f"INSERT INTO {self.q_table} ({', '.join(LEDGER_COLUMNS)}) VALUES ({marks})"
        return self._sql

    def rows(self, outcomes: Iterable[RowOutcome]) -> list[list[Any]]:
        """Bound values for every entry of ``outcomes``."""
        now = dt.datetime.now(dt.timezone.utc)
        rows = []
        for outcome in outcomes:
            for entry in entries(outcome):
                rows.append(self._values(entry, outcome.row_id, now))
        return rows

    def _values(self, entry: dict[str, Any], row_id: Any, now: dt.datetime) -> list[Any]:
        ctx = self.context
        base = {
            "entry_id": uuid.uuid4().hex,
            "recorded_at": now,
            "dag_id": ctx.dag_id,
            "run_id": ctx.run_id,
            "task_id": ctx.task_id,
            "map_index": ctx.map_index,
            "try_number": ctx.try_number,
            "source_table": ctx.source_table,
            "row_id": None if row_id is None else str(row_id),
            "app_mode": ctx.app_mode,
            "workflow_id": ctx.workflow_id,
        }
        merged = {**base, **{k: v for k, v in entry.items() if v is not None}}
        adapt = self.db.dialect.adapt
        return [adapt(name, merged.get(name)) for name in LEDGER_COLUMNS]

    def add(self, cur: Any, outcomes: Sequence[RowOutcome]) -> int:
        """Insert the entries of ``outcomes`` with cursor ``cur`` (inside the caller's transaction)."""
        rows = self.rows(outcomes)
        if rows:
            cur.executemany(self._insert(), rows)
        return len(rows)

    def add_lost(self, cur: Any, taken_over: Sequence[tuple[Any, Any]]) -> int:
        """Entries for rows a crashed run had claimed and never wrote: it may have called them.

        ``taken_over``: (row id, the dead owner's claim token ``<scope>:<try>:<nonce>``). An upper
        bound: the dead run had claimed a page, of which at most ``max_concurrency`` were in flight.
        """
        now = dt.datetime.now(dt.timezone.utc)
        rows = []
        for row_id, token in taken_over:
            entry: dict[str, Any] = {"outcome": MAYBE_BILLED, "error_code": "lost_in_crash"}
            try_number = _try_of(token)
            if try_number is not None:
                entry["try_number"] = try_number
            rows.append(self._values(entry, row_id, now))
        if rows:
            cur.executemany(self._insert(), rows)
        return len(rows)

    def take_over(self, cur: Any, taken_over: Sequence[tuple[Any, Any]]) -> dict[str, TakenOver]:
        """Record the rows taken from a crashed try (:meth:`add_lost`) and say what is known of each.

        Returns row key (``str(row id)``) -> :class:`TakenOver`, so the new try can look a row's
        lost call up in Dify (``user_per_row``) and tell it from answers already on the ledger.
        """
        self.add_lost(cur, taken_over)
        known: dict[str, set[str]] = {str(row_id): set() for row_id, _ in taken_over}
        if self.context.source_table is not None:
            for chunk in batches(list(known)):
                params = Params(self.db.dialect, None)
                table = params.add(self.context.source_table)
                cur.execute(
                    f"SELECT row_id, message_id, workflow_run_id FROM {self.q_table} "
                    f"WHERE source_table = {table} AND row_id IN ({params.many(chunk)})",
                    params.values,
                )
                for row_id, message_id, run_id in cur.fetchall():
                    known[str(row_id)].update(str(v) for v in (message_id, run_id) if v is not None)
        return {
            str(row_id): TakenOver(_try_of(token), frozenset(known[str(row_id)]))
            for row_id, token in taken_over
        }


def _try_of(token: Any) -> int | None:
    parts = str(token or "").split(":")
    try:
        return int(parts[1]) if len(parts) == 3 else None
    except ValueError:
        return None


__all__ = [
    "DEFAULT_LEDGER_TABLE",
    "LEDGER_COLUMNS",
    "LEDGER_OUTCOMES",
    "Ledger",
    "LedgerContext",
    "entries",
]
