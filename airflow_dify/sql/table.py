"""A SQL table as the batch's source of prompts and sink of results, over any DB-API connection.

Airflow-free: the caller passes a connection factory (the operator passes ``hook.get_conn``) and
the dialect. Rows are read in keyset-paged chunks (``ORDER BY id`` + ``id > last``) so the table is
never held in memory and rows updated meanwhile are neither skipped nor read twice; results are
written back per chunk in one transaction, with retries.

Identifiers are validated and double-quoted at construction; values are always bound. The
``where`` predicate is trusted SQL from the DAG author (never end-user input): it is AND-ed in
parentheses and its ``where_parameters`` are bound in the driver's native style (sqlite ``?`` /
``:name``; psycopg ``%s`` / ``%(name)s``, where a literal ``%`` must be written ``%%``).

Selection: ``redo`` ``pending`` = status IS NULL, ``failed`` = NULL or 'failed', ``all`` = every
row; a table without the status column yet counts every row as pending. ``changed`` = pending rows
plus rows whose current query/inputs hash (computed in Python by ``current_hash``: SQL cannot
render templates) differs from the stored ``input_hash`` (NULL differs from any hash); SQL selects
every row, and unchanged ones are dropped from each page before the engine sees them (counted in
``skipped_unchanged``), so they cost one sha256, no call and no write. ``shard=(index, count)``
keeps rows whose integer id satisfies ``((id % count) + count) % count = index`` (a true modulo,
so negative ids are sharded too); the shards of one ``count`` partition the table exactly.
Non-integer ids cannot be sharded.

Text: on SQLite, TEXT values that are not valid UTF-8 are returned as :class:`InvalidText`
(``.raw`` bytes, ``.message``) instead of aborting the whole page, so the engine can fail just
that row. Connections made by the SQLite factory get our ``text_factory`` for that reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from airflow_dify.outcome import (
    FAILED,
    HASH_KEY,
    REDO_MODES,
    STATUS_KEY,
    ResultColumns,
    RowOutcome,
    check_shard,
)
from airflow_dify.sql.connection import SqlConnection, error_brief
from airflow_dify.sql.dialects import DIALECTS, InvalidText, Params, quote_identifier
from airflow_dify.sql.errors import SqlTableError, SqlWriteError
from airflow_dify.sql.paging import keyset_pages

__all__ = [
    "HASH_KEY",
    "SqlTable",
    "SqlTableError",
    "SqlWriteError",
    "InvalidText",
    "REDO_MODES",
    "STATUS_KEY",
]

log = logging.getLogger(__name__)


class SqlTable:
    """Read rows to do from a table and write each row's outcome back by id.

    :param connect: zero-argument DB-API connection factory (e.g. ``hook.get_conn``). One connection
        is opened lazily, reused, and re-opened after a failure that broke it; SQLite connections
        used from several threads must be made with ``check_same_thread=False``.
    :param table: table name, optionally ``schema.table``; plain identifiers only.
    :param dialect: ``sqlite``, ``postgres`` or ``generic`` (ANSI types, ``LIMIT``, driver paramstyle).
    :param id_column: unique, non-NULL key used for paging and for the write-back ``WHERE``.
    :param read_columns: columns handed to the engine with each row.
    :param columns: names of the result columns written back.
    :param write_retries: extra attempts for a failed chunk write before SqlWriteError.
    :param write_backoff: seconds before the first retry; doubles each retry.
    :param current_hash: row dict -> the input_hash it would be sent with now (e.g.
        ``PromptBuilder.current_hash``); required for ``redo="changed"``.
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
        write_retries: int = 3,
        write_backoff: float = 0.5,
        current_hash: Callable[[Mapping[str, Any]], str | None] | None = None,
    ) -> None:
        if dialect not in DIALECTS:
            raise SqlTableError(f"dialect: {dialect!r} is not one of {list(DIALECTS)}")
        if int(write_retries) < 0 or float(write_backoff) < 0:
            raise SqlTableError("write_retries and write_backoff must be >= 0")
        self.dialect_name = dialect
        self.table = table
        self.id_column = id_column
        self.columns = columns
        self.write_retries = int(write_retries)
        self.write_backoff = float(write_backoff)
        # Quote everything now: a bad name fails at construction, naming the setting.
        self._q_table = quote_identifier(table, "table", qualified=True)
        self._q_id = quote_identifier(id_column, "id_column")
        self._q_result = {f: quote_identifier(c, f"result_columns.{f}") for f, c in columns.items()}
        names = [c for _, c in columns.items()]
        dupes = sorted({c for c in names if names.count(c) > 1} | ({id_column} & set(names)))
        if dupes:
            raise SqlTableError(f"result_columns: names {dupes} are used twice or clash with id_column")
        self._db = SqlConnection(connect, dialect)
        self._bind(read_columns, current_hash)
        #: Rows redo="changed" read but left alone because their content is unchanged.
        self.skipped_unchanged = 0

    def _bind(
        self, read_columns: Sequence[str], current_hash: Callable[[Mapping[str, Any]], str | None] | None
    ) -> None:
        if isinstance(read_columns, str):
            raise SqlTableError("read_columns: expected a sequence of column names, got a string")
        self.read_columns = list(dict.fromkeys(c for c in read_columns if c != self.id_column))
        self._q_read = [quote_identifier(c, f"read_columns[{i}]") for i, c in enumerate(self.read_columns)]
        self.current_hash = current_hash

    def prepare(
        self, read_columns: Sequence[str], current_hash: Callable[[Mapping[str, Any]], str | None]
    ) -> None:
        """Take the batch's prompt columns, check the table, ids and columns, add result columns.

        Everything here runs before the first Dify call, so a table that cannot work costs nothing.
        """
        self._bind(read_columns, current_hash)
        self.validate()
        self.check_unique_ids()
        self.ensure_result_columns()

    def __repr__(self) -> str:
        return f"SqlTable(table={self.table!r}, dialect={self.dialect_name!r}, id_column={self.id_column!r})"

    def close(self) -> None:
        """Close the connection; a later call opens a new one."""
        self._db.discard()

    def __enter__(self) -> SqlTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema -------------------------------------------------------------------------------

    def existing_columns(self) -> list[str]:
        """Column names as the database reports them, via ``SELECT * ... WHERE 1=0`` (portable)."""
        try:
            return self._db.column_names(f"SELECT * FROM {self._q_table} WHERE 1=0")
        except Exception as exc:
            raise SqlTableError(
                f"table: {self.table!r} does not exist or cannot be read ({error_brief(exc)})"
            ) from exc

    def _present(self, names: Sequence[str]) -> Callable[[str], bool]:
        if self._db.dialect.names_case_insensitive:
            lowered = {n.lower() for n in names}
            return lambda c: c.lower() in lowered
        exact = set(names)
        return lambda c: c in exact

    def validate(self) -> None:
        """Raise SqlTableError if the table, the id column or a read column is missing."""
        present = self._present(self.existing_columns())
        missing = [("id_column", self.id_column)] if not present(self.id_column) else []
        missing += [(f"read_columns[{i}]", c) for i, c in enumerate(self.read_columns) if not present(c)]
        if missing:
            listed = ", ".join(f"{setting}={name!r}" for setting, name in missing)
            raise SqlTableError(f"table {self.table!r} has no column(s): {listed}")

    def check_unique_ids(self) -> None:
        """Raise SqlTableError if the id column has NULLs or duplicates.

        Keyset paging would skip rows sharing an id across a page edge, and the write-back
        ``WHERE id = ...`` would give every duplicate the same answer.
        """
        t, i = self._q_table, self._q_id
        nulls = self._db.query(f"SELECT COUNT(*) FROM {t} WHERE {i} IS NULL")[0][0]
        dupes, example = self._db.query(
            f"SELECT COUNT(*), MIN(d.k) FROM (SELECT {i} AS k FROM {t} WHERE {i} IS NOT NULL "
            f"GROUP BY {i} HAVING COUNT(*) > 1) d"
        )[0]
        if nulls or dupes:
            problems = []
            if nulls:
                problems.append(f"{nulls} row(s) with NULL id")
            if dupes:
                problems.append(f"{dupes} id value(s) used by more than one row (e.g. {example!r})")
            raise SqlTableError(
                f"table {self.table!r}: id_column {self.id_column!r} must be unique and non-NULL; found "
                + " and ".join(problems)
            )

    def ensure_result_columns(self) -> list[str]:
        """Add the missing result columns (``ALTER TABLE ... ADD COLUMN``); return their names.

        Safe when several tasks (shards) run it at once: a column another task added in the
        meantime counts as present, not as an error.
        """
        added: list[str] = []
        with self._db.lock:
            present = self._present(self.existing_columns())
            types = self._db.dialect.column_types
            for fieldname, name in self.columns.items():
                if present(name):
                    continue
                sql = f"ALTER TABLE {self._q_table} ADD COLUMN {self._q_result[fieldname]} {types[fieldname]}"
                try:
                    self._db.execute_commit(sql)
                    added.append(name)
                except Exception as exc:
                    if not self._present(self.existing_columns())(name):
                        raise SqlTableError(
                            f"table {self.table!r}: cannot add result column {name!r} ({error_brief(exc)})"
                        ) from exc
        if added:
            log.info("table %s: added result columns %s", self.table, added)
        return added

    # -- reading ------------------------------------------------------------------------------

    def _filter(
        self, params: Params, redo: str, where: str | None, shard: tuple[int, int] | None, has_status: bool
    ) -> list[str]:
        """WHERE terms, adding their parameters to ``params`` in text order."""
        if redo not in REDO_MODES:
            raise ValueError(f"redo: {redo!r} is not one of {list(REDO_MODES)}")
        terms: list[str] = []
        status = self._q_result["status"]
        # Without a status column no row has been processed yet: every row is to do.
        if has_status and redo == "pending":
            terms.append(f"{status} IS NULL")
        elif has_status and redo == "failed":
            terms.append(f"({status} IS NULL OR {status} = {params.add(FAILED)})")
        if where is not None:
            if not isinstance(where, str) or not where.strip():
                raise SqlTableError("where: expected a non-empty SQL predicate string")
            terms.append(f"({where})")
            params.add_user()
        if shard is not None:
            index, count = check_shard(shard)
            # ((id % n) + n) % n is a true modulo for negative ids too (% truncates on both engines).
            m, i = self._db.dialect.modulo, self._q_id
            n1 = params.add(count)  # placeholders are added in the order they appear in the text
            n2 = params.add(count)
            n3 = params.add(count)
            terms.append(f"(({i} {m} {n1}) + {n2}) {m} {n3} = {params.add(index)}")
        return terms

    def _has_status(self) -> bool:
        return self._present(self.existing_columns())(self.columns.status)

    def _has_hash(self) -> bool:
        return self._present(self.existing_columns())(self.columns.input_hash)

    def count_todo(
        self,
        redo: str = "failed",
        where: str | None = None,
        where_parameters: Any = None,
        shard: tuple[int, int] | None = None,
    ) -> int:
        """Number of rows iter_chunks() would yield with the same arguments."""
        with self._db.lock:
            params = Params(self._db.dialect, where_parameters)
            terms = self._filter(params, redo, where, shard, self._has_status())
            sql = f"SELECT COUNT(*) FROM {self._q_table}" + (" WHERE " + " AND ".join(terms) if terms else "")
            return int(self._db.query(sql, params.values)[0][0])

    def iter_chunks(
        self,
        chunk_size: int,
        redo: str = "failed",
        where: str | None = None,
        where_parameters: Any = None,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield lists of at most ``chunk_size`` row dicts, in id order, each row exactly once.

        Each dict holds the id column, the read columns and the row's current status under
        ``"__status__"``. Rows already yielded are never revisited even when their status changes
        (paging is by ``id > last id``), so results may be written between chunks. Read columns
        holding non-UTF-8 text on SQLite come back as :class:`InvalidText`.
        """
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive integer, got {chunk_size!r}")
        if redo == "changed" and self.current_hash is None:
            raise ValueError('redo="changed" needs SqlTable(current_hash=...) to hash each row\'s content')
        with self._db.lock:
            has_status = self._has_status()
            has_hash = redo == "changed" and self._has_hash()
            # Check the arguments now, not at the first next(): bad settings fail at the call.
            self._filter(Params(self._db.dialect, where_parameters), redo, where, shard, has_status)
        pages = self._pages(chunk_size, redo, where, where_parameters, shard, has_status, has_hash)
        return self._changed_only(pages) if redo == "changed" else pages

    def _changed_only(self, pages: Iterator[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
        """Drop rows answered with exactly the content they hold now (pages may come out empty)."""
        current = self.current_hash
        assert current is not None
        for page in pages:
            # Unchanged = answered before and the stored hash equals the current one; two NULLs
            # (a row that could not be sent then and cannot now) also count as unchanged.
            keep = [
                row for row in page if row[STATUS_KEY] is None or _stripped(row[HASH_KEY]) != current(row)
            ]
            self.skipped_unchanged += len(page) - len(keep)
            yield keep

    def _pages(
        self,
        chunk_size: int,
        redo: str,
        where: Any,
        where_parameters: Any,
        shard: Any,
        has_status: bool,
        has_hash: bool = False,
    ) -> Iterator[list[dict[str, Any]]]:
        status_expr = self._q_result["status"] if has_status else "NULL"
        extra = [self._q_result["input_hash"] if has_hash else "NULL"] if redo == "changed" else []
        select = ", ".join([self._q_id, *self._q_read, status_expr, *extra])
        keys = [self.id_column, *self.read_columns, STATUS_KEY, *([HASH_KEY] if extra else [])]

        def page_query(last: Any) -> tuple[str, Any]:
            params = Params(self._db.dialect, where_parameters)
            terms = self._filter(params, redo, where, shard, has_status)
            if last is not None:
                terms.append(f"{self._q_id} > {params.add(last)}")
            sql = (
                f"SELECT {select} FROM {self._q_table}"
                + (" WHERE " + " AND ".join(terms) if terms else "")
                + f" ORDER BY {self._q_id} LIMIT {params.add(chunk_size)}"
            )
            return sql, params.values

        for rows in keyset_pages(self._db, chunk_size, page_query):
            yield [dict(zip(keys, row, strict=True)) for row in rows]

    # -- writing ------------------------------------------------------------------------------

    def write_results(self, outcomes: Sequence[RowOutcome]) -> None:
        """Write one chunk of outcomes in one transaction; retry, then raise SqlWriteError.

        Either every row of the chunk is updated or none is. Ids missing from the table update
        nothing (logged as a warning).
        """
        if not outcomes:
            return
        fields = [f for f, _ in self.columns.items()]
        first_id = outcomes[0].row_id
        attempts = 1 + self.write_retries
        for attempt in range(1, attempts + 1):
            with self._db.lock:
                try:
                    dialect = self._db.dialect
                    params = Params(dialect, None)
                    sets = ", ".join(f"{self._q_result[f]} = {params.add(None)}" for f in fields)
                    sql = f"UPDATE {self._q_table} SET {sets} WHERE {self._q_id} = {params.add(None)}"
                    rows = [
                        [dialect.adapt(f, v) for f, v in o.column_values().items()] + [o.row_id]
                        for o in outcomes
                    ]
                    updated = self._db.executemany_commit(sql, rows)
                except Exception as exc:
                    brief = error_brief(exc)
                    if attempt == attempts:
                        raise SqlWriteError(
                            f"writing {len(outcomes)} result row(s) to table {self.table!r} failed after "
                            f"{attempts} attempt(s) (chunk starting at id {first_id!r}): {brief}"
                        ) from exc
                    delay = self.write_backoff * 2 ** (attempt - 1)
                    log.warning(
                        "table %s: write attempt %d/%d (chunk starting at id %r) failed: %s; retry in %.2fs",
                        self.table,
                        attempt,
                        attempts,
                        first_id,
                        brief,
                        delay,
                    )
                else:
                    if 0 <= updated < len(outcomes):
                        log.warning(
                            "table %s: %d of %d result rows matched no id (chunk starting at id %r)",
                            self.table,
                            len(outcomes) - updated,
                            len(outcomes),
                            first_id,
                        )
                    return
            time.sleep(delay)


def _stripped(value: Any) -> Any:
    # A CHAR column on a generic engine may pad; hex digests never contain spaces.
    return value.strip() if isinstance(value, str) else value
