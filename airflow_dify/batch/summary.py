"""Running totals of a batch: the XCom summary, progress lines and the failure-ratio verdict."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from airflow_dify.outcome import SUCCEEDED, RowOutcome, TokenTotals


@dataclass
class BatchSummary(TokenTotals):
    """Totals over the rows processed by one run. Prices stay Decimal until serialised."""

    rows_selected: int = 0
    succeeded: int = 0
    failed: int = 0
    maybe_billed: int = 0
    price_by_currency: dict[str, Decimal] = field(default_factory=dict)
    error_codes: Counter[str] = field(default_factory=Counter)
    stopped: str | None = None  # None | "budget" | "killed"
    #: Which cap stopped a budget-limited run (e.g. "max_total_tokens=2,000 (spent 1,998)").
    stopped_reason: str | None = None
    #: With redo="changed": rows left alone because their content is unchanged since answered.
    skipped_unchanged: int | None = None
    #: Rows passed over because another live run had claimed them.
    skipped_claimed: int = 0
    #: Rows called but left pending: the error was not theirs (see batch/breaker.py).
    left_pending: int = 0
    #: Transactions that wrote results (group commits, see batch/commits.py).
    commits: int = 0
    #: At most this many answered rows a crash could lose (re-asked by the next run):
    #: max_concurrency calls in flight + commit_rows - 1 answers waiting for their commit.
    crash_bound: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed

    @property
    def total_price(self) -> Decimal:
        return sum(self.price_by_currency.values(), Decimal(0))

    @property
    def currency(self) -> str | None:
        if not self.price_by_currency:
            return None
        return next(iter(self.price_by_currency)) if len(self.price_by_currency) == 1 else "MIXED"

    def add(self, outcome: RowOutcome) -> None:
        if outcome.status == SUCCEEDED:
            self.succeeded += 1
        else:
            self.failed += 1
            self.error_codes[outcome.error_code or "error"] += 1
        if outcome.maybe_billed:
            self.maybe_billed += 1
        self.add_tokens(outcome.prompt_tokens, outcome.completion_tokens, outcome.total_tokens)
        if outcome.total_price is not None:
            cur = outcome.currency or "UNKNOWN"
            self.price_by_currency[cur] = self.price_by_currency.get(cur, Decimal(0)) + outcome.total_price

    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def failed_ratio(self) -> float:
        return self.failed / self.processed if self.processed else 0.0

    def top_errors(self, n: int = 3) -> str:
        return ", ".join(f"{code} x{count}" for code, count in self.error_codes.most_common(n))

    def progress_line(self) -> str:
        elapsed = max(self.elapsed(), 1e-9)
        rate = self.processed / elapsed
        remaining = max(self.rows_selected - self.processed, 0)
        eta = f"{remaining / rate:,.0f} s" if rate > 0 else "?"
        pct = 100.0 * self.processed / self.rows_selected if self.rows_selected else 100.0
        price = f"{self.total_price} {self.currency}" if self.currency else "0"
        return (
            f"{self.processed:,}/{self.rows_selected:,} rows ({pct:.1f}%), {rate:,.1f} rows/s, ETA {eta}, "
            f"failed {self.failed:,}, tokens {self.total_tokens:,}, price {price}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary for XCom (prices as decimal strings, never floats)."""
        elapsed = self.elapsed()
        return {
            "rows_selected": self.rows_selected,
            "processed": self.processed,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "maybe_billed": self.maybe_billed,
            **self.tokens(),
            "total_price": str(self.total_price),
            "currency": self.currency,
            "total_price_by_currency": {k: str(v) for k, v in sorted(self.price_by_currency.items())},
            "error_codes": dict(self.error_codes.most_common()),
            "stopped": self.stopped,
            "skipped_claimed": self.skipped_claimed,
            "left_pending": self.left_pending,
            "commits": self.commits,
            "crash_bound": self.crash_bound,
            "elapsed_seconds": round(elapsed, 3),
            "rows_per_second": round(self.processed / elapsed, 3) if elapsed > 0 else None,
            **({"stopped_reason": self.stopped_reason} if self.stopped_reason is not None else {}),
            **({"skipped_unchanged": self.skipped_unchanged} if self.skipped_unchanged is not None else {}),
        }


class ProgressReporter:
    """Logs a progress line at most every ``interval`` seconds (and once at the end)."""

    def __init__(self, log: Any, summary: BatchSummary, interval: float = 5.0) -> None:
        self.log, self.summary, self.interval = log, summary, interval
        self._last = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.log.info("Progress: %s", self.summary.progress_line())

    def final(self) -> None:
        self.log.info("Done: %s", self.summary.progress_line())
