"""Reading the rows to do: keyset pages, each read and claimed for this run in one short
transaction, unchanged rows dropped for ``redo="changed"``.

:class:`airflow_dify.sql.table.SqlTable` builds the page query (it owns the quoted names); this
module walks the pages and decides which rows of each the engine gets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from airflow_dify.outcome import HASH_KEY, STATUS_KEY, TAKEN_OVER_KEY, TakenOver
from airflow_dify.sql.claiming import Claimer
from airflow_dify.sql.claims import ClaimOwner, HeldClaims
from airflow_dify.sql.connection import SqlConnection
from airflow_dify.sql.layout import ResultStore
from airflow_dify.sql.ledger import Ledger
from airflow_dify.sql.paging import PageQuery, keyset_pages

Row = dict[str, Any]


class PageReader:
    """Pages of row dicts of one table, in id order, each row at most once.

    :param current_hash: row dict -> the input_hash it would be sent with now (``redo="changed"``).
    """

    def __init__(
        self,
        db: SqlConnection,
        store: ResultStore,
        claimer: Claimer,
        held: HeldClaims,
        owner: ClaimOwner,
        ledger: Ledger | None,
        id_column: str,
    ) -> None:
        self._db, self._store, self._claimer = db, store, claimer
        self._held, self._owner, self._ledger = held, owner, ledger
        self._id = id_column
        self.current_hash: Callable[[Mapping[str, Any]], str | None] | None = None
        #: Rows redo="changed" read but left alone because their content is unchanged.
        self.skipped_unchanged = 0
        #: Rows passed over because another live run had claimed them.
        self.skipped_claimed = 0

    def pages(
        self, page_query: PageQuery, keys: list[str], redo: str, chunk_size: int, claiming: bool
    ) -> Iterator[list[Row]]:
        """Pages until a short one. With ``claiming``, the query's last two columns are the claim
        columns and every yielded row is claimed for this run; a page may come out empty."""
        if not claiming:
            for page in keyset_pages(self._db, chunk_size, page_query):
                yield self.unchanged_dropped([dict(zip(keys, row, strict=True)) for row in page], redo)
            return
        last: Any = None
        for _page in range(10**12):  # bounded: every page advances the id strictly
            claimed, last_seen, full = self._claim_page(page_query, last, keys, redo, chunk_size)
            if last_seen is None:
                return
            yield claimed
            if not full:
                return
            last = last_seen

    def unchanged_dropped(self, page: list[Row], redo: str) -> list[Row]:
        """With redo="changed": drop rows answered with exactly the content they hold now."""
        if redo != "changed":
            return page
        current = self.current_hash
        assert current is not None
        # Unchanged = answered before and the stored hash equals the current one; two NULLs (a row
        # that could not be sent then and cannot now) also count as unchanged.
        keep = [row for row in page if row[STATUS_KEY] is None or _stripped(row[HASH_KEY]) != current(row)]
        self.skipped_unchanged += len(page) - len(keep)
        return keep

    def _claim_page(
        self, page_query: PageQuery, last: Any, keys: list[str], redo: str, chunk_size: int
    ) -> tuple[list[Row], Any, bool]:
        """Read one page and claim its takeable rows in one short transaction.

        Returns (claimed rows, last id seen or None at the end, whether the page was full).
        """
        sql, params = page_query(last)
        status = self._store.status_column()  # may query the schema: never inside the transaction
        with self._db.transaction() as cur:
            cur.execute(sql, params)
            fetched = cur.fetchall()
            if not fetched:
                return [], None, False
            now = self._held.clock()
            takeable = [r for r in fetched if self._owner.may_take(r[-2], r[-1], now)]
            self.skipped_claimed += len(fetched) - len(takeable)
            page = self.unchanged_dropped([dict(zip(keys, r[:-2], strict=True)) for r in takeable], redo)
            ids = [row[self._id] for row in page]
            got = self._claimer.claim(cur, ids, redo, status, now) if ids else set()
            taken: dict[str, TakenOver] = {}
            if self._ledger is not None and got:
                # Rows another try held and never wrote: it may have called them (same transaction).
                mine = self._owner.token
                lost = [(r[0], r[-2]) for r in takeable if r[-2] not in (None, mine) and r[0] in got]
                taken = self._ledger.take_over(cur, lost) if lost else {}
        self.skipped_claimed += len(page) - len(got)
        claimed = [row for row in page if row[self._id] in got]
        for row in claimed:
            mark = taken.get(str(row[self._id]))
            if mark is not None:
                row[TAKEN_OVER_KEY] = mark
        self._held.took(row[self._id] for row in claimed)
        return claimed, fetched[-1][0], len(fetched) >= chunk_size


def _stripped(value: Any) -> Any:
    # A CHAR column on a generic engine may pad; hex digests never contain spaces.
    return value.strip() if isinstance(value, str) else value


__all__ = ["PageReader"]
