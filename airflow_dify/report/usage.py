"""One row of the daily cost summary, and the arithmetic on it (exact: ints and Decimal)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from airflow_dify.outcome import FAILED, SUCCEEDED, TokenTotals

#: The currency of rows that carry no price (failed calls, workflow apps).
NO_CURRENCY = ""


@dataclass
class DailyUsage(TokenTotals):
    """One summary row: what one table spent on one UTC day, in one currency."""

    date: dt.date
    table_name: str
    app: str
    currency: str
    row_count: int = 0
    succeeded_count: int = 0
    failed_count: int = 0
    total_price: Decimal = Decimal(0)
    p50_latency_ms: int | None = None
    p95_latency_ms: int | None = None
    latencies: list[int] = field(default_factory=list, repr=False)

    @property
    def key(self) -> tuple[dt.date, str, str, str]:
        return self.date, self.table_name, self.app, self.currency

    def add(self, status: Any, prompt: Any, completion: Any, total: Any, price: Any, latency: Any) -> None:
        self.row_count += 1
        if status == SUCCEEDED:
            self.succeeded_count += 1
        elif status == FAILED:
            self.failed_count += 1
        self.add_tokens(prompt, completion, total)
        if price is not None and price != "":
            # str() first: a REAL column on some engine would otherwise add binary float noise.
            self.total_price += price if isinstance(price, Decimal) else Decimal(str(price))
        if latency is not None:
            self.latencies.append(int(latency))

    def finish(self) -> DailyUsage:
        self.p50_latency_ms = percentile(self.latencies, 50)
        self.p95_latency_ms = percentile(self.latencies, 95)
        self.latencies = []
        return self


def utc_date(value: Any) -> dt.date | None:
    """The UTC day of an ``answered_at`` value: ISO text (SQLite) or a datetime (PostgreSQL)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:  # naive values are written as UTC (generic dialect)
            return value.date()
        return value.astimezone(dt.timezone.utc).date()
    if isinstance(value, dt.date):
        return value
    raise ValueError(f"answered_at: cannot read a date from {type(value).__name__}")


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def percentile(values: Sequence[int], pct: float) -> int | None:
    """Nearest-rank percentile (always an observed value); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def totals(rows: Iterable[DailyUsage]) -> dict[str, Any]:
    """Grand totals of summary rows, JSON-safe (prices as decimal strings per currency)."""
    out: dict[str, Any] = {
        "rows": 0,
        "failed": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }
    price: dict[str, Decimal] = {}
    for r in rows:
        out["rows"] += r.row_count
        out["failed"] += r.failed_count
        out["prompt_tokens"] += r.prompt_tokens
        out["completion_tokens"] += r.completion_tokens
        out["total_tokens"] += r.total_tokens
        if r.currency:
            price[r.currency] = price.get(r.currency, Decimal(0)) + r.total_price
    out["total_price_by_currency"] = {k: str(v) for k, v in sorted(price.items())}
    return out


__all__ = ["NO_CURRENCY", "DailyUsage", "day_start", "percentile", "totals", "utc_date"]
