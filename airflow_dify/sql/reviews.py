"""Review columns: analysts' verdicts on answers, and what the provider sent back to Dify.

Analysts write ``review_verdict`` (``like`` | ``dislike``) and optionally ``review_note`` into the
table that holds the results (the prompts table, or ``results_table``). The provider records in
``feedback_sent`` the verdict + note it last handed to Dify, as a short signature (``like``,
``dislike:<16 hex of the note's sha256>``, ``null`` once revoked), in ``feedback_sent_at`` when,
and in ``feedback_error`` why Dify refused it. A row's signature now, compared with
``feedback_sent``, tells a new, changed or cleared verdict from one already sent, with no second
table.

Ownership: the provider writes only the three ``feedback_*`` columns, so those must be its own
(created by it and registered in ``airflow_dify_columns``, like result columns); it only reads the
verdict and note, so columns the analysts made themselves are used as they are. Missing columns
are created and registered. Column types are those of the result column each one resembles.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

from airflow_dify.outcome import ResultColumns
from airflow_dify.sql.connection import SqlConnection, error_brief
from airflow_dify.sql.dialects import DIALECTS, InvalidText, quote_identifier, type_holds
from airflow_dify.sql.errors import SqlTableError
from airflow_dify.sql.params import Params
from airflow_dify.sql.schema import Columns, Schema
from airflow_dify.sql.selection import Layout, selection_terms

log = logging.getLogger("airflow_dify.sql.reviews")

RATINGS = ("like", "dislike")
#: Signature of "no verdict": what ``feedback_sent`` holds once a rating was revoked.
REVOKED = "null"


@dataclass(frozen=True)
class ReviewColumns:
    """Names of the review columns; every one can be renamed (keys are the default names)."""

    review_verdict: str = "review_verdict"
    review_note: str = "review_note"
    feedback_sent_at: str = "feedback_sent_at"
    feedback_sent: str = "feedback_sent"
    feedback_error: str = "feedback_error"

    @classmethod
    def with_overrides(cls, overrides: dict[str, str] | None) -> ReviewColumns:
        overrides = dict(overrides or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise SqlTableError(f"review_columns: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**overrides)

    def items(self) -> list[tuple[str, str]]:
        """(field, column name) in a stable order."""
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


#: The columns the provider writes (and so must own); the others it only reads.
WRITTEN = ("feedback_sent_at", "feedback_sent", "feedback_error")
#: Each review column is typed and checked like the result column it resembles.
_LIKE = {
    "review_verdict": "status",
    "review_note": "error",
    "feedback_sent_at": "answered_at",
    "feedback_sent": "input_hash",
    "feedback_error": "error",
}


def clean_verdict(value: Any) -> str | None:
    """The verdict as Dify spells it (``" Like "`` -> ``"like"``); None when empty."""
    if value is None:
        return None
    text = str(value).strip().lower()  # undecodable text (InvalidText) is no verdict Dify knows
    return text or None


def clean_note(value: Any) -> str | None:
    """The note as sent (ends stripped); None when empty. Undecodable text raises ValueError."""
    if value is None:
        return None
    if isinstance(value, InvalidText):
        raise ValueError(f"review_note: {value.message}")
    text = str(value).strip()
    return text or None


def signature(rating: str | None, note: str | None) -> str:
    """What ``feedback_sent`` records for a verdict + note (a revocation has no note)."""
    if rating is None:
        return REVOKED
    if note is None:
        return rating
    return f"{rating}:{hashlib.sha256(note.encode('utf-8')).hexdigest()[:16]}"


@dataclass(frozen=True)
class ReviewRow:
    """One row with a verdict, or with feedback sent before (as read)."""

    row_id: Any
    message_id: Any
    verdict: Any
    note: Any
    sent: str | None
    error: str | None


@dataclass(frozen=True)
class ReviewWrite:
    """What to record for one row: ``sent`` (and ``sent_at``) when Dify settled the verdict,
    ``error`` always (None clears it). ``sent`` None writes only the error: the verdict stays to do."""

    row_id: Any
    error: str | None
    sent: str | None = None
    sent_at: dt.datetime | None = None


class ReviewTable:
    """The review columns of the table that holds results, over one DB-API connection.

    :param connect: zero-argument DB-API connection factory (e.g. ``hook.get_conn``).
    :param table: the prompts table or view the batch answered.
    :param dialect: ``sqlite``, ``postgres``, ``mysql`` or ``generic``.
    :param id_column: the unique key the results are stored by.
    :param results_table: the results live there (as for the batch), not in ``table``.
    :param result_columns: the batch's result column names (``message_id`` is read).
    :param columns: the review column names.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        table: str,
        *,
        dialect: str,
        id_column: str = "id",
        results_table: str | None = None,
        result_columns: ResultColumns = ResultColumns(),  # noqa: B008 - frozen dataclass
        columns: ReviewColumns = ReviewColumns(),  # noqa: B008 - frozen dataclass
    ) -> None:
        if dialect not in DIALECTS:
            raise SqlTableError(f"dialect: {dialect!r} is not one of {list(DIALECTS)}")
        self.table, self.results_table, self.id_column = table, results_table, id_column
        self.store = results_table or table
        self.columns = columns
        self.message_id_column = result_columns.message_id
        q_table = quote_identifier(table, "table", qualified=True, dialect=dialect)
        q_store = (
            quote_identifier(results_table, "results_table", qualified=True, dialect=dialect)
            if results_table
            else q_table
        )
        self._q_id = quote_identifier(id_column, "id_column", dialect=dialect)
        self._q_message = quote_identifier(
            self.message_id_column, "result_columns.message_id", dialect=dialect
        )
        self._q = {f: quote_identifier(c, f"review_columns.{f}", dialect=dialect) for f, c in columns.items()}
        names = [c.lower() for _, c in columns.items()]
        taken = {id_column.lower(), *(c.lower() for _, c in result_columns.items())}
        clash = sorted({c for c in names if names.count(c) > 1} | (taken & set(names)))
        if clash:
            raise SqlTableError(
                f"review_columns: names {clash} are used twice or clash with id_column or the result columns"
            )
        self._store_sql = q_store
        self._layout = Layout(q_table, q_store, self._q_id, in_place=results_table is None)
        self._db = SqlConnection(connect, dialect)
        self._schema = Schema(self._db, dialect)

    def __repr__(self) -> str:
        return f"ReviewTable(store={self.store!r}, dialect={self._db.dialect_name!r})"

    def close(self) -> None:
        self._db.discard()

    def __enter__(self) -> ReviewTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- making it ready ------------------------------------------------------------------------
    def prepare(self) -> list[str]:
        """Check the store and create the missing review columns; return the names added.

        Raises SqlTableError, before any call, when the results are not there yet, when a
        ``feedback_*`` column exists that the provider did not create, or when a column's type
        cannot hold what goes in it.
        """
        if self.results_table is not None:
            self._schema.require(self.table, [("id_column", self.id_column)])
        self._schema.ensure_registry()
        with self._db.lock:
            cols = self._schema.columns(self.store)
            if cols is None:
                raise SqlTableError(self._schema.missing_table_message(self.store, self._setting()) + _FIRST)
            wanted = [("id_column", self.id_column), ("result_columns.message_id", self.message_id_column)]
            missing = [(setting, name) for setting, name in wanted if cols.find(name) is None]
            if missing:
                listed = ", ".join(f"{setting}={name!r}" for setting, name in missing)
                raise SqlTableError(f"table {self.store!r} has no column(s) {listed}{_FIRST}")
            self._refuse(cols, self._schema.owned(self.store))
            added = self._add_missing()
        if added:
            log.info("table %s: added review columns %s", self.store, added)
        return added

    def _setting(self) -> str:
        return "results_table" if self.results_table else "table"

    def _refuse(self, cols: Columns, owned: set[str]) -> None:
        present = [(f, found) for f, c in self.columns.items() if (found := cols.find(c)) is not None]
        foreign = [(f, found) for f, found in present if f in WRITTEN and found.lower() not in owned]
        if foreign:
            listed = ", ".join(f"{found} ({cols.type_of(found) or 'untyped'})" for _, found in foreign)
            renames = {f: f"dify_{found}" for f, found in foreign}
            raise SqlTableError(
                f"table {self.store!r} already has column(s) the provider did not create: {listed}. It "
                f"writes only to columns it created, so nothing was sent or written: rename them "
                f"(review_columns={renames})."
            )
        wrong = [found for f, found in present if not type_holds(_LIKE[f], cols.type_of(found))]
        if wrong:
            listed = ", ".join(f"{found} is {cols.type_of(found)}" for found in wrong)
            raise SqlTableError(
                f"table {self.store!r}: review column(s) cannot hold their values: {listed}. Nothing was "
                "sent or written; retype them, or use review_columns= to name others."
            )

    def _add_missing(self) -> list[str]:
        dialect = self._db.dialect
        added: list[str] = []
        for field, name in self.columns.items():
            cols = self._schema.columns(self.store)
            if cols is not None and cols.find(name) is not None:
                continue
            kind = dialect.column_types[_LIKE[field]]
            # Registered before it exists: a concurrent run that sees the column sees it as ours.
            self._schema.register(self.store, [name])
            try:
                self._db.execute_commit(f"ALTER TABLE {self._store_sql} ADD COLUMN {self._q[field]} {kind}")
                added.append(name)
            except Exception as exc:
                again = self._schema.columns(self.store)
                if again is None or again.find(name) is None:  # not another task's concurrent add
                    raise SqlTableError(
                        f"table {self.store!r}: cannot add review column {name!r} ({error_brief(exc)})"
                    ) from exc
        return added

    # -- reading --------------------------------------------------------------------------------
    def iter_pages(
        self, page_size: int, where: str | None = None, where_parameters: Any = None
    ) -> Iterator[list[ReviewRow]]:
        """Rows with a verdict or with feedback sent before, in id order, one keyset page at a time.

        ``where`` filters like the batch's: on the prompts table (or view) when results live apart.
        """
        if not isinstance(page_size, int) or isinstance(page_size, bool) or page_size < 1:
            raise ValueError(f"page_size: expected a positive integer, got {page_size!r}")
        last: Any = None
        for _page in range(10**12):  # bounded: every page advances the id strictly
            with self._db.lock:
                sql, params = self._page_sql(where, where_parameters, last, page_size)
                rows = self._db.query(sql, params)
            if not rows:
                return
            yield [ReviewRow(*row) for row in rows]
            if len(rows) < page_size:
                return
            last = rows[-1][0]

    def _page_sql(self, where: str | None, where_parameters: Any, last: Any, limit: int) -> tuple[str, Any]:
        q, i = self._q, self._q_id
        params = Params(self._db.dialect, where_parameters)
        source = self._layout.from_clause(params, where)
        terms = selection_terms(
            self._layout, self._db.dialect, params, redo="all", where=where, shard=None, q_status=None
        )
        terms.append(f"(t.{q['review_verdict']} IS NOT NULL OR t.{q['feedback_sent']} IS NOT NULL)")
        if last is not None:
            terms.append(f"t.{i} > {params.add(last)}")
        select = [f"t.{i}", f"t.{self._q_message}"]
        select += [f"t.{q[f]}" for f in ("review_verdict", "review_note", "feedback_sent", "feedback_error")]
        sql = f"SELECT {', '.join(select)} FROM {source} WHERE {' AND '.join(terms)}"
        return sql + f" ORDER BY t.{i} LIMIT {params.add(limit)}", params.values

    # -- writing --------------------------------------------------------------------------------
    def record(self, writes: Sequence[ReviewWrite]) -> None:
        """Record ``writes`` in one transaction."""
        if not writes:
            return
        q, dialect = self._q, self._db.dialect
        with self._db.transaction() as cur:
            for w in writes:
                params = Params(dialect, None)
                sets = [f"{q['feedback_error']} = {params.add(w.error)}"]
                if w.sent is not None:
                    sets.append(f"{q['feedback_sent']} = {params.add(w.sent)}")
                    sent_at = dialect.adapt("answered_at", w.sent_at)
                    sets.append(f"{q['feedback_sent_at']} = {params.add(sent_at)}")
                key = params.add(w.row_id)
                cur.execute(
                    f"UPDATE {self._store_sql} SET {', '.join(sets)} WHERE {self._q_id} = {key}",
                    params.values,
                )


_FIRST = "; answer the table with DifyBatchOperator first (its results hold the message ids to rate)"


__all__ = [
    "RATINGS",
    "REVOKED",
    "WRITTEN",
    "ReviewColumns",
    "ReviewRow",
    "ReviewTable",
    "ReviewWrite",
    "clean_note",
    "clean_verdict",
    "signature",
]
