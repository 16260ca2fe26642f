"""Keyset paging: read a table in id order, one bounded page per query, never the whole table."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from airflow_dify.sql.connection import SqlConnection

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
