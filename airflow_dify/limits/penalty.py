"""The shared 429 penalty: a "nobody starts before" timestamp that grows while 429s keep coming.

Dify's 429 ``too_many_requests`` means the app's concurrency cap was hit and carries no
Retry-After, so the whole pool (all threads, all processes on the backend) pauses: first
``PENALTY_FIRST`` seconds, doubling up to ``PENALTY_MAX`` while 429s keep arriving after each
pause ended, back to ``PENALTY_FIRST`` after ``PENALTY_QUIET`` seconds without any 429. 429s that
arrive *during* a pause come from calls started before it and do not escalate it (otherwise eight
in-flight calls failing together would jump straight to the maximum).

The Redis backend mirrors :func:`penalise` in ``gcra.lua``.
"""

from __future__ import annotations

from airflow_dify.limits.gcra import BudgetState

PENALTY_FIRST = 0.5
PENALTY_MAX = 8.0
PENALTY_QUIET = 30.0


def penalise(state: BudgetState, now: float) -> float:
    """Record a 429 at ``now``; return the time until which every acquirer waits."""
    if now < state.penalty_until:
        state.last_throttled = now
        return state.penalty_until
    if state.penalty_step <= 0 or now - state.last_throttled > PENALTY_QUIET:
        step = PENALTY_FIRST
    else:
        step = min(state.penalty_step * 2, PENALTY_MAX)
    state.penalty_step = step
    state.penalty_until = now + step
    state.last_throttled = now
    return state.penalty_until
