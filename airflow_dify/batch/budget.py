"""Budget cap: stop starting calls when the next one could cross ``max_total_tokens``/``price``.

The projection is spent + (in flight + 1) x the mean cost of the calls finished so far, so the run
stops within one in-flight window of the cap. Rows never started stay pending (NULL status).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

from airflow_dify.outcome import RowOutcome


class BudgetGuard:
    def __init__(self, max_total_tokens: int | None = None, max_total_price: Decimal | None = None) -> None:
        self.max_total_tokens = max_total_tokens
        self.max_total_price = Decimal(str(max_total_price)) if max_total_price is not None else None
        self._lock = threading.Lock()
        self.tokens = 0
        self.price = Decimal(0)
        self.priced_calls = 0
        self.token_calls = 0
        self.in_flight = 0
        self.reason: str | None = None

    @property
    def active(self) -> bool:
        return self.max_total_tokens is not None or self.max_total_price is not None

    def _would_cross(self) -> str | None:
        ahead = self.in_flight + 1
        if self.max_total_tokens is not None:
            mean = self.tokens / self.token_calls if self.token_calls else 0
            if self.tokens >= self.max_total_tokens or self.tokens + ahead * mean > self.max_total_tokens:
                return f"max_total_tokens={self.max_total_tokens:,} (spent {self.tokens:,})"
        if self.max_total_price is not None:
            mean_p = self.price / self.priced_calls if self.priced_calls else Decimal(0)
            if self.price >= self.max_total_price or self.price + ahead * mean_p > self.max_total_price:
                return f"max_total_price={self.max_total_price} (spent {self.price})"
        return None

    def may_start(self, _row: Any = None) -> bool:
        with self._lock:
            reason = self._would_cross()
            if reason is not None:
                self.reason = self.reason or reason
                return False
            self.in_flight += 1
            return True

    def record(self, outcome: RowOutcome) -> None:
        with self._lock:
            self.in_flight -= 1
            if outcome.total_tokens is not None:
                self.tokens += outcome.total_tokens
                self.token_calls += 1
            if outcome.total_price is not None:
                self.price += outcome.total_price
                self.priced_calls += 1

    def wrap(
        self, call_row: Callable[[Mapping[str, Any]], Awaitable[RowOutcome]]
    ) -> Callable[[Mapping[str, Any]], Awaitable[RowOutcome]]:
        """The row caller that reports each finished call's cost to this guard."""

        async def guarded(row: Mapping[str, Any]) -> RowOutcome:
            outcome = await call_row(row)
            self.record(outcome)
            return outcome

        return guarded
