"""A SQL table as the batch's source of prompts and sink of results, over any DB-API connection.

Airflow-free: the caller passes a connection factory (the operator passes ``hook.get_conn``) and
the dialect. Rows are read in keyset-paged chunks (``ORDER BY id`` + ``id > last``) so the table is
never held in memory and rows updated meanwhile are neither skipped nor read twice.

Where results live: in place (default), result columns are added to the prompts table; with
``results_table``, the prompts table or view is only read and results go to a table keyed by its
id (same type, primary key), created when missing. Either way the provider writes only to columns
it created (see :mod:`airflow_dify.sql.schema`).

Claims: each page of rows is claimed for this run before any of its calls start (see
:mod:`airflow_dify.sql.claims`), so two overlapping runs never ask the same row. Writing a result
releases its claim; rows claimed by another live run are skipped and counted.

Identifiers are validated and quoted at construction; values are always bound. The ``where``
predicate is trusted SQL from the DAG author (never end-user input): it is AND-ed in parentheses
and its ``where_parameters`` are bound in the driver's native style (sqlite ``?`` / ``:name``;
psycopg and MySQL ``%s`` / ``%(name)s``, where a literal ``%`` must be written ``%%``).

Selection: ``redo`` ``pending`` = status IS NULL, ``failed`` = NULL or 'failed', ``all`` = every
row, ``changed`` = pending rows plus rows whose current query/inputs hash (computed in Python by
``current_hash``) differs from the stored ``input_hash``; unchanged rows are dropped from each page
before the engine sees them (``skipped_unchanged``). ``shard=(index, count)`` keeps rows whose id
falls in that shard: ``id mod count`` for integer ids, a stable hash of the id's text otherwise.

Text: on SQLite, TEXT values that are not valid UTF-8 come back as :class:`InvalidText` so the
engine can fail just that row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from airflow_dify.outcome import (
    HASH_KEY,
    REDO_MODES,
    STATUS_KEY,
    ResultColumns,
    RowOutcome,
)
from airflow_dify.sql.claiming import Claimer
from airflow_dify.sql.claims import DEFAULT_LEASE_SECONDS, ClaimOwner, HeldClaims
from airflow_dify.sql.connection import SqlConnection
from airflow_dify.sql.dialects import DIALECTS, Dialect, InvalidText, is_integer_type, quote_identifier
from airflow_dify.sql.errors import SqlTableError, SqlWriteError
from airflow_dify.sql.layout import CLAIM_FIELDS, ResultStore, TableNames
from airflow_dify.sql.ledger import Ledger, LedgerContext
from airflow_dify.sql.output_types import OutputColumn
from airflow_dify.sql.reading import PageReader
from airflow_dify.sql.schema import Schema
from airflow_dify.sql.selection import Layout, Selection, check_redo, page_sql
from airflow_dify.sql.writer import ResultWriter

__all__ = [
    "HASH_KEY",
    "REDO_MODES",
    "STATUS_KEY",
    "InvalidText",
    "SqlTable",
    "SqlTableError",
    "SqlWriteError",
]

log = logging.getLogger(__name__)


class SqlTable:
    """Read rows to do from a table (or view) and write each row's outcome back by id.

    :param connect: zero-argument DB-API connection factory (e.g. ``hook.get_conn``). One connection
        is opened lazily, reused, and re-opened after a failure that broke it; SQLite connections
        used from several threads must be made with ``check_same_thread=False``.
    :param table: the prompts table or view, optionally ``schema.table``; plain identifiers only.
    :param dialect: ``sqlite``, ``postgres``, ``mysql`` or ``generic``.
    :param id_column: unique, non-NULL key used for paging and for the write-back ``WHERE``;
        any orderable type (integer, text, UUID).
    :param read_columns: columns handed to the engine with each row (see :meth:`prepare`).
    :param columns: names of the result columns written back.
    :param results_table: write results to this table (created when missing) instead of ``table``.
    :param owner: who claims rows (default: this object alone; the operator names the task try).
    :param claims: claim rows before calling them (off only to measure what claims cost).
    :param lease_seconds: how long a claim lives without renewal.
    :param write_retries: extra attempts for a group write that failed on the connection.
    :param write_backoff: seconds before the first such retry; doubles each retry.
    :param current_hash: row dict -> the input_hash it would be sent with now; for ``redo="changed"``.
    :param ledger_table: append one row per billed call to this table (created when missing;
        see :mod:`airflow_dify.sql.ledger`); None: no ledger.
    :param ledger_context: who is calling (the Airflow task try), stored with every entry.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        table: str,
        *,
        dialect: str,
        id_column: str = "id",
        read_columns: Sequence[str] = ("prompt",),
        columns: ResultColumns = ResultColumns(),  # noqa: B008 - frozen dataclass, safe default
        results_table: str | None = None,
        owner: ClaimOwner | None = None,
        claims: bool = True,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        write_retries: int = 3,
        write_backoff: float = 0.5,
        current_hash: Callable[[Mapping[str, Any]], str | None] | None = None,
        ledger_table: str | None = None,
        ledger_context: LedgerContext | None = None,
    ) -> None:
        if dialect not in DIALECTS:
            raise SqlTableError(f"dialect: {dialect!r} is not one of {list(DIALECTS)}")
        if int(write_retries) < 0 or float(write_backoff) < 0:
            raise SqlTableError("write_retries and write_backoff must be >= 0")
        self.dialect_name = dialect
        self.table = table
        self.results_table = results_table
        self.id_column = id_column
        self.columns = columns
        self.owner = owner or ClaimOwner.anonymous()
        self.claims = claims

        def quote(name: str, setting: str, qualified: bool = False) -> str:
            return quote_identifier(name, setting, qualified=qualified, dialect=dialect)

        # Quote everything now: a bad name fails at construction, naming the setting.
        self._quote = quote
        self._q_table = quote(table, "table", True)
        self._q_store = quote(results_table, "results_table", True) if results_table else self._q_table
        self._q_id = quote(id_column, "id_column")
        self._q_result = {f: quote(c, f"result_columns.{f}") for f, c in columns.items()}
        self._q_claim = {f: quote(f, f) for f in CLAIM_FIELDS}
        names = [c for _, c in columns.items()]
        clash = {id_column, *CLAIM_FIELDS}
        dupes = sorted({c for c in names if names.count(c) > 1} | (clash & set(names)))
        if dupes:
            raise SqlTableError(
                f"result_columns: names {dupes} are used twice or clash with id_column or the claim columns"
            )
        self._db = SqlConnection(connect, dialect)
        self._schema = Schema(self._db, dialect)
        layout = TableNames(
            table,
            results_table,
            id_column,
            columns,
            self._q_table,
            self._q_store,
            self._q_id,
            self._q_result,
            self._q_claim,
        )
        self._store = ResultStore(self._db, self._schema, layout, claims)
        self._held = HeldClaims(lease=float(lease_seconds))
        context = ledger_context or LedgerContext()
        if context.source_table is None:
            context = dataclasses.replace(context, source_table=table)
        self._ledger = Ledger(self._db, ledger_table, context) if ledger_table else None
        self._writer = ResultWriter(
            self._db,
            results_table or table,
            self._q_store,
            self._q_id,
            self._q_result,
            (self._q_claim["claimed_by"], self._q_claim["claimed_until"]) if claims else None,
            self.owner.token,
            retries=int(write_retries),
            backoff=float(write_backoff),
            on_written=self._held.wrote,
            ledger=self._ledger,
        )
        self._integer_ids: bool | None = None
        self._claimer = Claimer(
            self._db,
            self._q_store,
            self._q_id,
            self._q_claim["claimed_by"],
            self._q_claim["claimed_until"],
            self._q_result["answered_at"],
            self.owner,
            self._held,
            dt.datetime.now(dt.timezone.utc),
        )
        self._reader = PageReader(
            self._db, self._store, self._claimer, self._held, self.owner, self._ledger, id_column
        )
        self._bind(read_columns, current_hash)

    def _bind(
        self, read_columns: Sequence[str], current_hash: Callable[[Mapping[str, Any]], str | None] | None
    ) -> None:
        if isinstance(read_columns, str):
            raise SqlTableError("read_columns: expected a sequence of column names, got a string")
        self.read_columns = list(dict.fromkeys(c for c in read_columns if c != self.id_column))
        self._q_read = [self._quote(c, f"read_columns[{i}]") for i, c in enumerate(self.read_columns)]
        self._reader.current_hash = current_hash

    def _bind_outputs(self, outputs: Mapping[str, str | None]) -> None:
        taken = {c.lower() for _, c in self.columns.items()} | {self.id_column.lower(), *CLAIM_FIELDS}
        clash = sorted(c for c in outputs if c.lower() in taken)
        if clash:
            raise SqlTableError(
                f"output_columns: column(s) {clash} are already result columns, the id or claim columns; "
                "map those outputs to other names"
            )
        columns = tuple(
            OutputColumn(name, kind, self._quote(name, f"output_columns[{name!r}]"))
            for name, kind in outputs.items()
        )
        self._store.names = self._store.names.with_outputs(columns)
        self._writer.outputs = {o.field: o for o in columns}

    @property
    def current_hash(self) -> Callable[[Mapping[str, Any]], str | None] | None:
        """Row dict -> the input_hash it would be sent with now; for ``redo="changed"``."""
        return self._reader.current_hash

    @property
    def skipped_unchanged(self) -> int:
        """Rows redo="changed" read but left alone because their content is unchanged."""
        return self._reader.skipped_unchanged

    @property
    def skipped_claimed(self) -> int:
        """Rows passed over because another live run had claimed them."""
        return self._reader.skipped_claimed

    def __repr__(self) -> str:
        where = f", results_table={self.results_table!r}" if self.results_table else ""
        return (
            f"SqlTable(table={self.table!r}{where}, dialect={self.dialect_name!r}, "
            f"id_column={self.id_column!r})"
        )

    @property
    def dialect(self) -> Dialect:
        return self._db.dialect

    def close(self) -> None:
        """Release this run's unwritten claims and close the connection (a later call reopens it)."""
        try:
            self.release()
        finally:
            self._db.discard()

    def __enter__(self) -> SqlTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema -------------------------------------------------------------------------------
    def existing_columns(self) -> list[str]:
        """Column names of the prompts table as the database reports them."""
        return list(self._schema.require(self.table).types)

    def validate(self) -> None:
        """Raise SqlTableError if the table, the id column or a read column is missing."""
        wanted = [("id_column", self.id_column)]
        wanted += [(f"read_columns[{i}]", c) for i, c in enumerate(self.read_columns)]
        cols = self._schema.require(self.table, wanted)
        self._integer_ids = is_integer_type(cols.type_of(self.id_column))

    def check_unique_ids(self) -> None:
        """Raise SqlTableError if the id column has NULLs or duplicates.

        Keyset paging would skip rows sharing an id across a page edge, and the write-back
        ``WHERE id = ...`` would give every duplicate the same answer.
        """
        self._schema.check_unique(self.table, self._q_table, self.id_column, self._q_id)

    def ensure_result_columns(self) -> list[str]:
        """Create what results need (columns in place, or the results table); return names added.

        Refuses, before any call, result-named columns the provider did not create and columns
        whose type cannot hold what is written. Safe when several tasks run it at once.
        """
        return self._store.ensure()

    def prepare(
        self,
        read_columns: Sequence[str],
        current_hash: Callable[[Mapping[str, Any]], str | None],
        outputs: Mapping[str, str | None] | None = None,
    ) -> None:
        """Take the batch's prompt columns, check the table, ids and columns, create result columns.

        :param outputs: typed output columns, name -> JSON type (None: untyped), created and
            written like the result columns.

        Everything here runs before the first Dify call, so a table that cannot work costs nothing.
        """
        self._bind(read_columns, current_hash)
        self._bind_outputs(outputs or {})
        self.validate()
        self.check_unique_ids()
        self.ensure_result_columns()
        if self._ledger is not None:
            self._ledger.ensure()

    def bind_app(self, app_mode: str, workflow_id: str | None) -> None:
        """The app the run calls, recorded with every ledger entry."""
        if self._ledger is not None:
            self._ledger.bind_app(app_mode, workflow_id)

    # -- reading ------------------------------------------------------------------------------
    def _layout(self) -> Layout:
        if self._integer_ids is None:
            cols = self._schema.columns(self.table)
            self._integer_ids = is_integer_type(cols.type_of(self.id_column) if cols else None)
        return Layout(self._q_table, self._q_store, self._q_id, self.results_table is None, self._integer_ids)

    def count_todo(
        self,
        redo: str = "failed",
        where: str | None = None,
        where_parameters: Any = None,
        shard: tuple[int, int] | None = None,
    ) -> int:
        """Number of rows iter_chunks() would consider with the same arguments (claims aside)."""
        check_redo(redo)
        selection = Selection(redo, where, where_parameters, shard)
        with self._db.lock:
            self._store.seed(where, where_parameters)
            status = self._store.status_column()
            sql, params = page_sql(self._layout(), self.dialect, ["COUNT(*)"], selection, status)
            return int(self._db.query(sql, params)[0][0])

    def iter_chunks(
        self,
        chunk_size: int,
        redo: str = "failed",
        where: str | None = None,
        where_parameters: Any = None,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield lists of at most ``chunk_size`` row dicts, in id order, each row at most once.

        Each dict holds the id column, the read columns and the row's current status under
        ``"__status__"`` (and ``"__input_hash__"`` with ``redo="changed"``). With claims on (and the
        claim columns present), every yielded row is claimed for this run. Pages may come out
        empty (every row of a page claimed elsewhere or unchanged).
        """
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive integer, got {chunk_size!r}")
        check_redo(redo)
        if redo == "changed" and self.current_hash is None:
            raise ValueError('redo="changed" needs SqlTable(current_hash=...) to hash each row\'s content')
        selection = Selection(redo, where, where_parameters, shard)
        with self._db.lock:
            self._store.seed(where, where_parameters)
            status = self._store.status_column()
            has_hash = redo == "changed" and self._store.has("input_hash")
            claiming = self.claims and self._store.has_claims()
            # Check the arguments now, not at the first next(): bad settings fail at the call.
            page_sql(self._layout(), self.dialect, ["1"], selection, status, limit=1)
        return self._pages(chunk_size, selection, status, has_hash, claiming)

    def _pages(
        self, chunk_size: int, selection: Selection, status: str | None, has_hash: bool, claiming: bool
    ) -> Iterator[list[dict[str, Any]]]:
        redo = selection.redo
        alias = self._layout().read_alias
        select = [f"t.{self._q_id}", *(f"{alias}.{c}" for c in self._q_read)]
        select.append(f"t.{status}" if status else "NULL")
        if redo == "changed":
            select.append(f"t.{self._q_result['input_hash']}" if has_hash else "NULL")
        keys = [self.id_column, *self.read_columns, STATUS_KEY, *([HASH_KEY] if redo == "changed" else [])]
        if claiming:
            select += [f"t.{self._q_claim['claimed_by']}", f"t.{self._q_claim['claimed_until']}"]

        layout = self._layout()

        def page_query(last: Any) -> tuple[str, Any]:
            return page_sql(layout, self.dialect, select, selection, status, last, chunk_size)

        yield from self._reader.pages(page_query, keys, redo, chunk_size, claiming)

    # -- claims while running -------------------------------------------------------------------
    def heartbeat(self) -> None:
        """Renew the lease of this run's unwritten claims when a third of it has passed."""
        self._claimer.heartbeat()

    def release(self) -> None:
        """Give back claims on rows this run took but never wrote (stopped, budget, killed)."""
        if self.claims:
            self._claimer.release(self.table)

    # -- writing ------------------------------------------------------------------------------
    def write_results(self, outcomes: Sequence[RowOutcome], ledger_only: Sequence[RowOutcome] = ()) -> None:
        """Write one group of outcomes (one transaction; row by row if the group fails on its data).

        Ids missing from the table update nothing (logged as a warning). ``ledger_only``: rows left
        as they are whose calls may have been billed: only their ledger entries are written.
        """
        self._writer.write(outcomes, ledger_only)

    @property
    def unsaved(self) -> list[Any]:
        """Ids whose result could not be stored at all (each logged as an error)."""
        return list(self._writer.unsaved)
