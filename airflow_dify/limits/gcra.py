"""The reserving GCRA math, in one place for the memory and SQLite backends.

The Redis backend runs the same steps in Lua (``gcra.lua``); keep the two visibly parallel.

Each budget keeps a TAT (theoretical arrival time). A request of ``n`` units at time ``s`` conforms
when ``max(tat, s) + n*T - tau <= s`` and then moves the TAT to ``max(tat, s) + n*T``. Reserving
means: compute the earliest conforming ``s`` for *every* budget (and the 429 penalty) at once, move
all TATs as if the request arrived at that ``s`` (so a request delayed by one budget cannot bunch up
with later ones on another), and let the caller sleep until ``s`` outside any lock. One store
operation per grant, FIFO, O(1) in the weight.

Burst tolerances (``tau``), i.e. how far a budget may run ahead of its smooth rate:

* requests: one request (``tau = T``): grants are evenly spaced, the first one on an idle budget
  is immediate. Any window of ``w`` seconds holds at most ``w*rpm/60 + 1`` grants.
* tokens: ``max(estimate, tpm/60)`` tokens, i.e. one second's worth, or the request itself if it is
  larger (it then waits until the budget is idle, and pays forward). Any window of ``w`` seconds
  holds at most ``w*tpm/60 + max(largest estimate, tpm/60)`` tokens.
* An estimate above the whole per-minute budget would never fit a minute: it is clamped to ``tpm``
  (so it waits for an idle budget and blocks it for a minute instead of deadlocking); the true
  count is charged at settle time.

Budgets should therefore sit a little under the real quota (90-95 %, see reference/ratelimit.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from airflow_dify.limits.base import PoolError, PoolSettings

#: Requests allowed back to back on an idle budget.
REQUEST_BURST = 1


@dataclass(frozen=True)
class Rates:
    """Emission intervals derived from :class:`PoolSettings` (``None``: that budget is unlimited)."""

    request_interval: float | None
    token_interval: float | None
    token_burst: float
    max_tokens: int | None

    @classmethod
    def from_settings(cls, settings: PoolSettings) -> Rates:
        rpm, tpm, cap = settings.requests_per_minute, settings.tokens_per_minute, settings.max_concurrency
        for name, value in (
            ("requests_per_minute", rpm),
            ("tokens_per_minute", tpm),
            ("max_concurrency", cap),
        ):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise PoolError(f"{name} must be a positive number, got {value!r}")
        if not settings.lease_seconds > 0:
            raise PoolError(f"lease_seconds must be positive, got {settings.lease_seconds!r}")
        return cls(
            request_interval=None if rpm is None else 60.0 / rpm,
            token_interval=None if tpm is None else 60.0 / tpm,
            token_burst=0.0 if tpm is None else tpm / 60.0,
            max_tokens=None if tpm is None else int(tpm),
        )

    def clamp(self, tokens: int) -> int:
        """Tokens actually reserved for an estimate (see the module docstring)."""
        if tokens < 0:
            raise ValueError("tokens must be >= 0")
        if self.max_tokens is None:
            return 0  # nothing to meter: settle then has nothing to correct either
        return min(int(tokens), self.max_tokens)


@dataclass
class BudgetState:
    """What a backend stores per key (a row in SQLite, a hash in Redis)."""

    request_tat: float = 0.0
    token_tat: float = 0.0
    penalty_until: float = 0.0
    penalty_step: float = 0.0
    last_throttled: float = 0.0


def schedule(state: BudgetState, rates: Rates, now: float, tokens: int) -> float:
    """Earliest start ``>= now`` that conforms to every budget and the penalty. Pure."""
    start = max(now, state.penalty_until)
    if rates.request_interval is not None:
        t = rates.request_interval
        start = max(start, state.request_tat + t - REQUEST_BURST * t)
    if rates.token_interval is not None:
        t = rates.token_interval
        tau = max(tokens, rates.token_burst) * t
        start = max(start, state.token_tat + tokens * t - tau)
    return start


def commit(state: BudgetState, rates: Rates, start: float, tokens: int) -> None:
    """Move every TAT as if the request arrived at ``start`` (all budgets together)."""
    if rates.request_interval is not None:
        state.request_tat = max(state.request_tat, start) + rates.request_interval
    if rates.token_interval is not None:
        state.token_tat = max(state.token_tat, start) + tokens * rates.token_interval


def reserve(state: BudgetState, rates: Rates, now: float, tokens: int, max_wait: float) -> float | None:
    """Reserve and return the start time, or ``None`` (state untouched) if it is beyond ``max_wait``."""
    start = schedule(state, rates, now, tokens)
    if start - now > max_wait:
        return None  # don't reserve what the caller will not use
    commit(state, rates, start, tokens)
    return start


def correct_tokens(state: BudgetState, rates: Rates, now: float, delta: int) -> None:
    """Charge ``delta`` = actual - reserved tokens. A refund moves the TAT back, never below now."""
    if rates.token_interval is None or delta == 0:
        return
    if delta > 0:
        state.token_tat = max(state.token_tat, now) + delta * rates.token_interval
    else:
        state.token_tat = max(state.token_tat + delta * rates.token_interval, now)
