"""Writing outcomes back: group commits that never lose a paid answer and never undo a success.

A group of outcomes is written in one transaction. If that fails on the data (a NUL byte
PostgreSQL refuses, a CHECK constraint, a value too long), the group is written row by row: every
other row is saved, and the offending one is stored sanitised (NUL removed, noted in ``error``) or,
if even that fails, as ``failed`` with the database's reason; its usage and price are kept when
they can be. A failed re-run of a row that already has an answer records only the attempt
(``error``, ``attempts``): the answer, usage, price, status and ``input_hash`` stay.
Writing a row also releases this run's claim on it, in the same statement, and inserts its usage
ledger entries (see :mod:`airflow_dify.sql.ledger`) in the same transaction.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import operator
import time
from collections.abc import Callable, Sequence
from typing import Any

from airflow_dify.outcome import ATTEMPT_FIELDS, COLUMN_FIELDS, FAILED, ResultColumns, RowOutcome
from airflow_dify.sql.connection import SqlConnection, error_brief
from airflow_dify.sql.dialects import Dialect
from airflow_dify.sql.errors import SqlWriteError
from airflow_dify.sql.ledger import Ledger
from airflow_dify.sql.output_types import OutputColumn, output_placeholder, output_value
from airflow_dify.sql.params import Params

log = logging.getLogger("airflow_dify.sql.table")

#: DB-API error classes that mean the connection or server failed, not the data: retry the group.
_TRANSIENT = frozenset({"OperationalError", "InterfaceError"})
#: Fields kept when a row's result cannot be stored: what finance needs.
_MONEY_FIELDS: tuple[str, ...] = ("status", "error", "attempts", "answered_at", "prompt_tokens")
_MONEY_FIELDS += ("completion_tokens", "total_tokens", "total_price", "currency", "message_id")
_MONEY_FIELDS += ("conversation_id", "input_hash")


#: Values every driver binds as they are (Dialect.adapt would return them unchanged).
_BOUND_AS_IS = frozenset({str, int, float, bool, type(None)})


@functools.cache
def _getter(fields: tuple[str, ...]) -> Callable[[RowOutcome], tuple[Any, ...]]:
    if len(fields) == 1:  # attrgetter of one name returns the value, not a tuple
        (name,) = fields
        return lambda outcome: (getattr(outcome, name),)
    return operator.attrgetter(*fields)


def _transient(exc: BaseException) -> bool:
    return any(cls.__name__ in _TRANSIENT for cls in type(exc).__mro__)


def _reason(exc: BaseException) -> str:
    """Driver class, SQLSTATE and the first line of its message (it can quote this row only)."""
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{error_brief(exc)}: {first}" if first else error_brief(exc)


def sanitised(outcome: RowOutcome) -> tuple[RowOutcome, str | None]:
    """The outcome with NUL characters and unpaired surrogates removed from its text fields."""
    changes: dict[str, Any] = {}
    notes: list[str] = []
    for name in ("answer", "error", "message_id", "conversation_id", "currency"):
        fixed = _clean_text(getattr(outcome, name), name, notes)
        if fixed is not None:
            changes[name] = fixed
    if outcome.outputs:
        outputs = dict(outcome.outputs)
        for column, value in outcome.outputs.items():
            fixed = _clean_text(value, column, notes)
            if fixed is not None:
                outputs[column] = fixed
        if outputs != dict(outcome.outputs):
            changes["outputs"] = outputs
    if not changes:
        return outcome, None
    note = "stored with " + "; ".join(notes)
    error = f"{outcome.error}; {note}" if outcome.error else note
    return dataclasses.replace(outcome, **changes, error=error), note


def _clean_text(value: Any, name: str, notes: list[str]) -> str | None:
    """``value`` without NULs and unpaired surrogates, or None when it is not text or already clean."""
    if not isinstance(value, str):
        return None
    nuls = value.count("\x00")
    clean = value.replace("\x00", "")
    fixed = clean.encode("utf-8", "replace").decode("utf-8")
    if fixed == value:
        return None
    if nuls:
        notes.append(f"{nuls} NUL character(s) removed from {name}")
    if fixed != clean:
        notes.append(f"unencodable characters replaced in {name}")
    return fixed


class ResultWriter:
    """UPDATEs of result rows by id on one table.

    :param store: quoted name of the table that holds the results.
    :param q_id: quoted id column.
    :param q_result: logical field -> quoted column.
    :param q_claim: quoted (claimed_by, claimed_until), or None without claims.
    :param owner: this run's claim token (claims are released only if still ours).
    :param outputs: the typed output columns written with each full result.
    :param ledger: the usage ledger that gets each written row's billed calls (None: no ledger).
    """

    def __init__(
        self,
        db: SqlConnection,
        table: str,
        store: str,
        q_id: str,
        q_result: dict[str, str],
        q_claim: tuple[str, str] | None,
        owner: str,
        *,
        retries: int = 3,
        backoff: float = 0.5,
        on_written: Callable[[Sequence[Any]], None] | None = None,
        outputs: Sequence[OutputColumn] = (),
        ledger: Ledger | None = None,
    ) -> None:
        self.db, self.table, self.store, self.q_id = db, table, store, q_id
        self.q_result, self.q_claim, self.owner = q_result, q_claim, owner
        self.retries, self.backoff = retries, backoff
        self.on_written = on_written
        self.outputs = {o.field: o for o in outputs}
        self.ledger = ledger
        #: Outcomes that could not be stored at all (logged); the summary reports them.
        self.unsaved: list[Any] = []

    def _sql(self, fields: Sequence[str]) -> tuple[str, int]:
        """UPDATE setting ``fields`` (then releasing our claim); returns (sql, owner params)."""
        params = Params(self.db.dialect, None)
        sets = [f"{self._column(f)} = {self._placeholder(f, params.add(None))}" for f in fields]
        owners = 0
        if self.q_claim is not None:
            by, until = self.q_claim
            # MySQL evaluates SET left to right: release the lease before the owner it tests.
            sets.append(f"{until} = CASE WHEN {by} = {params.add(None)} THEN NULL ELSE {until} END")
            sets.append(f"{by} = CASE WHEN {by} = {params.add(None)} THEN NULL ELSE {by} END")
            owners = 2
        sql = f"UPDATE {self.store} SET {', '.join(sets)} WHERE {self.q_id} = {params.add(None)}"
        return sql, owners

    def _column(self, field: str) -> str:
        output = self.outputs.get(field)
        return output.quoted if output is not None else self.q_result[field]

    def _placeholder(self, field: str, placeholder: str) -> str:
        output = self.outputs.get(field)
        return output_placeholder(self.db.dialect.name, output.kind, placeholder) if output else placeholder

    def _row(self, fields: tuple[str, ...], owners: int, outcome: RowOutcome, dialect: Dialect) -> list[Any]:
        if not self.outputs:  # the common case, on the hot path: one C call reads every field
            values = [
                v if type(v) in _BOUND_AS_IS else dialect.adapt(f, v)
                for f, v in zip(fields, _getter(fields)(outcome), strict=True)
            ]
            return values + [self.owner] * owners + [outcome.row_id]
        values = []
        for f in fields:
            output = self.outputs.get(f)
            if output is None:
                values.append(dialect.adapt(f, getattr(outcome, f)))
            else:
                value = (outcome.outputs or {}).get(output.name)
                values.append(output_value(dialect.name, output.kind, value))
        return values + [self.owner] * owners + [outcome.row_id]

    def _plan(self, outcomes: Sequence[RowOutcome]) -> list[tuple[str, list[list[Any]]]]:
        """Statements for one group: full results, and attempts on rows that keep their answer."""
        full = [o for o in outcomes if not o.keeps_prior_answer]
        attempts = [o for o in outcomes if o.keeps_prior_answer]
        plan = []
        # Output columns go with every full result: NULL when the answer had none (a failed row).
        every = (*COLUMN_FIELDS, *self.outputs)
        dialect = self.db.dialect
        for fields, group in ((every, full), (ATTEMPT_FIELDS, attempts)):
            if group:
                sql, owners = self._sql(fields)
                plan.append((sql, [self._row(fields, owners, o, dialect) for o in group]))
        return plan

    def _execute(self, plan: list[tuple[str, list[list[Any]]]], billed: Sequence[RowOutcome]) -> int:
        """Run ``plan`` and insert the ledger entries of ``billed``, in one transaction."""
        updated = 0
        with self.db.transaction() as cur:
            for sql, rows in plan:
                cur.executemany(sql, rows)
                count = cur.rowcount
                updated = -1 if updated < 0 or not isinstance(count, int) or count < 0 else updated + count
            if self.ledger is not None and billed:
                self.ledger.add(cur, billed)
        return updated

    def write(self, outcomes: Sequence[RowOutcome], ledger_only: Sequence[RowOutcome] = ()) -> None:
        """Write one group; falls back to row by row so one bad row never costs the others.

        ``ledger_only``: outcomes whose rows stay as they are (held back by the circuit breaker)
        but whose calls may have been billed: only their ledger entries are written.
        """
        if not outcomes:
            self._ledger_alone(ledger_only)
            return
        first_id = outcomes[0].row_id
        for attempt in range(1, self.retries + 2):
            try:
                updated = self._execute(self._plan(outcomes), [*outcomes, *ledger_only])
            except Exception as exc:
                if _transient(exc) and attempt <= self.retries:
                    delay = self.backoff * 2 ** (attempt - 1)
                    log.warning(
                        "table %s: write attempt %d/%d (chunk starting at id %r) failed: %s; retry in %.2fs",
                        self.table,
                        attempt,
                        self.retries + 1,
                        first_id,
                        error_brief(exc),
                        delay,
                    )
                    time.sleep(delay)
                    continue
                log.warning(
                    "table %s: writing %d result(s) together failed (%s); writing them one by one",
                    self.table,
                    len(outcomes),
                    error_brief(exc),
                )
                try:
                    self._one_by_one(outcomes, exc)
                finally:
                    self._ledger_alone(ledger_only)
                return
            if 0 <= updated < len(outcomes):
                log.warning(
                    "table %s: %d of %d result rows matched no id (chunk starting at id %r)",
                    self.table,
                    len(outcomes) - updated,
                    len(outcomes),
                    first_id,
                )
            self._written(outcomes)
            return

    def _written(self, outcomes: Sequence[RowOutcome]) -> None:
        if self.on_written is not None:
            self.on_written([o.row_id for o in outcomes])

    def _one_by_one(self, outcomes: Sequence[RowOutcome], group_error: BaseException) -> None:
        stored = 0
        last_error: BaseException = group_error
        for outcome in outcomes:
            error = self._store_one(outcome)
            if error is None:
                stored += 1
            else:
                last_error = error
        if stored == 0:
            raise SqlWriteError(
                f"writing {len(outcomes)} result row(s) to table {self.table!r} failed, one by one too "
                f"(chunk starting at id {outcomes[0].row_id!r}): {error_brief(last_error)}"
            ) from last_error

    def _store_one(self, outcome: RowOutcome) -> BaseException | None:
        """Try the row as is, then sanitised, then as a failure keeping its money; None when stored."""
        clean, _note = sanitised(outcome)
        try:
            self._execute(self._plan([outcome]), [outcome])
            self._written([outcome])
            return None
        except Exception as exc:  # noqa: BLE001 - the next, safer form is tried
            first = exc
        try:
            self._execute(self._plan([clean]), [outcome])
            self._written([outcome])
            log.warning(
                "table %s: row %r stored sanitised (%s)", self.table, outcome.row_id, error_brief(first)
            )
            return None
        except Exception:  # noqa: BLE001
            pass
        reason = f"the result could not be stored ({_reason(first)})"
        for fields in (_MONEY_FIELDS, ("status", "error", "attempts", "answered_at")):
            failure = dataclasses.replace(clean, status=FAILED, error=reason[:1000], answer=None)
            sql, owners = self._sql(fields)
            try:
                with self.db.transaction() as cur:
                    cur.execute(sql, self._row(fields, owners, failure, self.db.dialect))
                    if self.ledger is not None:
                        self.ledger.add(cur, [outcome])  # the call's real usage, not the failure's
                self._written([outcome])
                log.warning(
                    "table %s: row %r stored as failed: %s", self.table, outcome.row_id, error_brief(first)
                )
                return None
            except Exception as exc:  # noqa: BLE001
                last = exc
        if self.ledger is not None and self._without_ledger(outcome):
            return None
        log.error(
            "table %s: the result of row %r could not be stored at all (%s); it stays claimed until "
            "its lease ends, then pending",
            self.table,
            outcome.row_id,
            error_brief(last),
        )
        self.unsaved.append(outcome.row_id)
        self._ledger_alone([outcome])
        return last

    def _without_ledger(self, outcome: RowOutcome) -> bool:
        """Last resort when the ledger itself refuses: keep the paid answer, log the money."""
        try:
            self._execute(self._plan([outcome]), ())
        except Exception:  # noqa: BLE001 - the caller reports the original error
            return False
        self._written([outcome])
        self._ledger_alone([outcome])
        return True

    def _ledger_alone(self, outcomes: Sequence[RowOutcome]) -> None:
        """Ledger entries without a result write; on failure, the money is at least in the log."""
        if self.ledger is None or not outcomes:
            return
        try:
            with self.db.transaction() as cur:
                self.ledger.add(cur, outcomes)
        except Exception as exc:  # noqa: BLE001 - logged with what finance needs
            for outcome in outcomes:
                log.error(
                    "ledger %s: the call of row %r (total_price %s %s, message %s) could not be recorded: %s",
                    self.ledger.table,
                    outcome.row_id,
                    outcome.total_price,
                    outcome.currency or "",
                    outcome.message_id,
                    error_brief(exc),
                )


def result_columns_sql(columns: ResultColumns, quote: Callable[[str, str], str]) -> dict[str, str]:
    return {f: quote(c, f"result_columns.{f}") for f, c in columns.items()}


__all__ = ["ResultWriter", "result_columns_sql", "sanitised"]
