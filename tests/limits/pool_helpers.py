"""Helpers shared by the pool tests: a fake clock and window/overlap counters."""

from __future__ import annotations

from collections.abc import Callable

from airflow_dify.limits.pool import ReservingPool

#: make_pool(clock, key=None, **limits) -> a pool on the parametrised backend
PoolFactory = Callable[..., ReservingPool]


class FakeClock:
    """Deterministic time. ``advancing`` sleeps move it; frozen ones only record the request."""

    def __init__(self, start: float = 1_000_000.0, *, advancing: bool = True) -> None:
        self.now = start
        self.advancing = advancing
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        if self.advancing:
            self.now += seconds


def max_in_window(times: list[float], width: float, weights: list[float] | None = None) -> float:
    """Largest total weight in any half-open window [t, t + width) starting at a grant."""
    pairs = sorted(zip(times, weights or [1.0] * len(times), strict=True))
    best = total = 0.0
    lo = 0
    for hi in range(len(pairs)):
        total += pairs[hi][1]
        while pairs[hi][0] >= pairs[lo][0] + width - 1e-9:
            total -= pairs[lo][1]
            lo += 1
        best = max(best, total)
    return best


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at once (an end at t closes before a start at t)."""
    events = sorted(
        [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1])
    )
    best = cur = 0
    for _, step in events:
        cur += step
        best = max(best, cur)
    return best
