"""Daily usage from the usage ledger: what was spent, including answers that were replaced since.

The result columns only hold each row's current answer; the ledger (see
:mod:`airflow_dify.sql.ledger`) holds every billed call. Reading it, the daily summary is what
Dify invoiced, per UTC day, source table, app and currency, and ``maybe_billed`` calls are
counted with the failures (their price is unknown: NULL, never guessed).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from airflow_dify.outcome import FAILED, SUCCEEDED
from airflow_dify.report.chart import ProjectionVsActual
from airflow_dify.report.usage import NO_CURRENCY, DailyUsage, day_start, utc_date
from airflow_dify.sql.connection import SqlConnection
from airflow_dify.sql.dialects import quote_identifier
from airflow_dify.sql.estimates import StoredEstimate
from airflow_dify.sql.paging import time_range_pages

_PAGE = 5000
_READ = (
    "entry_id",
    "recorded_at",
    "dag_id",
    "run_id",
    "task_id",
    "source_table",
    "app_mode",
    "outcome",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "total_price",
    "currency",
    "latency_ms",
)


@dataclass(frozen=True)
class Entry:
    """One ledger row as the report reads it."""

    entry_id: str
    recorded_at: Any
    dag_id: str | None
    run_id: str | None
    task_id: str | None
    source_table: str | None
    app_mode: str | None
    outcome: str
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    total_price: Any
    currency: str | None
    latency_ms: int | None

    @property
    def price(self) -> Decimal | None:
        value = self.total_price
        if value is None or value == "":
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


def read_entries(
    db: SqlConnection, ledger_table: str, *, since: dt.date | None = None, until: dt.date | None = None
) -> Iterator[Entry]:
    """Entries with ``since <= recorded day < until`` (UTC), keyset-paged: never all in memory."""
    q_table = quote_identifier(ledger_table, "ledger_table", qualified=True, dialect=db.dialect.name)
    pages = time_range_pages(
        db,
        _PAGE,
        q_table=q_table,
        columns=_READ,
        q_at="recorded_at",
        at_field="recorded_at",
        since=None if since is None else day_start(since),
        until=None if until is None else day_start(until),
    )
    for rows in pages:
        for row in rows:
            yield Entry(*row)


def daily_from_ledger(
    entries: Iterator[Entry], apps: Mapping[str, str] | None = None
) -> dict[str, list[DailyUsage]]:
    """Source table -> its daily usage rows. The app label is ``apps[table]`` when given and not
    empty, else ``<dag_id>/<app_mode>``, so the chart shows spend per DAG and app. With ``apps``,
    only the tables it names are reported."""
    groups: dict[tuple[str, dt.date, str, str], DailyUsage] = {}
    for e in entries:
        table = e.source_table or "(unknown)"
        if apps is not None and table not in apps:
            continue
        label = (apps or {}).get(table) or f"{e.dag_id or '-'}/{e.app_mode or '-'}"
        day = utc_date(e.recorded_at)
        assert day is not None
        currency = e.currency or NO_CURRENCY
        key = (table, day, label, currency)
        group = groups.get(key)
        if group is None:
            group = groups[key] = DailyUsage(day, table, label, currency)
        status = SUCCEEDED if e.outcome == SUCCEEDED else FAILED
        group.add(status, e.prompt_tokens, e.completion_tokens, e.total_tokens, e.price, e.latency_ms)
    out: dict[str, list[DailyUsage]] = {}
    for key in sorted(groups):
        out.setdefault(key[0], []).append(groups[key].finish())
    return out


def spent(entries: Iterator[Entry], **match: Any) -> dict[str, Decimal]:
    """Exact spend per currency of the entries whose fields equal ``match`` (e.g. dag_id, run_id)."""
    out: dict[str, Decimal] = {}
    for e in entries:
        if all(getattr(e, k) == v for k, v in match.items()) and e.price is not None:
            out[e.currency or NO_CURRENCY] = out.get(e.currency or NO_CURRENCY, Decimal(0)) + e.price
    return out


def projections_vs_actual(
    entries: Iterator[Entry], estimates: Sequence[StoredEstimate]
) -> list[ProjectionVsActual]:
    """Each pilot beside the real spend of its DAG run on the same table, the pilot's own
    (sampled) calls left out: the projection was for the rest."""
    wanted: dict[tuple[Any, Any, Any], StoredEstimate] = {
        (e.dag_id, e.run_id, e.source_table): e for e in estimates
    }
    actual: dict[tuple[Any, Any, Any], Decimal] = dict.fromkeys(wanted, Decimal(0))
    for entry in entries:
        key = (entry.dag_id, entry.run_id, entry.source_table)
        pilot = wanted.get(key)
        if pilot is None or entry.task_id == pilot.task_id or entry.price is None:
            continue
        if (entry.currency or NO_CURRENCY) == pilot.currency:
            actual[key] += entry.price
    return [
        ProjectionVsActual(
            f"{e.dag_id} {e.run_id[:19]}", e.projected_price, e.low, e.high, actual[key], e.currency
        )
        for key, e in wanted.items()
    ]


__all__ = ["Entry", "daily_from_ledger", "projections_vs_actual", "read_entries", "spent"]
