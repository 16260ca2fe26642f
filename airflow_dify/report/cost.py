"""Daily cost report: usage columns of answered tables -> one summary row per day, table, app, currency.

Airflow-free (any DB-API connection). Each source table is read in keyset-paged chunks, so it is
never held in memory; tokens and counts are summed as ints and prices as ``Decimal`` in Python
(SQLite keeps prices as text and ``SUM`` over floats would round: finance needs exact totals).
Latency percentiles are nearest-rank over the day's rows.

The summary is idempotent: each table's rows for the reported range are deleted and re-inserted
in one transaction, so re-running after more rows were answered (or after a crash) gives the same
table as a single clean run, and readers never see a half-written day.

Grouping by currency keeps money of different currencies apart; rows without a price (failed
calls, workflow apps, which report tokens only) are counted under currency ``''`` with price 0.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from airflow_dify.outcome import ResultColumns
from airflow_dify.report.chart import ProjectionVsActual
from airflow_dify.report.ledger import daily_from_ledger, projections_vs_actual, read_entries
from airflow_dify.report.store import SummaryStore
from airflow_dify.report.usage import NO_CURRENCY, DailyUsage, day_start, utc_date
from airflow_dify.sql.connection import SqlConnection
from airflow_dify.sql.dialects import quote_identifier
from airflow_dify.sql.estimates import DEFAULT_ESTIMATES_TABLE, EstimateStore
from airflow_dify.sql.paging import time_range_pages

log = logging.getLogger("airflow_dify.report")

DEFAULT_SUMMARY_TABLE = "dify_cost_daily"
DEFAULT_APP = "unspecified"
_PAGE = 5000


class CostReport:
    """Builds the daily summary of answered tables on one database.

    :param connect: zero-argument DB-API connection factory (e.g. ``hook.get_conn``).
    :param dialect: ``sqlite``, ``postgres`` or ``generic``.
    :param summary_table: where the daily rows go (created when missing).
    :param columns: the result column names the batches wrote (if renamed there).
    :param id_column: the source tables' unique key, used for keyset paging.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        dialect: str,
        summary_table: str = DEFAULT_SUMMARY_TABLE,
        columns: ResultColumns = ResultColumns(),  # noqa: B008 - frozen dataclass
        id_column: str = "id",
    ) -> None:
        self.db = SqlConnection(connect, dialect)
        self.columns = columns
        self.id_column = id_column
        self.store = SummaryStore(self.db, summary_table)

    def close(self) -> None:
        self.db.discard()

    def __enter__(self) -> CostReport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def aggregate(
        self,
        table: str,
        *,
        app: str = DEFAULT_APP,
        since: dt.date | None = None,
        until: dt.date | None = None,
    ) -> list[DailyUsage]:
        """Daily usage of one table over answered rows with ``since <= day < until`` (UTC)."""
        c = self.columns
        dialect_name = self.db.dialect_name
        q_table = quote_identifier(table, "table", qualified=True, dialect=dialect_name)
        q_id = quote_identifier(self.id_column, "id_column", dialect=dialect_name)
        names = [c.answered_at, c.status, c.prompt_tokens, c.completion_tokens, c.total_tokens]
        names += [c.total_price, c.currency, c.latency_ms]
        q_cols = [quote_identifier(n, f"result column {n!r}", dialect=dialect_name) for n in names]
        q_at = q_cols[0]
        groups: dict[tuple[dt.date, str], DailyUsage] = {}

        pages = time_range_pages(
            self.db,
            _PAGE,
            q_table=q_table,
            columns=[q_id, *q_cols],
            q_at=q_at,
            at_field="answered_at",
            since=None if since is None else day_start(since),
            until=None if until is None else day_start(until),
        )
        for rows in pages:
            for _id, at, status, prompt, completion, total, price, currency, latency in rows:
                day = utc_date(at)
                assert day is not None
                cur = currency or NO_CURRENCY
                group = groups.get((day, cur))
                if group is None:
                    group = groups[(day, cur)] = DailyUsage(day, table, app, cur)
                group.add(status, prompt, completion, total, price, latency)
        return [groups[k].finish() for k in sorted(groups)]

    def run(
        self,
        tables: Mapping[str, str] | Iterable[str],
        *,
        since: dt.date | None = None,
        until: dt.date | None = None,
    ) -> list[DailyUsage]:
        """Summarise every table (``{table: app}``, or names with app ``unspecified``) and store it.

        Each table's summary rows in ``[since, until)`` (all dates when both are None) are replaced
        in one transaction per table.
        """
        pairs = list(tables.items()) if isinstance(tables, Mapping) else [(t, DEFAULT_APP) for t in tables]
        if not pairs:
            raise ValueError("tables: name at least one answered table")
        if since is not None and until is not None and since >= until:
            raise ValueError(f"since ({since}) must be before until ({until})")
        self.store.ensure()
        report: list[DailyUsage] = []
        for table, app in pairs:
            days = self.aggregate(table, app=app or DEFAULT_APP, since=since, until=until)
            self.store.replace(table, days, since=since, until=until)
            log.info("cost report: %s -> %d summary row(s) in %s", table, len(days), self.store.table)
            report.extend(days)
        return report

    def run_ledger(
        self,
        ledger_table: str,
        *,
        apps: Mapping[str, str] | None = None,
        since: dt.date | None = None,
        until: dt.date | None = None,
    ) -> list[DailyUsage]:
        """Summarise the usage ledger (every billed call, replaced answers included) and store it.

        ``apps``: ``{source table: app label}`` to report only those tables under those labels;
        None: every table in the ledger, labelled ``<dag_id>/<app_mode>``.
        """
        if since is not None and until is not None and since >= until:
            raise ValueError(f"since ({since}) must be before until ({until})")
        self.store.ensure()
        by_table = daily_from_ledger(read_entries(self.db, ledger_table, since=since, until=until), apps)
        report: list[DailyUsage] = []
        for table in sorted(set(by_table) | set(apps or ())):
            days = by_table.get(table, [])
            self.store.replace(table, days, since=since, until=until)
            report.extend(days)
        table = self.store.table
        log.info("cost report: ledger %s -> %d summary row(s) in %s", ledger_table, len(report), table)
        return report

    def projections(
        self, ledger_table: str, estimates_table: str = DEFAULT_ESTIMATES_TABLE, *, limit: int = 10
    ) -> list[ProjectionVsActual]:
        """The newest pilots' projections beside what their DAG runs then spent (from the ledger)."""
        estimates = EstimateStore(self.db, estimates_table).load(limit)
        if not estimates:
            return []
        return projections_vs_actual(read_entries(self.db, ledger_table), estimates)

    def load(
        self,
        tables: Iterable[str] | None = None,
        *,
        since: dt.date | None = None,
        until: dt.date | None = None,
    ) -> list[DailyUsage]:
        """Summary rows as stored (for the chart or a check), ordered by date, table, app, currency."""
        return self.store.load(list(tables) if tables is not None else None, since=since, until=until)


__all__ = ["DEFAULT_APP", "DEFAULT_SUMMARY_TABLE", "CostReport", "utc_date"]
