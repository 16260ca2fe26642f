"""Keyset paging: read a table in id order, one bounded page per query, never the whole table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from airflow_dify.sql.connection import SqlConnection
from airflow_dify.sql.params import Params

#: Builds one page's query from the last id seen (None for the first page): (sql, parameters).
#: The id must be the first selected column, the rows ordered by it, at most ``page_size`` of them.
PageQuery = Callable[[Any], tuple[str, Any]]


def keyset_pages(db: SqlConnection, page_size: int, page_query: PageQuery) -> Iterator[list[tuple]]:
    """Yield pages of rows with ``id > last`` until a short page.

    Each page is its own query and transaction, so rows written between pages are neither skipped
    nor read twice, and no snapshot or lock is held while the caller works on a page.
    """
    last: Any = None
    for _page in range(10**12):  # bounded: every page advances the id strictly
        with db.lock:
            sql, params = page_query(last)
            rows = db.query(sql, params)
        if not rows:
            return
        yield rows
        if len(rows) < page_size:
            return
        last = rows[-1][0]


def time_range_pages(
    db: SqlConnection,
    page_size: int,
    *,
    q_table: str,
    columns: Sequence[str],
    q_at: str,
    at_field: str,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> Iterator[list[tuple]]:
    """Pages of ``columns`` (quoted; the first is the key) of rows with ``since <= at < until``.

    ``q_at`` is the quoted time column; ``at_field`` the result field whose type the bounds are
    adapted to (SQLite keeps times as text). Rows without a time are never selected.
    """
    dialect = db.dialect

    def page_query(last: Any) -> tuple[str, Any]:
        params = Params(dialect, None)
        terms = [f"{q_at} IS NOT NULL"]
        if since is not None:
            terms.append(f"{q_at} >= {params.add(dialect.adapt(at_field, since))}")
        if until is not None:
            terms.append(f"{q_at} < {params.add(dialect.adapt(at_field, until))}")
        if last is not None:
            terms.append(f"{columns[0]} > {params.add(last)}")
        sql = (
            f"SELECT {', '.join(columns)} FROM {q_table} WHERE {' AND '.join(terms)} "
            f"ORDER BY {columns[0]} LIMIT {params.add(page_size)}"
        )
        return sql, params.values

    return keyset_pages(db, page_size, page_query)
